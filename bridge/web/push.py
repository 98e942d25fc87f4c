"""``POST /v1/publish``: events pushed by services that cannot send mail or reach the bus
(the talk's "POST through HTTPS"), each request vouched for by a bearer token.

The request body is ``{"topic": …, "msg": {…}}``. The event is journaled, so every sink
publishes it, with ``origin.auth`` saying which token vouched for it; an ``Idempotency-Key``
header becomes its dedup key, so a retried request adds nothing.

Replies: 201 journaled, 200 a repeat of a journaled one, 400 not JSON, 401 no or unknown
token, 403 a topic outside the token's prefixes, 413 too large, 422 not an event, 429 over
the token's rate (``Retry-After`` says when to try again), 503 journal unavailable.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.config import Config
from bridge.errors import JournalError
from bridge.events import Event
from bridge.journal import Journal
from bridge.pipeline.bodies import EventRefused, normalised
from bridge.pipeline.schemas import SchemaBreach, Schemas, installed
from bridge.web.tokens import Grant, RateLimit, Tokens

log = logging.getLogger(__name__)
MAX_IDEMPOTENCY_KEY = 200


class Refused(Exception):
    """A request that publishes nothing: its HTTP status and why."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = dict(headers or {})


class Publisher:
    """The endpoint, with the configured tokens and each token's rate."""

    def __init__(self, config: Config, run: Callable[[Callable[[Journal], Any]], Awaitable[Any]]):
        self.config = config
        self.tokens = Tokens(config.web.tokens)
        self.rate = RateLimit(config.web.rate_limit, config.web.rate_burst)
        self._run = run

    async def endpoint(self, request: Request) -> Response:
        try:
            grant = self._authorise(request)
            body = await self._body(request)
            event = self._event(grant, body, request.headers.get("idempotency-key"))
            result = await self._run(lambda j: j.append([event], source=f"http:{grant.name}"))
        except Refused as e:
            reply = {"error": str(e), "status": e.status}
            return JSONResponse(reply, e.status, headers=e.headers)
        except JournalError as e:
            return JSONResponse({"error": str(e), "status": 503}, 503)
        topic = self.config.naming.topic(event.topic)
        if result.conflicts:
            (conflict,) = result.conflicts
            return JSONResponse(
                {
                    "error": "this Idempotency-Key was used for another event"
                    f" ({conflict.stored_msg_id}); its fields {', '.join(conflict.fields)} differ",
                    "status": 409,
                },
                409,
            )
        if not result.seq_ids:
            log.info("web: %s repeated an event already journaled (%s)", grant.name, topic)
            return JSONResponse({"duplicate": True, "topic": topic}, 200)
        seq_id = result.seq_ids[0]
        log.info("web: %s published %s as seq_id %d", grant.name, topic, seq_id)
        return JSONResponse({"duplicate": False, "topic": topic, "seq_id": seq_id}, 201)

    def _authorise(self, request: Request) -> Grant:
        challenge = {"WWW-Authenticate": 'Bearer realm="bridge"'}
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise Refused(401, "send Authorization: Bearer <token>", challenge)
        grant = self.tokens.grant(presented.strip())
        if grant is None:
            raise Refused(401, "unknown token", challenge)
        wait = self.rate.take(grant.name)
        if wait:
            raise Refused(
                429,
                f"token {grant.name!r} is over its rate of {self.config.web.rate_limit:g}"
                " events a minute",
                {"Retry-After": str(max(1, round(wait)))},
            )
        return grant

    async def _body(self, request: Request) -> Any:
        limit = self.config.web.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise Refused(413, f"the body is {declared} bytes, over the limit of {limit}")
        data = bytearray()
        async for chunk in request.stream():  # a body sent without a length is counted
            data += chunk
            if len(data) > limit:
                raise Refused(413, f"the body is over the limit of {limit} bytes")
        try:
            body = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise Refused(400, f"the body is not JSON: {e}") from None
        except (ValueError, RecursionError) as e:  # an integer of thousands of digits, nesting
            raise Refused(400, f"the body is JSON no event is made of: {e}") from None
        if nesting(body) > MAX_NESTING:
            raise Refused(400, f"the body nests deeper than {MAX_NESTING} levels")
        return body

    def _event(self, grant: Grant, body: Any, idempotency_key: str | None) -> Event:
        if not isinstance(body, dict) or not isinstance(body.get("topic"), str):
            raise Refused(422, 'the body must be {"topic": "…", "msg": {…}}')
        msg = body.get("msg")
        if not isinstance(msg, dict):
            raise Refused(422, '"msg" must be a JSON object')
        if not isinstance(msg.get("summary"), str) or not msg["summary"].strip():
            raise Refused(422, '"msg" needs a "summary": one line saying what happened')
        event_topic = self.config.naming.event_topic(body["topic"].strip())
        if not grant.allows(event_topic):
            allowed = ", ".join(grant.topics)
            raise Refused(
                403, f"token {grant.name!r} may publish under {allowed}, not {event_topic}"
            )
        if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
            raise Refused(400, f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
        msg = {**msg, "origin": pushed_origin(grant, msg.get("origin"))}
        self._check_schema(event_topic, msg)
        try:
            return normalised(
                Event(
                    event_topic,
                    msg,
                    dedup_key=f"push:{grant.name}:{idempotency_key or uuid.uuid4()}",
                    packages=_strings(msg.get("packages")),
                    bugs=_bugs(msg),
                    people=_people(msg.get("agent")),
                )
            )
        except EventRefused as e:
            raise Refused(422, str(e)) from None

    def _check_schema(self, event_topic: str, msg: dict[str, Any]) -> None:
        """A topic a parser declares keeps its contract, whoever publishes on it; the body
        gets the topic's ``schema_version`` as a parser's does."""
        version = self._schemas.version(event_topic)
        if version is not None:
            msg.setdefault("schema_version", version)
        try:
            self._schemas.check(event_topic, msg)
        except SchemaBreach as e:
            raise Refused(422, str(e)) from None

    @cached_property
    def _schemas(self) -> Schemas:
        """The JSON Schema of each topic an installed parser declares, compiled once."""
        return installed()


def pushed_origin(grant: Grant, claimed: Any) -> dict[str, Any]:
    """The ``origin`` of a pushed event: what the body claims, its ``auth`` replaced by the
    token that vouches for it."""
    origin = dict(claimed) if isinstance(claimed, dict) else {}
    origin.setdefault("message_id", None)
    origin.setdefault("date", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    origin.setdefault("list", None)
    origin["auth"] = {
        "verdict": "pass",
        "method": "token",
        "domain": None,
        "selector": grant.name,
        "reason": f"pushed over HTTP with the token {grant.name!r}, which may publish under"
        f" {', '.join(grant.topics)}",
    }
    return origin


MAX_NESTING = 64


def nesting(value: Any) -> int:
    """How deep JSON *value* nests (a scalar is 0), counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        )
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def _bugs(msg: Mapping[str, Any]) -> tuple[int, ...]:
    values = [msg.get("bug"), *(msg.get("bugs") if isinstance(msg.get("bugs"), list) else [])]
    return tuple(
        v for v in values if isinstance(v, int) and not isinstance(v, bool) and 0 < v < 2**31
    )


def _people(agent: Any) -> tuple[str, ...]:
    if not isinstance(agent, dict):
        return ()
    return tuple(v for v in (agent.get("name"), agent.get("email")) if isinstance(v, str) and v)

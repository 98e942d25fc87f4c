"""The replay endpoint: fedmsg's REQ/REP replay protocol, answered from the journal.

A request is one JSON object with any of ``seq_id``, ``seq_ids``, ``seq_id_range``
([a, b], inclusive), ``msg_id``, ``msg_ids`` and ``time`` ([t0, t1], epoch seconds); the
answer holds every envelope any of them selects, one frame each in ``seq_id`` order, the same
bytes as published. Two extensions page through history for consumers catching up:
``seq_id_after`` (the next envelopes after a seq_id) and ``after_time`` (the first envelopes
at or after a time); they return at most the configured maximum without complaint. Anything
else, or an answer larger than the maximum, is one frame ``error: '<text>'``.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import zmq

from bridge.errors import ReplayError
from bridge.journal import Journal, ReplaySelection, Row
from bridge.runner import run_loop
from bridge.sinks.signing import EnvelopeSigner

log = logging.getLogger(__name__)

SELECTORS = ("seq_id", "seq_ids", "seq_id_range", "msg_id", "msg_ids", "time")
PAGERS = ("seq_id_after", "after_time")


def selection_of(data: Any) -> ReplaySelection:
    """A replay request (decoded JSON) as a selection, or :class:`ReplayError` saying why."""
    if not isinstance(data, dict):
        raise ReplayError("the query must be a JSON object")
    unknown = sorted(set(data) - set(SELECTORS) - set(PAGERS))
    if unknown:
        valid = ", ".join(SELECTORS + PAGERS)
        raise ReplayError(f"unknown query key {unknown[0]!r}; valid keys: {valid}")
    if not data:
        raise ReplayError(f"empty query; give one of {', '.join(SELECTORS)}")
    paging = [k for k in PAGERS if k in data]
    if paging and len(data) > 1:
        raise ReplayError(f"{paging[0]!r} cannot be combined with other keys")
    seq_ids = _int_list("seq_ids", data["seq_ids"]) if "seq_ids" in data else []
    if "seq_id" in data:
        seq_ids += _int_list("seq_id", [data["seq_id"]])
    msg_ids = _str_list("msg_ids", data["msg_ids"]) if "msg_ids" in data else []
    if "msg_id" in data:
        msg_ids += _str_list("msg_id", [data["msg_id"]])
    return ReplaySelection(
        seq_ids=tuple(seq_ids),
        seq_id_ranges=_pairs(data, "seq_id_range", int),
        msg_ids=tuple(msg_ids),
        times=_pairs(data, "time", (int, float)),
        seq_id_after=_number(data, "seq_id_after", int, "an integer"),
        after_time=_number(data, "after_time", (int, float), "a number of epoch seconds"),
    )


def run(journal: Journal, selection: ReplaySelection, limit: int) -> list[Row]:
    """The rows a selection answers with; a selection (not paging) over *limit* is an error."""
    if selection.paging:
        return journal.replay(selection, limit)
    rows = journal.replay(selection, limit + 1)
    if len(rows) > limit:
        total = journal.replay_count(selection)
        raise ReplayError(
            f"the query matches {total} messages, more than the limit of {limit};"
            " ask for smaller ranges"
        )
    return rows


def _int_list(name: str, value: Any) -> list[int]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise ReplayError(f"{name} must be a non-empty list of integers")
    return value


def _str_list(name: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ReplayError(f"{name} must be a non-empty list of strings")
    return value


def _pairs(data: dict[str, Any], name: str, kind: Any) -> tuple[tuple[Any, Any], ...]:
    if name not in data:
        return ()
    value = data[name]
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value)
    ):
        raise ReplayError(f"{name} must be a pair [low, high]")
    low, high = value
    if low > high:
        raise ReplayError(f"{name} is reversed: {low} > {high}")
    return ((low, high),)


def _number(data: dict[str, Any], name: str, kind: Any, what: str) -> Any:
    value = data.get(name)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise ReplayError(f"{name} must be {what}")
    return value


def answer(
    journal: Journal, request: bytes, limit: int, signer: EnvelopeSigner | None = None
) -> list[bytes]:
    """The frames that answer one request (signed envelopes when *signer* is given)."""
    try:
        try:
            data = json.loads(request)
        except (ValueError, UnicodeDecodeError) as e:
            raise ReplayError("the request is not valid JSON") from e
        rows = run(journal, selection_of(data), limit)
        if not rows:
            raise ReplayError("no message matches the query")
    except ReplayError as e:
        return [_error(str(e))]
    sign = signer.sign if signer else (lambda envelope: envelope)
    return [sign(row.envelope).encode("ascii") for row in rows]


def _error(text: str) -> bytes:
    return f"error: '{text}'".encode()


class ReplayServer:
    """Answers replay queries. Call :meth:`run` in its own thread.

    The socket is a ROUTER, which REQ clients (fedmsg's included) talk to as to a REP: it
    has no send/receive state to wedge, so a malformed, oversized or abandoned request
    costs only its own answer. Requests over *max_request_bytes* are dropped by ZeroMQ.
    """

    def __init__(
        self,
        journal: Journal,
        endpoint: str,
        *,
        context: zmq.Context,
        limit: int,
        max_request_bytes: int = 1 << 20,
        signer: EnvelopeSigner | None = None,
    ):
        self.journal = journal
        self.limit = limit
        self.signer = signer
        self._socket = context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.MAXMSGSIZE, max_request_bytes)
        self._socket.bind(endpoint)

    def run(self, stop: threading.Event) -> None:
        log.info("replay endpoint on %s", self._socket.getsockopt_string(zmq.LAST_ENDPOINT))
        run_loop("replay", self._serve_waiting, stop, idle=0.0)

    def _serve_waiting(self) -> bool:
        if self._socket.poll(200):
            self.serve_one()
            return True
        return False

    def close(self) -> None:
        self._socket.close()

    def serve_one(self) -> None:
        """Receive one request and answer it (a peer that left is simply not answered)."""
        frames = self._socket.recv_multipart()
        route, body = _split_route(frames)
        if not route:
            return  # nothing to answer to
        if len(body) != 1:
            reply = [_error(f"a request is one frame holding a JSON object, not {len(body)}")]
        else:
            reply = self._answer(body[0])
        try:
            self._socket.send_multipart(route + reply, flags=zmq.NOBLOCK)
        except zmq.ZMQError as e:  # the client left, or is too slow to take its answer
            log.info("replay answer dropped: %s", e)

    def _answer(self, request: bytes) -> list[bytes]:
        try:
            return answer(self.journal, request, self.limit, self.signer)
        except Exception as e:  # every request is answered, whatever went wrong
            log.exception("replay query failed")
            return [_error(f"internal error: {type(e).__name__}")]


def _split_route(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """ROUTER frames as (routing envelope up to the empty delimiter, request frames)."""
    if b"" in frames:
        cut = frames.index(b"") + 1
        return frames[:cut], frames[cut:]
    return frames[:1], frames[1:]  # a DEALER that sent no delimiter

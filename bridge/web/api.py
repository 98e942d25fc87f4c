"""The history API, as datagrepper answers it: ``/raw`` (pages of messages), ``/id`` (one
message) and ``/v1/stats`` (counts by topic and period). Each message carries the
``headers`` fedora-messaging-era datagrepper returns (those the AMQP sink sends), and a
browser gets the messages as HTML cards (:mod:`bridge.web.cards`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from bridge.events import Envelope, Naming
from bridge.journal import PERIODS, Journal
from bridge.journal.query import BadRequest, raw_message, read_meta, read_query
from bridge.sinks.amqp import amqp_headers, builtin_topics
from bridge.web import cards
from bridge.web.answers import error, reply
from bridge.web.pool import Journals


class HistoryApi:
    """The routes that answer from the journal's history."""

    def __init__(self, journals: Journals, naming: Naming):
        self.journals = journals
        self.naming = naming

    @cached_property
    def known_topics(self) -> frozenset[str]:
        """The topics the schema package has classes for, as the AMQP sink names them."""
        return builtin_topics()

    def _message(self, envelope_json: str, meta: list[str]) -> dict[str, Any]:
        """One of ``raw_messages``: the envelope, its ``meta``, and the AMQP ``headers`` the
        sink sends with it (``sent-at`` being its timestamp, as datanommer gives it for a
        message without)."""
        data = json.loads(envelope_json)
        envelope = Envelope.from_dict(data)
        message = raw_message(data, meta)
        when = datetime.fromtimestamp(envelope.timestamp, UTC)
        topic = self.naming.event_topic(envelope.topic)
        message["headers"] = amqp_headers(envelope, topic, self.known_topics, when)
        return message

    async def raw(self, request: Request) -> Response:
        try:
            query = read_query(request.query_params)
        except BadRequest as e:
            return error(e.status, str(e))
        criteria = query.criteria()

        def read(journal: Journal) -> tuple[int, list[dict[str, Any]]]:
            total = journal.count(criteria)
            found = journal.find_rows(
                criteria,
                newest_first=query.order == "desc",
                limit=query.rows_per_page,
                offset=query.offset,
            )
            return total, [self._message(row.envelope, query.meta) for row in found]

        total, messages = await self.journals.run(read)
        pages = -(-total // query.rows_per_page)
        if not query.callback and cards.prefers_html(request.headers.get("accept", "")):
            pager = cards.raw_pager(list(request.query_params.multi_items()), query.page, pages)
            return HTMLResponse(
                cards.cards_page(
                    messages,
                    size=query.size,
                    chrome=query.chrome,
                    naming=self.naming,
                    title=f"{total} messages, page {query.page} of {max(pages, 1)}",
                    pager=pager,
                )
            )
        data = {
            "arguments": query.arguments(),
            "count": len(messages),
            "pages": pages,
            "raw_messages": messages,
            "total": total,
        }
        return reply(data, query)

    async def by_id(self, request: Request) -> Response:
        msg_id = request.query_params.get("id")
        if not msg_id:
            return error(400, "give the message: /id?id=MSG_ID")
        try:
            meta = read_meta(request.query_params)
            shown = read_query(request.query_params)  # size and chrome, for a browser
        except BadRequest as e:
            return error(e.status, str(e))
        envelope = await self.journals.run(lambda j: j.by_msg_id(msg_id))
        if envelope is None:
            return error(404, f"no message {msg_id!r}")
        message = self._message(envelope.to_json(), meta)
        if cards.prefers_html(request.headers.get("accept", "")):
            page = cards.cards_page(
                [message],
                size=shown.size,
                chrome=shown.chrome,
                naming=self.naming,
                title=f"message {msg_id}",
            )
            return HTMLResponse(page)
        return JSONResponse(message)

    async def stats(self, request: Request) -> Response:
        try:
            query = read_query(request.query_params)
        except BadRequest as e:
            return error(e.status, str(e))
        period = request.query_params.get("by", "day")
        if period not in PERIODS:
            return error(400, f"by must be one of {', '.join(PERIODS)}, not {period!r}")
        criteria = query.criteria()
        table = await self.journals.run(lambda j: j.stats(criteria, period))
        totals: dict[str, int] = {}
        for counts in table.values():
            for topic, count in counts.items():
                totals[topic] = totals.get(topic, 0) + count
        arguments = {k: v for k, v in query.arguments().items() if k not in ("page", "order")}
        data = {
            "arguments": {**arguments, "by": period},
            "periods": table,
            "topics": dict(sorted(totals.items())),
            "total": sum(totals.values()),
        }
        return reply(data, query)

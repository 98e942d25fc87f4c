"""The history API, as datagrepper answers it: ``/raw`` (pages of messages), ``/id`` (one
message) and ``/v1/stats`` (counts by topic and period)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.journal import PERIODS, Journal
from bridge.journal.query import BadRequest, raw_message, read_meta, read_query
from bridge.web.answers import error, reply
from bridge.web.pool import Journals


class HistoryApi:
    """The routes that answer from the journal's history."""

    def __init__(self, journals: Journals):
        self.journals = journals

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
            return total, [raw_message(row.envelope, query.meta) for row in found]

        total, messages = await self.journals.run(read)
        data = {
            "arguments": query.arguments(),
            "count": len(messages),
            "pages": -(-total // query.rows_per_page),
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
        except BadRequest as e:
            return error(e.status, str(e))
        envelope = await self.journals.run(lambda j: j.by_msg_id(msg_id))
        if envelope is None:
            return error(404, f"no message {msg_id!r}")
        return JSONResponse(raw_message(envelope.to_json(), meta))

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

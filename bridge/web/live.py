"""The live page (``/``, rendered by the server) and its Server-Sent Events
(``/v1/stream``, resumable with ``Last-Event-ID``)."""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse

from bridge.config import Config
from bridge.journal import Journal
from bridge.journal.query import BadRequest, read_query
from bridge.web import page
from bridge.web.answers import error
from bridge.web.pool import Journals
from bridge.web.streams import STREAM_BATCH, JournalWatch, StreamSlots, TooManyStreams, events

_SEQ_ID = re.compile(r"[0-9]{1,18}")  # ASCII digits only: str.isdigit() also takes "²"


class LivePage:
    """The page and its stream, sharing one journal watcher for the whole process."""

    def __init__(self, config: Config, journals: Journals, poll_interval: float):
        self.config = config
        self.journals = journals
        self.watch = JournalWatch(journals.run, poll_interval)
        self.slots = StreamSlots(config.web.max_streams, config.web.max_streams_per_client)

    async def home(self, request: Request) -> Response:
        try:
            query = read_query(request.query_params)
            before = seq_id_argument(request.query_params.get("before"), "before")
        except BadRequest as e:  # a page for a browser, JSON for any other client
            if "text/html" in request.headers.get("accept", ""):
                return HTMLResponse(page.error_page(str(e)), e.status)
            return error(e.status, str(e))
        criteria = query.criteria()
        # keyset paging: the page before a seq_id is the same whatever arrives meanwhile
        shown = query.criteria(upto=before - 1) if before is not None else criteria
        limit = self.config.web.page_events
        start, now = page.chart_window(time.time())

        def read(journal: Journal) -> page.View:
            rows = journal.find_rows(shown, newest_first=True, limit=limit + 1)
            activity = journal.stats(replace(criteria, since=start), "day")
            return page.View(
                rows=rows[:limit],
                last_seq_id=journal.last_seq_id(),
                total=journal.count(criteria),
                activity=activity,
                chart_end=now,
                before=before,
                older=len(rows) > limit,
            )

        view = await self.journals.run(read)
        return HTMLResponse(page.render(view, request.query_params, self.config.naming))

    async def stream(self, request: Request) -> Response:
        try:
            query = read_query(request.query_params)
            start = stream_start(request)
        except BadRequest as e:
            return error(e.status, str(e))
        newest = await self.watch.newest()
        if start is None:
            start = newest
        client = request.client.host if request.client else "?"
        try:
            self.slots.take(client)
        except TooManyStreams as e:
            return error(503, str(e))

        async def search(after: int, upto: int) -> list[Any]:
            criteria = query.criteria(after=after, upto=upto)
            return await self.journals.run(
                lambda j: j.find_rows(criteria, newest_first=False, limit=STREAM_BATCH)
            )

        as_html = request.query_params.get("format") == "html"  # the page's own stream
        naming = self.config.naming
        body = events(
            search,
            self.watch,
            start,
            request.is_disconnected,
            lambda: self.slots.give_back(client),
            render=(lambda row: page.item_or_note(json.loads(row.envelope), naming))
            if as_html
            else None,
        )
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(body, media_type="text/event-stream", headers=headers)


def stream_start(request: Request) -> int | None:
    """Where a stream starts: after the ``Last-Event-ID`` a reconnecting browser sends,
    else after ``?after=``, else (None) after the newest row."""
    for value in (request.headers.get("last-event-id"), request.query_params.get("after")):
        if value:
            return seq_id_argument(value, "an event id")
    return None


def seq_id_argument(value: str | None, name: str) -> int | None:
    """A ``seq_id`` a request names (None when it names none)."""
    if not value:
        return None
    if not _SEQ_ID.fullmatch(value):
        raise BadRequest(f"{name} is a seq_id (up to 18 digits), not {value[:40]!r}")
    return int(value)

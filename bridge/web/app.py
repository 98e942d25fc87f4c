"""``bridge web``: the journal over HTTP, as one ASGI application.

- ``/raw``, ``/id``: datagrepper's history API (:mod:`bridge.web.history`);
- ``/v1/stats``: counts by topic and period, ``/v1/stream``: Server-Sent Events;
- ``/``: the live page; ``/static/…`` its assets, all served from here;
- ``POST /v1/publish``: events pushed by services holding a token (:mod:`bridge.web.push`);
- ``/metrics`` for Prometheus, ``/healthz`` for load balancers and supervisors.

Journal reads are blocking calls: they run in Starlette's thread pool, each thread with
its own journal connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from bridge.config import Config
from bridge.errors import JournalError
from bridge.journal import PERIODS, Journal, open_journal
from bridge.systemd import notify
from bridge.web import page
from bridge.web.history import BadRequest, Query, raw_message, read_meta, read_query
from bridge.web.metrics import metrics_response
from bridge.web.push import Publisher
from bridge.web.streams import STREAM_BATCH, JournalWatch, StreamSlots, TooManyStreams, events

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
READER_THREADS = 8
HEALTH_TIMEOUT = 5.0  # a supervisor asking /healthz gets an answer within this
FRESHNESS_CHECK = 0.5  # seconds between two looks at whether a thread's journal was replaced
_SEQ_ID = re.compile(r"[0-9]{1,18}")  # ASCII digits only: str.isdigit() also takes "²"
T = TypeVar("T")


class Journals:
    """One journal connection per thread of the pool, all closed with the application.

    Every :data:`FRESHNESS_CHECK` seconds a read first asks whether the journal it reads is
    still the one on disk (:meth:`Journal.replaced`). When it is not, every connection is
    closed at once, after the reads under way, and each thread opens the journal again: a
    SQLite file's connections in one process share their view of its log, so closing only
    some of them would leave the new ones as blind as the old.
    """

    def __init__(self, config: Config):
        self._config = config
        self._local = threading.local()
        self._opened: list[Journal] = []
        self._changed = threading.Condition()
        self._busy = 0  # reads under way
        self._reopening = False
        self._generation = 0  # bumped when every connection was closed to be opened again
        self._checked = 0.0
        self.stale: str | None = None  # why the last check found the journal replaced

    def _enter(self) -> Journal:
        with self._changed:
            self._changed.wait_for(lambda: not self._reopening)
            now = time.monotonic()
            if self._opened and now - self._checked >= FRESHNESS_CHECK:
                self._checked = now
                self.stale = self._opened[0].replaced()
                if self.stale:
                    log.info("web: %s; opening the journal again", self.stale)
                    self._reopening = True  # new reads wait; those under way finish
                    self._changed.wait_for(lambda: self._busy == 0)
                    self._close_all()
                    self._reopening = False
                    self._changed.notify_all()
            self._busy += 1
            journal = getattr(self._local, "journal", None)
            if journal is not None and self._local.generation == self._generation:
                return journal
        try:
            journal = open_journal(self._config)
        except BaseException:
            self._exit()
            raise
        with self._changed:
            self._local.journal, self._local.generation = journal, self._generation
            self._opened.append(journal)
        return journal

    def _exit(self) -> None:
        with self._changed:
            self._busy -= 1
            self._changed.notify_all()

    def _close_all(self) -> None:
        for journal in self._opened:
            journal.close()
        self._opened.clear()
        self._generation += 1

    async def run(self, read: Callable[[Journal], T]) -> T:
        def guarded() -> T:
            journal = self._enter()
            try:
                return read(journal)
            finally:
                self._exit()

        return await run_in_threadpool(guarded)

    def close(self) -> None:
        with self._changed:
            self._close_all()


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    """Every error the API returns: ``{"error": …, "status": …}``."""
    return JSONResponse({"error": message, "status": status, **extra}, status_code=status)


def unanswerable(request: Request, exc: Exception) -> JSONResponse:
    """The answer to a request that raised: 503 with the reason, never a bare 500. The
    journal being away or damaged is said so; anything else is logged with its traceback."""
    import sqlite3

    if isinstance(exc, JournalError | sqlite3.DatabaseError) or type(exc).__module__.startswith(
        "psycopg"
    ):
        log.warning("web: %s %s: journal unavailable: %s", request.method, request.url.path, exc)
        return error(503, f"journal unavailable: {exc}")
    log.error("web: %s %s failed", request.method, request.url.path, exc_info=exc)
    return error(503, f"the request could not be answered ({type(exc).__name__}); logged")


def create_app(config: Config, *, poll_interval: float = 0.2) -> Starlette:
    """The application for *config*; *poll_interval* is how often a live stream looks for
    new rows."""
    journals = Journals(config)
    publisher = Publisher(config, journals.run)
    watch = JournalWatch(journals.run, poll_interval)
    slots = StreamSlots(config.web.max_streams, config.web.max_streams_per_client)

    def reply(data: Any, query: Query | None = None, status: int = 200) -> Response:
        if query is not None and query.callback:  # JSONP, as datagrepper offers it
            body = f"{query.callback}({json.dumps(data)});"
            return Response(body, status, media_type="application/javascript")
        return JSONResponse(data, status)

    async def raw(request: Request) -> Response:
        try:
            query = read_query(request.query_params)
        except BadRequest as e:
            return error(e.status, str(e))
        criteria = query.criteria()
        offset = (query.page - 1) * query.rows_per_page

        def read(journal: Journal) -> tuple[int, list[dict[str, Any]]]:
            total = journal.count(criteria)
            found = journal.find_rows(
                criteria,
                newest_first=query.order == "desc",
                limit=query.rows_per_page,
                offset=offset,
            )
            return total, [raw_message(row.envelope, query.meta) for row in found]

        total, messages = await journals.run(read)
        data = {
            "arguments": query.arguments(),
            "count": len(messages),
            "pages": -(-total // query.rows_per_page),
            "raw_messages": messages,
            "total": total,
        }
        return reply(data, query)

    async def by_id(request: Request) -> Response:
        msg_id = request.query_params.get("id")
        if not msg_id:
            return error(400, "give the message: /id?id=MSG_ID")
        try:
            meta = read_meta(request.query_params)
        except BadRequest as e:
            return error(e.status, str(e))
        envelope = await journals.run(lambda j: j.by_msg_id(msg_id))
        if envelope is None:
            return error(404, f"no message {msg_id!r}")
        return JSONResponse(raw_message(envelope.to_json(), meta))

    async def stats(request: Request) -> Response:
        try:
            query = read_query(request.query_params)
        except BadRequest as e:
            return error(e.status, str(e))
        period = request.query_params.get("by", "day")
        if period not in PERIODS:
            return error(400, f"by must be one of {', '.join(PERIODS)}, not {period!r}")
        criteria = query.criteria()
        table = await journals.run(lambda j: j.stats(criteria, period))
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

    async def stream(request: Request) -> Response:
        try:
            query = read_query(request.query_params)
            start = _stream_start(request)
        except BadRequest as e:
            return error(e.status, str(e))
        newest = await watch.newest()
        if start is None:
            start = newest
        client = request.client.host if request.client else "?"
        try:
            slots.take(client)
        except TooManyStreams as e:
            return error(503, str(e))

        async def search(after: int, upto: int) -> list[Any]:
            criteria = query.criteria(after=after, upto=upto)
            return await journals.run(
                lambda j: j.find_rows(criteria, newest_first=False, limit=STREAM_BATCH)
            )

        body = events(
            search, watch, start, request.is_disconnected, lambda: slots.give_back(client)
        )
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(body, media_type="text/event-stream", headers=headers)

    async def home(request: Request) -> Response:
        try:
            query = read_query(request.query_params)
        except BadRequest as e:  # a page for a browser, JSON for any other client
            if "text/html" in request.headers.get("accept", ""):
                return HTMLResponse(page.error_page(str(e)), e.status)
            return error(e.status, str(e))
        criteria = query.criteria()
        limit = config.web.page_events

        def read(journal: Journal) -> page.View:
            rows = journal.find_rows(criteria, newest_first=True, limit=limit)
            return page.View(
                rows=rows, last_seq_id=journal.last_seq_id(), total=journal.count(criteria)
            )

        view = await journals.run(read)
        return HTMLResponse(page.render(view, request.query_params, config.naming))

    async def metrics(request: Request) -> Response:
        body, media_type = await journals.run(lambda j: metrics_response(config, j))
        return Response(body, media_type=media_type)

    async def healthz(request: Request) -> Response:
        try:
            last = await asyncio.wait_for(journals.run(lambda j: j.last_seq_id()), HEALTH_TIMEOUT)
        except TimeoutError:
            return error(503, f"journal unavailable: no answer in {HEALTH_TIMEOUT:.0f} s")
        except Exception as e:  # whatever the engine raises, the answer is "not ready"
            return error(503, f"journal unavailable: {e}")
        if journals.stale:  # found by this very read: the next one reads the journal anew
            return error(503, f"the web's view of the journal was stale: {journals.stale}")
        return JSONResponse({"status": "ok", "journal": "ok", "last_seq_id": last})

    async def live(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    routes = [
        Route("/", home),
        Route("/raw", raw),
        Route("/raw/", raw),
        Route("/v2/search", raw),
        Route("/id", by_id),
        Route("/id/", by_id),
        Route("/v2/id", by_id),
        Route("/v1/stats", stats),
        Route("/v1/stream", stream),
        Route("/v1/publish", publisher.endpoint, methods=["POST"]),
        Route("/metrics", metrics),
        Route("/healthz", healthz),
        Route("/healthz/ready", healthz),
        Route("/healthz/live", live),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # each pool thread keeps a journal connection (and its page cache): a few suffice
        anyio.to_thread.current_default_thread_limiter().total_tokens = READER_THREADS
        notify("READY=1")  # under systemd (Type=notify): serving
        try:
            yield
        finally:
            notify("STOPPING=1")
            journals.close()

    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={Exception: unanswerable})


def _stream_start(request: Request) -> int | None:
    """Where a stream starts: after the ``Last-Event-ID`` a reconnecting browser sends,
    else after ``?after=``, else (None) after the newest row."""
    for value in (request.headers.get("last-event-id"), request.query_params.get("after")):
        if value:
            if not _SEQ_ID.fullmatch(value):
                raise BadRequest(f"an event id is a seq_id (up to 18 digits), not {value[:40]!r}")
            return int(value)
    return None


def serve(config: Config) -> None:
    """Run ``bridge web`` until SIGINT or SIGTERM."""
    import uvicorn

    from bridge.config import parse_hostport
    from bridge.web.protocol import with_deadline

    host, port = parse_hostport(config.web.listen)
    app = create_app(config)
    log.info(
        "web: listening on http://%s:%d/ (journal %s)",
        host,
        port,
        config.journal.url or config.state_path,
    )
    # uvicorn stops on SIGINT and SIGTERM, then raises the signal again for the handler it
    # found: a no-op one makes a stop asked for an ordinary exit (status 0), as serve's is
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: None)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=2,
        proxy_headers=True,
        http=with_deadline(config.web.request_timeout),
        # the last guard (uvicorn's own 503): streams are capped lower, in the app
        limit_concurrency=config.web.max_streams + 1024,
    )

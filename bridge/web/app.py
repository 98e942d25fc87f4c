"""``bridge web``: the journal over HTTP, as one ASGI application, assembled here from its
route modules:

- ``/raw``, ``/id``, ``/v1/stats``: datagrepper's history API (:mod:`bridge.web.api`);
- ``/``: the live page, ``/v1/stream``: its Server-Sent Events (:mod:`bridge.web.live`);
  ``/static/…`` its assets, all served from here;
- ``/v1/schemas``, ``/v1/schemas/TOPIC``: each topic's JSON Schema
  (:mod:`bridge.web.contracts`);
- ``/v1/feed``: Atom feeds of any search; ``/notify/NAME``: what a notification rule
  would deliver (:mod:`bridge.web.feeds`);
- ``POST /v1/publish``: events pushed by services holding a token (:mod:`bridge.web.push`);
- ``/metrics`` for Prometheus, ``/healthz`` for load balancers and supervisors
  (:mod:`bridge.web.health`).

Journal reads are blocking calls: they run in Starlette's thread pool, each thread with
its own journal connection (:mod:`bridge.web.pool`).
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import anyio.to_thread
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from bridge.config import Config
from bridge.systemd import notify
from bridge.web.answers import unanswerable
from bridge.web.api import HistoryApi
from bridge.web.contracts import Contracts
from bridge.web.feeds import Feeds
from bridge.web.health import Health
from bridge.web.live import LivePage
from bridge.web.pool import Journals
from bridge.web.push import Publisher

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
READER_THREADS = 8


def create_app(config: Config, *, poll_interval: float = 0.2) -> Starlette:
    """The application for *config*; *poll_interval* is how often a live stream looks for
    new rows where the journal cannot say when it has some."""
    journals = Journals(config)
    contracts = Contracts(config, journals)
    history = HistoryApi(journals, config.naming)
    live = LivePage(config, journals, poll_interval)
    health = Health(config, journals)
    feeds = Feeds(config, journals)
    publisher = Publisher(config, journals.run)
    routes = [
        Route("/", live.home),
        Route("/raw", history.raw),
        Route("/raw/", history.raw),
        Route("/v2/search", history.raw),
        Route("/id", history.by_id),
        Route("/id/", history.by_id),
        Route("/v2/id", history.by_id),
        Route("/v1/stats", history.stats),
        Route("/v1/stream", live.stream),
        Route("/v1/feed", feeds.feed),
        Route("/v1/schemas", contracts.index),
        Route("/v1/schemas/{topic}", contracts.schema),
        Route("/v1/asyncapi.json", contracts.asyncapi),
        Route("/v1/notify/{name}/preview", feeds.preview_json),
        Route("/notify/{name}", feeds.preview_page),
        Route("/v1/publish", publisher.endpoint, methods=["POST"]),
        Route("/metrics", health.metrics),
        Route("/healthz", health.ready),
        Route("/healthz/ready", health.ready),
        Route("/healthz/live", health.live),
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

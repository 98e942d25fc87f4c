"""What operators and supervisors ask: ``/metrics`` for Prometheus, ``/healthz`` (and
``/healthz/ready``: the journal answers, within HEALTH_TIMEOUT, and the web's view of it is
not stale), ``/healthz/live`` (the process answers)."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.config import Config
from bridge.web.answers import error
from bridge.web.metrics import metrics_response
from bridge.web.pool import Journals

HEALTH_TIMEOUT = 5.0  # a supervisor asking /healthz gets an answer within this


class Health:
    """The routes that say how the web and its journal are."""

    def __init__(self, config: Config, journals: Journals):
        self.config = config
        self.journals = journals

    async def metrics(self, request: Request) -> Response:
        config = self.config
        journals = self.journals
        body, media_type = await journals.run(lambda j: metrics_response(config, j, journals))
        return Response(body, media_type=media_type)

    async def ready(self, request: Request) -> Response:
        journals = self.journals
        try:
            last = await asyncio.wait_for(journals.run(lambda j: j.last_seq_id()), HEALTH_TIMEOUT)
        except TimeoutError:
            return error(503, f"journal unavailable: no answer in {HEALTH_TIMEOUT:.0f} s")
        except Exception as e:  # whatever the engine raises, the answer is "not ready"
            return error(503, f"journal unavailable: {e}")
        if journals.stale:  # found by this very read: the next one reads the journal anew
            return error(503, f"the web's view of the journal was stale: {journals.stale}")
        return JSONResponse({"status": "ok", "journal": "ok", "last_seq_id": last})

    async def live(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

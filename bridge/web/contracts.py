"""The contract of each topic, for any consumer to fetch: ``/v1/schemas`` lists the topics
the installed parsers declare (plugins' too), ``/v1/schemas/TOPIC`` gives one's JSON Schema
as its parser ships it (the same file the bridge checks every body against)."""

from __future__ import annotations

import threading

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.config import Config
from bridge.pipeline.plugins import discover
from bridge.pipeline.schemas import Schemas
from bridge.web.answers import error


class Contracts:
    """The schema routes; the parsers are looked up once, on the first request."""

    def __init__(self, config: Config):
        self.naming = config.naming
        self._schemas: Schemas | None = None
        self._lock = threading.Lock()

    def schemas(self) -> Schemas:
        with self._lock:
            if self._schemas is None:
                self._schemas = Schemas(discover().parsers)
            return self._schemas

    async def index(self, request: Request) -> Response:
        topics = self.schemas().topics()
        return JSONResponse(
            {
                "topics": {
                    topic: {"bus_topic": self.naming.topic(topic), "schema": f"/v1/schemas/{topic}"}
                    for topic in topics
                }
            }
        )

    async def schema(self, request: Request) -> Response:
        asked = request.path_params["topic"]
        topic = self.naming.event_topic(asked)  # the full bus topic or the event topic
        text = self.schemas().text(topic)
        if text is None:
            known = ", ".join(self.schemas().topics())
            return error(404, f"no installed parser declares {asked!r}; topics: {known}")
        return Response(text, media_type="application/schema+json")

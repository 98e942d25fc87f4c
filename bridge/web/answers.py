"""How the web answers: JSON (or JSONP, as datagrepper offers it), and every error a JSON
``{"error", "status"}``: a 4xx for a bad request, a 503 for anything that raised, never a
bare 500."""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.errors import JournalError
from bridge.journal.query import Query

log = logging.getLogger("bridge.web.app")


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


def reply(data: Any, query: Query | None = None, status: int = 200) -> Response:
    """*data* as JSON, or as a JSONP call when the query names a callback."""
    if query is not None and query.callback:  # JSONP, as datagrepper offers it
        body = f"{query.callback}({json.dumps(data)});"
        return Response(body, status, media_type="application/javascript")
    return JSONResponse(data, status)

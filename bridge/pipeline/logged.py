"""``bridge log``: one event published by hand, held to the same contract as a parser's.

The body's ``origin.auth`` is replaced by what really vouches for it (the local user who ran
the command), it gets the ``schema_version`` of its topic's schema as the pipeline stamps a
parser's bodies, and it must fit that schema and the journal's limits.
"""

from __future__ import annotations

import getpass
import os
import socket
import uuid
from typing import Any

from bridge.events import Event
from bridge.pipeline.bodies import normalised
from bridge.pipeline.schemas import installed


def logged_event(event_topic: str, data: dict[str, Any]) -> Event:
    """*data* as an event on *event_topic*; ``EventRefused`` or ``SchemaBreach`` says why
    the journal may not take it."""
    data["origin"] = logged_origin(data.get("origin"))
    schemas = installed()
    version = schemas.version(event_topic)
    if version is not None:  # as the pipeline stamps a parser's bodies
        data.setdefault("schema_version", version)
    event = normalised(Event(event_topic, data, dedup_key=f"log:{uuid.uuid4()}"))
    schemas.check(event_topic, event.body)
    return event


def logged_origin(claimed: Any) -> dict[str, Any]:
    """The ``origin`` of a hand-published event: whatever ``auth`` the body claims is
    replaced by what really vouches for it, the local user who ran ``bridge log``."""
    origin = dict(claimed) if isinstance(claimed, dict) else {}
    for key in ("message_id", "date", "list"):
        origin.setdefault(key, None)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    origin["auth"] = {
        "verdict": "none",
        "method": "local",
        "domain": None,
        "selector": None,
        "reason": f"published by hand with bridge log by {user} on {socket.gethostname()};"
        " no signature vouches for it",
    }
    return origin

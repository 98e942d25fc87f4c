"""The live page, ``/``: the newest events rendered on the server (the page is whole without
JavaScript), the filter form, and the hooks ``static/app.js`` uses to draw the charts and
add events as they arrive. Every value from an event is escaped."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import urlencode

from bridge.events import Naming
from bridge.journal import Row

FILTER_FIELDS = (
    ("topic", "topic", "debbugs.bug.closed"),
    ("package", "package", "source package"),
    ("bug", "bug", "number"),
    ("user", "person", "name, e-mail or login"),
)
CHART_DAYS = 30


@dataclass
class View:
    rows: Sequence[Row]
    last_seq_id: int
    total: int


def render(view: View, params: Any, naming: Naming) -> str:
    """The whole page for the filters in *params* (the request's query arguments)."""
    filters = {name: params.get(name, "") for name, _, _ in FILTER_FIELDS}
    query = urlencode({k: v for k, v in filters.items() if v})
    empty = "" if view.rows else '<li class="empty">No events match.</li>'
    inputs = "\n".join(
        f'<label>{label} <input name="{name}" value="{escape(filters[name])}"'
        f' placeholder="{hint}" size="16"></label>'
        for name, label, hint in FILTER_FIELDS
    )
    # the charts end with the newest event shown (a journal of history has no recent days),
    # and never after today, whatever date an event claims
    messages = [json.loads(row.envelope) for row in view.rows]
    end = min(max((_epoch(m) for m in messages), default=time.time()), time.time())
    window = urlencode({"by": "day", "end": int(end), "delta": CHART_DAYS * 86400})
    stats_url = f"/v1/stats?{window}" + (f"&{query}" if query else "")
    events = "\n".join(_item_or_note(message, naming) for message in messages)
    stream_url = "/v1/stream" + (f"?{query}" if query else "")
    shown = f"{len(view.rows)} newest of {view.total}" if view.total > len(view.rows) else ""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Debian bus: live events</title>
<link rel="icon" href="/static/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/style.css">
<script src="/static/app.js" defer></script>
</head>
<body data-after="{view.last_seq_id}" data-stream="{escape(stream_url)}"
      data-stats="{escape(stats_url)}" data-chart-end="{int(end)}">
<header>
<h1>Debian bus</h1>
<p class="status"><span id="count">{view.total}</span> events
<span id="live" class="live off" title="live updates">offline</span></p>
</header>
<form id="filters" method="get" action="/">
{inputs}
<button type="submit">Filter</button> <a href="/">Clear</a>
</form>
<section id="activity">
<h2>Activity by topic, the {CHART_DAYS} days to {_day(end)}</h2>
<div id="charts"><noscript>Charts need JavaScript; the counts are at
<a href="{escape(stats_url)}">{escape(stats_url)}</a>.</noscript></div>
</section>
<section>
<h2>Events <small>{shown}</small></h2>
<ol id="events">
{events}{empty}
</ol>
</section>
<footer>History: <a href="/raw">/raw</a> (datagrepper's API) ·
<a href="/v1/stats">/v1/stats</a> · <a href="/metrics">/metrics</a></footer>
</body>
</html>
"""


def event_item(message: Mapping[str, Any], naming: Naming) -> str:
    """One event of the list; ``static/app.js`` builds the same markup for live ones."""
    body = message.get("msg") or {}
    auth = (body.get("origin") or {}).get("auth") or {}
    verdict = str(auth.get("verdict") or "none")
    method = auth.get("method")
    reason = str(auth.get("reason") or "")
    topic = naming.event_topic(str(message.get("topic", "")))
    summary = str(body.get("summary") or topic)
    url = body.get("url")
    title = escape(summary)
    link = f'<a href="{escape(url)}">{title}</a>' if _safe_url(url) else title
    packages = " ".join(
        f'<span class="package">{escape(str(p))}</span>'
        for p in (message.get("index") or {}).get("packages") or []
    )
    when = _when(body, message.get("timestamp"))
    badge = verdict + (f" ({method})" if method else "")
    return (
        f'<li class="event" data-seq-id="{int(message.get("seq_id", 0))}">'
        f'<time datetime="{escape(when)}">{escape(when.replace("T", " ").rstrip("Z"))}</time>'
        f' <span class="topic">{escape(topic)}</span> {link} {packages}'
        f' <span class="trust {escape(verdict)}" title="{escape(reason)}">{escape(badge)}</span>'
        "</li>"
    )


def _epoch(message: Any) -> float:
    """When an event happened, as epoch seconds; 0 when it says nothing usable."""
    try:
        when = _when(message.get("msg") or {}, message.get("timestamp"))
        return datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError, TypeError, AttributeError):
        stamp = message.get("timestamp") if isinstance(message, dict) else None
        return float(stamp) if isinstance(stamp, int | float) else 0.0


def _item_or_note(message: Any, naming: Naming) -> str:
    """One event of the list, or a line saying it cannot be shown: one odd stored event
    never breaks the page for the others."""
    try:
        return event_item(message, naming)
    except Exception as e:  # a body no parser would make (pushed, or from an old bridge)
        seq_id = message.get("seq_id") if isinstance(message, dict) else None
        return (
            f'<li class="event">event {escape(str(seq_id))} cannot be shown here'
            f" ({escape(type(e).__name__)}); /raw has it whole</li>"
        )


def _day(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


def _when(body: Mapping[str, Any], timestamp: Any) -> str:
    origin = body.get("origin") if isinstance(body.get("origin"), dict) else {}
    date = origin.get("date")
    if isinstance(date, str) and date:
        return date
    seconds = timestamp if isinstance(timestamp, int | float) else 0
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError, OSError):
        return ""


def _safe_url(url: Any) -> bool:
    """Links only to the web (a body could carry ``javascript:``)."""
    return isinstance(url, str) and url.startswith(("https://", "http://"))


def error_page(message: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Bad request</title>'
        '<link rel="icon" href="/static/icon.svg" type="image/svg+xml">'
        '<link rel="stylesheet" href="/static/style.css"></head>'
        f'<body><h1>Bad request</h1><p>{escape(message)}</p><p><a href="/">Back</a></p>'
        "</body></html>"
    )

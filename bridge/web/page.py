"""The live page, ``/``: a Debian developer's dashboard. The events in journal order (newest
first), each with when the bridge received it (UTC, said so), the mail's own date when it
arrived late, links to its bugs and packages, and its trust verdict in words; activity per
topic over the thirty days to today, drawn on the server with labelled axes; older events
a page at a time (keyset on ``seq_id``: ``?before=``), all without JavaScript.
``static/app.js`` only adds events as they arrive, each rendered here (``/v1/stream`` with
``format=html``). Every value from an event is escaped."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from bridge.events import Naming, iso_epoch
from bridge.journal import Row

FILTER_FIELDS = (
    ("topic", "topic", "debbugs.bug.closed"),
    ("package", "package", "source package"),
    ("bug", "bug", "number"),
    ("user", "person", "name, e-mail or login"),
)
CHART_DAYS = 30
DAY = 86400
SHOWN_REFERENCES = 6  # bugs and packages shown before the rest fold away
LATE_AFTER = 3600  # a mail dated this much before it arrived says how late it came
TRACKER = "https://tracker.debian.org/pkg/"
BUGS = "https://bugs.debian.org/"

# What each verdict means, in words (the badge says it short; the legend and title whole).
VERDICTS = {
    "pass": ("verified", "a signature the bridge checked vouches for what the event says"),
    "fail": (
        "forged or altered",
        "a signature is there but does not hold: the mail changed after signing, or its signed"
        " headers contradict the event",
    ),
    "none": (
        "unverified",
        "nothing the bridge could check vouches for it (no signature by a trusted domain or"
        " key): it may be true, but anyone could have sent it",
    ),
}
METHODS = {"dkim": "DKIM", "openpgp": "OpenPGP", "token": "token", "arc": "ARC", "x509": "X.509"}


@dataclass
class View:
    rows: Sequence[Row]
    last_seq_id: int
    total: int
    # (day "YYYY-MM-DD", event topic) -> events, over the chart's thirty days
    activity: dict[str, dict[str, int]] = field(default_factory=dict)
    chart_end: float = 0.0  # now: the charts end today
    before: int | None = None  # the page shows events before this seq_id (None: the newest)
    older: bool = False  # there are events older than those shown


def chart_window(now: float) -> tuple[float, float]:
    """The thirty whole days (UTC) that end today: their start, and now."""
    today = now - now % DAY
    return today - (CHART_DAYS - 1) * DAY, now


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
    messages = [json.loads(row.envelope) for row in view.rows]
    events = "\n".join(item_or_note(message, naming) for message in messages)
    # an older page stays as it is: only the newest page takes live events
    stream_url = "/v1/stream?" + urlencode({**{k: v for k, v in filters.items() if v},
                                            "format": "html"})  # fmt: skip
    stream = f' data-stream="{escape(stream_url)}"' if view.before is None else ""
    status = (
        '<span id="live" class="live off" title="live updates">offline</span>'
        if view.before is None
        else '<span id="live" class="live paused">older events: not live</span>'
    )
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
<body data-after="{view.last_seq_id}"{stream}>
<header>
<h1><a href="/">Debian bus</a></h1>
<p class="status"><span id="count">{view.total}</span> events {status}</p>
</header>
<form id="filters" method="get" action="/">
{inputs}
<button type="submit">Filter</button> <a href="/">Clear</a>
</form>
{_activity(view, query)}
<section>
<h2>Events <small>{_shown(view, messages)}</small></h2>
{_legend()}
<ol id="events">
{events}{empty}
</ol>
{_pager(view, messages, filters)}
</section>
<footer>Times are UTC: when the bridge received each event (for one read from an archive,
the date of its mail). History:
<a href="/raw">/raw</a> (datagrepper's API) · <a href="/v1/stats">/v1/stats</a> ·
<a href="/v1/feed">Atom feed</a> · <a href="/v1/asyncapi.json">AsyncAPI</a> ·
<a href="/metrics">/metrics</a></footer>
</body>
</html>
"""


def _shown(view: View, messages: Sequence[Mapping[str, Any]]) -> str:
    if not messages:
        return ""
    first, last = messages[0].get("seq_id"), messages[-1].get("seq_id")
    where = "newest" if view.before is None else f"before #{view.before}"
    return f"{len(messages)} {where} of {view.total}, journal #{first} to #{last}"


def _pager(view: View, messages: Sequence[Mapping[str, Any]], filters: dict[str, str]) -> str:
    """Links to older events (keyset: the oldest ``seq_id`` shown) and back to the newest."""
    kept = {k: v for k, v in filters.items() if v}
    links = []
    if view.before is not None:
        links.append(f'<a rel="first" href="/?{escape(urlencode(kept))}">Newest events</a>')
    if view.older and messages:
        older = urlencode({**kept, "before": messages[-1].get("seq_id")})
        links.append(f'<a rel="next" id="older" href="/?{escape(older)}">Older events</a>')
    return f'<nav class="pager">{" · ".join(links)}</nav>' if links else ""


def _legend() -> str:
    rows = "".join(
        f'<dt><span class="trust {verdict}">{escape(word)}</span></dt><dd>{escape(means)}</dd>'
        for verdict, (word, means) in VERDICTS.items()
    )
    return (
        '<details class="legend"><summary>What the trust badges mean</summary>'
        f"<dl>{rows}</dl><p>Hover a badge for the bridge's reason for that event.</p></details>"
    )


def _activity(view: View, query: str) -> str:
    """One bar chart per topic over the thirty days to today: days along the bottom (first,
    middle, today), each chart's busiest day on its left, its total on its right."""
    start, _ = chart_window(view.chart_end)
    days = [_day(start + n * DAY) for n in range(CHART_DAYS)]
    topics = sorted({t for counts in view.activity.values() for t in counts})
    stats_url = (
        "/v1/stats?"
        + urlencode({"by": "day", "start": int(start)})
        + (f"&{query}" if query else "")
    )
    heading = f"Activity by topic: events a day, {days[0]} to {days[-1]} (today, UTC)"
    if not topics:
        body = f'<p class="none">No events in these {CHART_DAYS} days.</p>'
    else:
        charts = []
        for topic in topics:
            counts = [view.activity.get(day, {}).get(topic, 0) for day in days]
            charts.append(_chart(topic, days, counts))
        axis = (
            f'<span></span><span class="axis"><span>{days[0]}</span>'
            f"<span>{days[CHART_DAYS // 2]}</span><span>{days[-1]} (today)</span></span>"
            "<span></span>"
        )
        body = '<div id="charts">' + "".join(charts) + axis + "</div>"
    return (
        f'<section id="activity"><h2>{escape(heading)}</h2>{body}'
        f'<p class="source">Counts: <a href="{escape(stats_url)}">{escape(stats_url)}</a></p>'
        "</section>"
    )


def _chart(topic: str, days: Sequence[str], counts: Sequence[int]) -> str:
    top = max(max(counts), 1)
    bars = []
    for n, count in enumerate(counts):
        if count:
            height = max(1.0, count / top * 20)
            bars.append(
                f'<rect x="{n * 10 + 1}" y="{20 - height:.2f}" width="8" height="{height:.2f}">'
                f"<title>{days[n]}: {count}</title></rect>"
            )
    total = sum(counts)
    return (
        f'<span class="name">{escape(topic)}</span>'
        f'<span class="plot"><span class="peak" title="the busiest day">{top}/day</span>'
        f'<svg viewBox="0 0 {len(days) * 10} 20" preserveAspectRatio="none" role="img"'
        f' aria-label="{escape(topic)}: {total} events in {len(days)} days">'
        + "".join(bars)
        + f'</svg></span><span class="total">{total}</span>'
    )


def event_item(message: Mapping[str, Any], naming: Naming) -> str:
    """One event of the list (and of the live stream's ``format=html``)."""
    return (
        f'<li class="event" data-seq-id="{int(message.get("seq_id", 0))}">'
        f"{event_content(message, naming)}</li>"
    )


def event_content(message: Mapping[str, Any], naming: Naming) -> str:
    """What the page shows of an event: times, topic, summary, references, trust."""
    body = message.get("msg") or {}
    index = message.get("index") or {}
    topic = naming.event_topic(str(message.get("topic", "")))
    link = summary_html(body, topic)
    references = [
        f'<a class="bug" href="{BUGS}{int(b)}">#{int(b)}</a>'
        for b in index.get("bugs") or []
        if isinstance(b, int)
    ] + [
        f'<a class="package" href="{TRACKER}{quote(str(p), safe="")}">{escape(str(p))}</a>'
        for p in index.get("packages") or []
    ]
    return (
        f"{_times(body, message.get('timestamp'))}"
        f' <span class="topic">{escape(topic)}</span> <span class="what">{link}</span>'
        f"{_folded(references)} {_badge(body)}"
    )


def summary_html(body: Mapping[str, Any], topic: str) -> str:
    """An event's summary (its topic when it has none), linked to its ``url`` when that is
    a web address."""
    title = escape(str(body.get("summary") or topic))
    url = body.get("url")
    return f'<a class="summary" href="{escape(url)}">{title}</a>' if _safe_url(url) else title


def _times(body: Mapping[str, Any], timestamp: Any) -> str:
    """When the bridge received it (UTC), and the mail's own date when that is far from it
    (late mail, a backfill's old date, or a date in the future)."""
    received = float(timestamp) if isinstance(timestamp, int | float) else 0.0
    shown = f'<time datetime="{_iso(received)}">{utc_text(received)}</time>'
    origin = body.get("origin") if isinstance(body.get("origin"), dict) else {}
    dated = _epoch_of(origin.get("date"))
    if dated is None or abs(received - dated) < LATE_AFTER:
        return shown
    apart = (
        f"{_duration(received - dated)} before it arrived"
        if dated < received
        else f"{_duration(dated - received)} after it arrived"
    )
    as_given = escape(str(origin.get("date")))
    return (
        f'{shown} <span class="late" title="the mail\'s Date header">mail dated'
        f' <time datetime="{_iso(dated) or as_given}">{utc_text(dated, as_given)}</time>,'
        f" {apart}</span>"
    )


def _folded(references: list[str]) -> str:
    """Bugs and packages: the first few, the rest behind a disclosure (a control message
    can touch fifty packages)."""
    if not references:
        return ""
    shown = " ".join(references[:SHOWN_REFERENCES])
    rest = references[SHOWN_REFERENCES:]
    if rest:
        shown += (
            f' <details class="more"><summary>{len(rest)} more</summary>{" ".join(rest)}</details>'
        )
    return f' <span class="refs">{shown}</span>'


def _badge(body: Mapping[str, Any]) -> str:
    origin = body.get("origin") if isinstance(body.get("origin"), dict) else {}
    auth = origin.get("auth") if isinstance(origin.get("auth"), dict) else {}
    verdict = str(auth.get("verdict") or "none")
    word, means = VERDICTS.get(verdict, (verdict, "a verdict this page does not know"))
    method = METHODS.get(str(auth.get("method") or ""), str(auth.get("method") or ""))
    by = auth.get("domain") or auth.get("selector") or ""
    detail = " ".join(str(x) for x in (method, by) if x and method != "local")
    reason = str(auth.get("reason") or means)
    text = word + (f" · {detail}" if detail and verdict != "none" else "")
    return f'<span class="trust {escape(verdict)}" title="{escape(reason)}">{escape(text)}</span>'


def item_or_note(message: Any, naming: Naming) -> str:
    """One event of the list, or a line saying it cannot be shown: one odd stored event
    never breaks the page for the others."""
    try:
        return event_item(message, naming)
    except Exception as e:  # a body no parser would make (pushed, or from an old bridge)
        seq_id = message.get("seq_id") if isinstance(message, dict) else None
        return (
            f'<li class="event" data-seq-id="{escape(str(seq_id))}">event {escape(str(seq_id))}'
            f" cannot be shown here ({escape(type(e).__name__)}); /raw has it whole</li>"
        )


def _epoch_of(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return iso_epoch(value)
    except ValueError:
        return None


def _iso(epoch: float) -> str:
    try:
        return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError, OSError):
        return ""


def utc_text(epoch: float, otherwise: str = "an impossible time") -> str:
    """*epoch* as people read it, saying it is UTC."""
    try:
        return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (ValueError, OverflowError, OSError):
        return otherwise


def _duration(seconds: float) -> str:
    for unit, size in (("year", 365 * DAY), ("day", DAY), ("hour", 3600)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{int(seconds // 60)} minutes"


def _day(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


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

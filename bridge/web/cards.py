"""History for a browser, as datagrepper gives it: ``/raw`` and ``/id`` answer a client that
prefers HTML (its ``Accept`` header ranks ``text/html`` above ``application/json``) with the
messages as cards. ``size`` says how much of each a card shows (``small``: the summary;
``medium``: and its time and topic; ``large``: and its bugs, packages and trust verdict;
``extra-large``: and the whole body), ``chrome=false`` gives the cards alone, to embed."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import urlencode

from bridge.events import Naming
from bridge.web import page


def prefers_html(accept: str) -> bool:
    """Whether an ``Accept`` header ranks HTML above JSON (a tie, as ``*/*``, is JSON)."""
    html = json_ = 0.0
    for part in accept.split(","):
        media, *parameters = (p.strip() for p in part.split(";"))
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        media = media.lower()
        if media in ("text/html", "text/*", "*/*"):
            html = max(html, quality)
        if media in ("application/json", "application/*", "*/*"):
            json_ = max(json_, quality)
    return html > json_


def card(message: Mapping[str, Any], size: str, naming: Naming) -> str:
    """One message at *size*."""
    body = message.get("msg") if isinstance(message.get("msg"), dict) else {}
    topic = naming.event_topic(str(message.get("topic", "")))
    summary = page.summary_html(body, topic)
    if size == "small":
        inner = summary
    elif size == "medium":
        when = page.utc_text(float(message.get("timestamp") or 0))
        inner = f'<time>{when}</time> <span class="topic">{escape(topic)}</span> {summary}'
    else:
        try:
            inner = page.event_content(message, naming)
        except Exception as e:  # one odd stored event never breaks the page
            inner = f"{summary} (cannot be shown whole here: {escape(type(e).__name__)})"
        if size == "extra-large":
            shown = json.dumps(body, indent=1, ensure_ascii=False)
            inner += f"<pre>{escape(shown)}</pre>"
    link = f"/id?{urlencode({'id': str(message.get('msg_id', ''))})}"
    return (
        f'<article class="card {size}" data-seq-id="{escape(str(message.get("seq_id", "")))}">'
        f'{inner} <a class="permalink" href="{escape(link)}">#</a></article>'
    )


def cards_page(
    messages: Sequence[Mapping[str, Any]],
    *,
    size: str,
    chrome: bool,
    naming: Naming,
    title: str,
    pager: str = "",
) -> str:
    """The cards, with the page around them unless *chrome* is off."""
    cards = "\n".join(card(m, size, naming) for m in messages) or "<p>No messages match.</p>"
    fragment = f'<div class="messages">\n{cards}\n</div>{pager}'
    if not chrome:
        return fragment
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<link rel="icon" href="/static/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/style.css">
</head>
<body>
<header><h1><a href="/">Debian bus</a></h1><p class="status">{escape(title)}</p></header>
{fragment}
<footer>Times are UTC. The same as JSON: ask with <code>Accept: application/json</code>.
</footer>
</body>
</html>
"""


def raw_pager(arguments: Sequence[tuple[str, str]], page_number: int, pages: int) -> str:
    """Links to the neighbouring pages of a ``/raw`` search, its other arguments kept."""
    kept = [(k, v) for k, v in arguments if k != "page"]

    def to(number: int, rel: str, label: str) -> str:
        address = urlencode([*kept, ("page", str(number))])
        return f'<a rel="{rel}" href="/raw?{escape(address)}">{label}</a>'

    links = []
    if page_number > 1:
        links.append(to(page_number - 1, "prev", "Previous page"))
    if page_number < pages:
        links.append(to(page_number + 1, "next", "Next page"))
    return f'<nav class="pager">page {page_number} of {max(pages, 1)} {" · ".join(links)}</nav>'

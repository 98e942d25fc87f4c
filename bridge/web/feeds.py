"""Feeds and notification rules on the web: ``/v1/feed`` (an Atom feed of any ``/raw``
search, for feed readers and tracker-like pages) and ``/notify/NAME`` with
``/v1/notify/NAME/preview`` (what a rule would have delivered, as ``bridge notify preview``
says it)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import urlencode
from xml.etree import ElementTree as ET

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.config import Config
from bridge.errors import ConfigError
from bridge.events import Envelope
from bridge.journal import Journal
from bridge.journal.query import BadRequest, epoch, read_query
from bridge.notify.render import link_of, summary_of
from bridge.notify.report import Preview, preview
from bridge.notify.rules import rule_named
from bridge.web.answers import error
from bridge.web.pool import Journals

ATOM = "http://www.w3.org/2005/Atom"
ATOM_TYPE = "application/atom+xml; charset=utf-8"


def _iso(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat().replace("+00:00", "Z")


def atom_feed(envelopes: list[Envelope], *, self_url: str, title: str) -> bytes:
    """An Atom 1.0 document (RFC 4287) of *envelopes*, newest first as given."""
    ET.register_namespace("", ATOM)

    def child(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        element = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attrs)
        if text is not None:
            element.text = text
        return element

    feed = ET.Element(f"{{{ATOM}}}feed")
    child(feed, "id", self_url)
    child(feed, "title", title)
    newest = max((e.timestamp for e in envelopes), default=0)
    child(feed, "updated", _iso(newest or datetime.now(UTC).timestamp()))
    child(feed, "link", rel="self", href=self_url, type="application/atom+xml")
    child(feed, "generator", "debian-bus-bridge")
    author = child(feed, "author")
    child(author, "name", "Debian bus bridge")
    for envelope in envelopes:
        entry = child(feed, "entry")
        child(entry, "id", f"urn:debian-bus:{envelope.msg_id}")
        child(entry, "title", summary_of(envelope))
        child(entry, "updated", _iso(envelope.timestamp))
        link = link_of(envelope)
        if link:
            child(entry, "link", rel="alternate", href=link)
        child(entry, "category", term=envelope.topic)
        agent = envelope.msg.get("agent") if hasattr(envelope.msg, "get") else None
        if isinstance(agent, dict) and (agent.get("name") or agent.get("email")):
            who = child(entry, "author")
            child(who, "name", str(agent.get("name") or agent.get("email")))
        child(entry, "content", json.dumps(envelope.msg, ensure_ascii=False, indent=1),
              type="text")  # fmt: skip
    return ET.tostring(feed, encoding="utf-8", xml_declaration=True)


class Feeds:
    """The routes of feeds and notification rules."""

    def __init__(self, config: Config, journals: Journals):
        self.config = config
        self.journals = journals

    async def feed(self, request: Request) -> Response:
        try:
            query = read_query(request.query_params)
        except BadRequest as e:
            return error(e.status, str(e))
        criteria = query.criteria()
        limit, offset = query.rows_per_page, query.offset
        envelopes = await self.journals.run(
            lambda j: j.find(criteria, newest_first=True, limit=limit, offset=offset)
        )
        described = ", ".join(f"{k}={' '.join(v)}" for k, v in query.filters.items() if v)
        body = atom_feed(
            envelopes,
            self_url=str(request.url),
            title=f"Debian bus: {described or 'every event'}",
        )
        return Response(body, media_type=ATOM_TYPE)

    def _reader(self, request: Request) -> Callable[[Journal], Preview] | JSONResponse:
        """What the JSON and the page share: the read that previews the rule the path
        names over the times the query gives, or the error to answer."""
        name = request.path_params["name"]
        try:
            rule = rule_named(self.config, name)
        except ConfigError as e:
            return error(404, str(e))
        try:
            args = request.query_params
            since = epoch(args["since"], "since") if args.get("since") else None
            until = epoch(args["until"], "until") if args.get("until") else None
        except BadRequest as e:
            return error(e.status, str(e))
        return lambda journal: preview(journal, rule, since=since, until=until)

    async def preview_json(self, request: Request) -> Response:
        reader = self._reader(request)
        if isinstance(reader, Response):
            return reader
        result = await self.journals.run(reader)
        return JSONResponse(result.as_json())

    async def preview_page(self, request: Request) -> Response:
        reader = self._reader(request)
        if isinstance(reader, Response):
            return reader
        result = await self.journals.run(reader)
        rule = self.config.notify.rules[result.rule]
        return Response(_page(result, rule, request.query_params), media_type="text/html")


def _page(result: Preview, rule: Any, params: Any) -> str:
    """The preview as a page: the rule, its daily counts as bars, the first events and why."""
    settings = {
        key: value
        for key, value in vars(rule).items()
        if value not in ([], "", 0) and key not in ("secret",)
    }
    peak = max(result.per_day.values(), default=1)
    bars = "\n".join(
        f'<tr><td>{escape(day)}</td><td class="n">{count}</td>'
        f'<td><span class="bar" style="width:{max(1, 300 * count // peak)}px"></span></td></tr>'
        for day, count in sorted(result.per_day.items())
    )
    first = "\n".join(
        f"<li><code>{e.seq_id}</code> <b>{escape(e.topic)}</b> {escape(summary_of(e))}"
        f"<br><small>because: {escape('; '.join(why))}</small></li>"
        for e, why in result.first
    )
    feed = "/v1/feed?" + urlencode(
        [
            (k, v)
            for k, values in settings.items()
            if isinstance(values, list) and k != "auth"
            for v in values
        ]  # fmt: skip
    )
    rows = "".join(
        f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in settings.items()
    )
    since = escape(params.get("since", ""))
    until = escape(params.get("until", ""))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Rule {escape(result.rule)}: preview</title>
<style>
body {{ font: 15px/1.4 system-ui, sans-serif; margin: 1.5em; max-width: 60em; }}
td.n {{ text-align: right; padding: 0 .6em; }}
.bar {{ display: inline-block; height: .8em; background: #c70036; }}
th {{ text-align: left; padding-right: 1em; }}
li {{ margin: .4em 0; }}
</style></head><body>
<h1>Rule <code>{escape(result.rule)}</code></h1>
<table>{rows}</table>
<form><label>since <input name="since" value="{since}" placeholder="2024-01-01"></label>
<label>until <input name="until" value="{until}"></label> <button>Preview</button></form>
<h2 id="total">{result.total} events would have been delivered</h2>
<p>Nothing is sent by this page. <a href="{escape(feed)}">The same filters as a feed</a>.</p>
<table>{bars}</table>
<h2>The first {len(result.first)}</h2>
<ol>{first}</ol>
</body></html>
"""

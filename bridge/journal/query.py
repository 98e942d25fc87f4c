"""Datagrepper's query language (``/raw``, ``/v1/stats``, ``/v1/stream``): its arguments,
defaults and limits, read into a journal search.

A script written for datagrepper works here by changing the base URL. Where this bridge
differs, it says so: times are each message's ``timestamp`` (when the bridge journaled it;
for a backfill, the mail's date); ``topic`` matches a topic or the start of one; ``user`` and
``agent`` both match the people an event names (name, e-mail or Debian login); ``bug`` is
this bridge's own; ``grouped=true`` is refused (there is nothing to group by).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bridge.events import debian_login, iso_epoch
from bridge.journal import Criteria

MAX_ROWS_PER_PAGE = 100
DEFAULT_ROWS_PER_PAGE = 25  # what datagrepper's code gives (its reference page says 20)
END_ONLY_DELTA = 600.0  # datagrepper's table: "the 600 seconds before end"
META = ("summary", "text", "url", "app_icon", "agent_avatar", "usernames", "packages",
        "containers", "modules", "flatpaks", "date")  # fmt: skip
META_LEGACY = {"subtitle": "summary", "link": "url", "icon": "app_icon"}
SIZES = ("small", "medium", "large", "extra-large")  # datagrepper's HTML card sizes
_CALLBACK = re.compile(r"[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*")
_DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII digits only: str.isdigit() also takes "²"
MAX_PAGE = 1_000_000
MAX_BUG = 2**31 - 1  # debbugs numbers are far below; an index of larger ones is no bug
MAX_FILTER_VALUES = 100  # values of one filter in one request (SQLite nests each once)
MAX_CONTAINS = 200  # characters of one text to search for
# Times an argument may name: none before 1970, none past the year 9999.
LATEST_TIME = 253_402_300_799.0

# (argument, its key in the reply's "arguments") for the filters that may repeat
FILTERS = (
    ("user", "users"),
    ("package", "packages"),
    ("category", "categories"),
    ("topic", "topics"),
    ("agent", "agents"),
    ("contains", "contains"),
    ("bug", "bugs"),
    ("not_user", "not_users"),
    ("not_package", "not_packages"),
    ("not_category", "not_categories"),
    ("not_topic", "not_topics"),
    ("not_agent", "not_agents"),
)


class BadRequest(ValueError):
    """An argument datagrepper would refuse too: the reply is a 400 saying which."""

    status = 400


class TooLarge(BadRequest):
    """A request asking for more than one request may (too many filter values): 413."""

    status = 413


@dataclass
class Query:
    """One ``/raw`` request, read and checked."""

    start: float | None
    end: float | None
    delta: float | None
    filters: dict[str, list[str]]
    page: int = 1
    rows_per_page: int = DEFAULT_ROWS_PER_PAGE
    order: str = "desc"
    meta: list[str] = field(default_factory=list)
    callback: str | None = None
    # how a browser's HTML shows each message, and whether with the page around it
    size: str = "large"
    chrome: bool = True

    @property
    def offset(self) -> int:
        """How many matches the pages before this one hold."""
        return (self.page - 1) * self.rows_per_page

    def criteria(self, after: int | None = None, upto: int | None = None) -> Criteria:
        """The journal search: each filter any of its values, ``not_`` ones left out."""
        f = self.filters
        people = (*f["users"], *f["agents"])
        not_people = (*f["not_users"], *f["not_agents"])
        return Criteria(
            topics=(*f["topics"], *(f"{c}." for c in f["categories"])),
            packages=tuple(f["packages"]),
            bugs=tuple(int(b) for b in f["bugs"]),
            people=people,
            contains=tuple(f["contains"]),
            not_topics=(*f["not_topics"], *(f"{c}." for c in f["not_categories"])),
            not_packages=tuple(f["not_packages"]),
            not_people=not_people,
            since=math.ceil(self.start) if self.start is not None else None,
            # datagrepper's end is inclusive, the journal's until is not
            until=math.floor(self.end) + 1 if self.end is not None else None,
            after=after,
            upto=upto,
        )

    def arguments(self) -> dict[str, Any]:
        """The reply's ``arguments``: every argument with the value used."""
        return {
            "start": self.start,
            "end": self.end,
            "delta": self.delta,
            **self.filters,
            "page": self.page,
            "rows_per_page": self.rows_per_page,
            "order": self.order,
            "meta": self.meta,
            "grouped": False,
            "size": self.size,
            "chrome": self.chrome,
        }


def read_query(args: Any, *, now: Callable[[], float] = time.time) -> Query:
    """A request's arguments (a multi-dict with ``get`` and ``getlist``) as a checked query."""
    start, end, delta = time_range(args.get("start"), args.get("end"), args.get("delta"), now())
    filters = {key: [v for v in args.getlist(name) if v] for name, key in FILTERS}
    for name, key in FILTERS:
        if len(filters[key]) > MAX_FILTER_VALUES:
            raise TooLarge(
                f"{name} is given {len(filters[key])} times; at most {MAX_FILTER_VALUES} values"
                " of one filter per request"
            )
    for bug in filters["bugs"]:
        if not _DIGITS.fullmatch(bug) or int(bug) > MAX_BUG:
            raise BadRequest(f"bug must be a bug number (at most {MAX_BUG}), not {bug[:40]!r}")
    for text in filters["contains"]:
        if len(text) > MAX_CONTAINS:
            raise BadRequest(f"contains takes at most {MAX_CONTAINS} characters")
    if filters["contains"] and not (filters["topics"] or filters["categories"]):
        raise BadRequest("When using contains, specify either a topic or a category as well")
    page = _integer(args.get("page", "1"), "page")
    if page < 1:
        raise BadRequest("page must be > 0")
    if page > MAX_PAGE:
        raise BadRequest(f"page must be <= {MAX_PAGE} (narrow the search instead)")
    rows = _integer(args.get("rows_per_page", str(DEFAULT_ROWS_PER_PAGE)), "rows_per_page")
    if rows > MAX_ROWS_PER_PAGE:
        raise BadRequest(f"rows_per_page must be <= {MAX_ROWS_PER_PAGE}")
    if rows < 1:
        raise BadRequest("rows_per_page must be > 0")
    order = args.get("order", "desc")
    if order not in ("desc", "asc"):
        raise BadRequest("order must be either 'desc' or 'asc'")
    meta = read_meta(args)
    callback = args.get("callback") or None
    if callback is not None and not _CALLBACK.fullmatch(callback):
        raise BadRequest("callback must be a JavaScript function name")
    size = args.get("size", "large")
    if size not in SIZES:
        raise BadRequest(f"size must be one of {', '.join(SIZES)}, not {size[:40]!r}")
    chrome = _boolean(args.get("chrome", "true"), "chrome")
    if _boolean(args.get("grouped", "false"), "grouped"):
        raise BadRequest(
            "grouped=true is not offered: datagrepper groups with fedmsg.meta's conglomerators,"
            " which this bridge has none of; ask without it (each event is one message)"
        )
    return Query(start, end, delta, filters, page, rows, order, meta, callback, size, chrome)


def _boolean(value: str, name: str) -> bool:
    """A datagrepper flag: ``true`` or ``false`` (any case)."""
    if value.lower() not in ("true", "false"):
        raise BadRequest(f"{name} must be true or false, not {value[:40]!r}")
    return value.lower() == "true"


def read_meta(args: Any) -> list[str]:
    """The ``meta`` fields asked for (``/raw``, ``/id``), each one datagrepper knows."""
    meta = args.getlist("meta")
    unknown = [m for m in meta if m not in META and m not in META_LEGACY]
    if unknown:
        raise BadRequest(f"meta must be in {','.join(META + tuple(META_LEGACY))}. Got {meta}")
    return meta


def time_range(
    start: str | None, end: str | None, delta: str | None, now: float
) -> tuple[float | None, float | None, float | None]:
    """(start, end, delta) as datagrepper's table fills them in from those given."""
    s = epoch(start, "start") if start else None
    e = epoch(end, "end") if end else None
    d = _number(delta, "delta") if delta else None
    match (s is not None, e is not None, d is not None):
        case (False, False, False):  # everything: the newest rows_per_page first
            return None, None, None
        case (False, False, True):
            return max(0.0, now - d), now, d
        case (True, False, False):
            return s, now, now - s
        case (True, False, True):
            return s, s + d, d
        case (False, True, False):
            return e - END_ONLY_DELTA, e, END_ONLY_DELTA
        case (False, True, True):
            return e - d, e, d
        case _:  # start and end: delta, if given, is ignored
            return s, e, e - s


def epoch(value: str, name: str) -> float:
    """A time argument: UNIX seconds, or an ISO 8601 date (UTC unless it says otherwise),
    from 1970 to the year 9999."""
    try:
        moment = float(value)
    except ValueError:
        try:
            moment = iso_epoch(value)
        except (ValueError, OverflowError):
            raise BadRequest(
                f"{name} must be UNIX seconds or an ISO 8601 time, not {value[:40]!r}"
            ) from None
    if not (math.isfinite(moment) and 0 <= moment <= LATEST_TIME):
        raise BadRequest(f"{name} must be a time from 1970 to 9999, not {value[:40]!r}")
    return moment


def _number(value: str, name: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise BadRequest(f"{name} must be a number of seconds, not {value!r}") from None
    if not math.isfinite(number) or not 0 <= number <= LATEST_TIME:
        raise BadRequest(
            f"{name} must be a number of seconds from 0 to {LATEST_TIME:.0f}, not {value[:40]!r}"
        )
    return number


def _integer(value: str, name: str) -> int:
    if not re.fullmatch(r"-?[0-9]{1,18}", value):
        raise BadRequest(f"{name} must be an integer, not {value[:40]!r}")
    return int(value)


def raw_message(message: dict[str, Any], meta: Sequence[str]) -> dict[str, Any]:
    """One of ``raw_messages``: the envelope as published (its JSON parsed), with the
    ``meta`` asked for."""
    if meta:
        message["meta"] = {name: meta_value(message, name) for name in meta}
    return message


def meta_value(message: Mapping[str, Any], name: str) -> Any:
    """A datagrepper ``meta`` field from an envelope (icons and avatars: none, no CDN)."""
    name = META_LEGACY.get(name, name)
    body = message.get("msg") or {}
    if name in ("summary", "text"):
        return body.get("summary")
    if name == "url":
        return body.get("url")
    if name == "packages":
        return (message.get("index") or {}).get("packages") or []
    if name == "usernames":
        return debian_logins(body)
    if name == "date":
        return datetime.fromtimestamp(message.get("timestamp", 0), UTC).isoformat()
    if name in ("containers", "modules", "flatpaks"):
        return []
    return None


def debian_logins(body: Mapping[str, Any]) -> list[str]:
    """The Debian logins of the people a body names (their ``@debian.org`` addresses)."""
    found: list[str] = []
    for role in ("agent", "changed_by", "maintainer"):
        person = body.get(role)
        email = (person.get("email") or "") if isinstance(person, Mapping) else ""
        login = debian_login(email)
        if login and login not in found:
            found.append(login)
    return found

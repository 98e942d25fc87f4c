"""The parser SDK: everything a parser plugin may use, and nothing else is promised.

A parser turns one kind of mail into events. It is a small pure object (no I/O, no global
state) registered under the ``bridge.parsers`` entry-point group::

    class NewsParser:
        name = "news"
        description = "Debian point releases announced on debian-news"
        api_version = API_VERSION
        topics = ("news.release",)
        schemas = Path(__file__).parent / "schemas"   # <topic>.json, each with a "version"

        def accepts(self, message: Message) -> bool: ...   # headers only, cheap
        def parse(self, message: Message) -> list[Event]: ...

``parse`` raises :class:`SkipMessage` for a mail it recognises that is not news and
:class:`ParseError` for one it claims but cannot read. Events fill the index fields
(``packages``, ``bugs``, ``people``, ``occurred_at``): they are what ``bridge query`` and
``bridge tail`` find events by. An event on a topic the parser did not declare is refused.
See ``docs/writing-a-parser.md``. Names not in ``__all__`` may change without notice.
"""

from __future__ import annotations

import re
from email.message import Message
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from bridge.errors import ParseError, SkipMessage
from bridge.events import Event
from bridge.mail import (
    Clearsigned,
    address,
    clearsigned,
    decode_bytes,
    decode_header_value,
    first_text_part,
    header,
    is_attachment,
    iso_date,
    list_id,
    message_id,
    parse_message,
    part_text,
    patches,
    text_body,
    utc_iso,
)

__all__ = [
    "API_VERSION",
    "BODY_CAP",
    "Clearsigned",
    "Event",
    "Message",
    "ParseError",
    "Parser",
    "SkipMessage",
    "address",
    "cap",
    "capped",
    "clearsigned",
    "decode_bytes",
    "decode_header_value",
    "display",
    "first_text_part",
    "header",
    "is_attachment",
    "iso_date",
    "list_id",
    "message_id",
    "origin",
    "unverified",
    "parse_message",
    "part_text",
    "patches",
    "people",
    "strip_list_footer",
    "strip_pgp",
    "summary_line",
    "text_body",
    "utc_iso",
]

API_VERSION = 1
BODY_CAP = 16 * 1024
SUMMARY_CAP = 160
ELLIPSIS = "…"


@runtime_checkable
class Parser(Protocol):
    """What the bridge asks of a parser plugin."""

    name: str
    description: str
    api_version: int
    topics: tuple[str, ...]
    schemas: Path

    def accepts(self, message: Message) -> bool:
        """Cheaply decide, on headers, whether this mail is for this parser."""
        ...

    def parse(self, message: Message) -> list[Event]:
        """Turn the mail into events; raise SkipMessage for a deliberate non-event."""
        ...


def origin(message: Message) -> dict[str, Any]:
    """Where an event came from: ``message_id``, ``date``, ``list``, ``auth``.

    ``auth`` starts as :func:`unverified`; the bridge's trust check, not the parser, fills it.
    """
    return {
        "message_id": header(message, "Message-ID") or None,
        "date": iso_date(header(message, "Date")),
        "list": list_id(message),
        "auth": unverified(),
    }


def unverified(reason: str = "no trust check has run") -> dict[str, Any]:
    """The ``origin.auth`` of an event nothing vouches for (yet)."""
    return {"verdict": "none", "method": None, "domain": None, "selector": None, "reason": reason}


def people(*persons: dict[str, str | None] | None) -> tuple[str, ...]:
    """The ``people`` index field from ``{name, email}`` dicts: each person's name, then
    address, each once."""
    found: list[str] = []
    for person in persons:
        for value in ((person or {}).get("name"), (person or {}).get("email")):
            if value and value not in found:
                found.append(value)
    return tuple(found)


_PGP_ARMOR = re.compile(
    r"-----BEGIN PGP SIGNATURE-----.*?(-----END PGP SIGNATURE-----|\Z)\n?", re.DOTALL
)
_LIST_FOOTER = re.compile(r"\n?-- \nTo UNSUBSCRIBE, email to .*\Z", re.DOTALL)


def strip_pgp(text: str) -> str:
    """Remove clearsign armour (header, dash-escaping, signature) from a text body."""
    if "-----BEGIN PGP SIGNED MESSAGE-----" in text:
        head, _, rest = text.partition("-----BEGIN PGP SIGNED MESSAGE-----")
        _, _, signed = rest.lstrip("\r\n").partition("\n\n")  # drop the Hash: armour headers
        lines = [line[2:] if line.startswith("- ") else line for line in signed.split("\n")]
        text = head + "\n".join(lines)
    return _PGP_ARMOR.sub("", text).strip("\n")


def strip_list_footer(text: str) -> str:
    """Remove the footer lists.debian.org appends to every message."""
    return _LIST_FOOTER.sub("", text)


def cap(text: str, limit: int = BODY_CAP) -> str:
    """*text* cut to at most *limit* characters."""
    return text if len(text) <= limit else text[:limit]


def capped(body: dict[str, Any], name: str, text: str, limit: int = BODY_CAP) -> str:
    """*text* cut to *limit* characters; a cut is recorded in ``body["truncated"]``.

    Every free-text field has a cap the contract states; ``truncated`` lists the fields a cap
    shortened, so a consumer knows the text it holds is not the whole text. After any call
    *body* has a ``truncated`` list (empty when nothing was cut); *name* is added to it, once,
    when this text was cut. The cut text is returned: store it under *name* yourself.
    """
    marks = body.setdefault("truncated", [])
    if len(text) <= limit:
        return text
    if name not in marks:
        marks.append(name)
    return text[:limit]


def summary_line(text: str, limit: int = SUMMARY_CAP) -> str:
    """*text* as a summary: one line, a word never twice in a row, at most *limit*
    characters, cut at a word boundary and ended with an ellipsis when too long."""
    words: list[str] = []
    for word in text.split():
        bare = _bare(word)
        if words and bare.isalpha() and bare == _bare(words[-1]):
            continue  # "hello: hello: segfaults" → "hello: segfaults"
        words.append(word)
    line = " ".join(words)
    if len(line) <= limit:
        return line
    cut = line[: limit - len(ELLIPSIS)]
    if " " in cut and not line[len(cut)].isspace():
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:-") + ELLIPSIS


def _bare(word: str) -> str:
    return word.strip(".,;:!?()[]{}'\"").lower()


def display(agent: dict[str, str | None]) -> str:
    """How a summary names a person: the name, else the address."""
    return agent.get("name") or agent.get("email") or "someone"

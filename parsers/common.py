"""Pieces of an event body that every built-in parser fills the same way."""

from __future__ import annotations

import re
from email.message import Message
from typing import Any

from bridge.mail import header, iso_date, list_id

BODY_CAP = 16 * 1024

_PGP_ARMOR = re.compile(
    r"-----BEGIN PGP SIGNATURE-----.*?(-----END PGP SIGNATURE-----|\Z)\n?", re.DOTALL
)


def origin(message: Message) -> dict[str, Any]:
    """Where an event came from: ``message_id``, ``date``, ``list``, ``auth``."""
    return {
        "message_id": header(message, "Message-ID") or None,
        "date": iso_date(header(message, "Date")),
        "list": list_id(message),
        "auth": None,
    }


def strip_pgp(text: str) -> str:
    """Remove clearsign armour (header, dash-escaping, signature) from a text body."""
    if "-----BEGIN PGP SIGNED MESSAGE-----" in text:
        head, _, rest = text.partition("-----BEGIN PGP SIGNED MESSAGE-----")
        _, _, signed = rest.lstrip("\r\n").partition("\n\n")  # drop the Hash: armour headers
        lines = [line[2:] if line.startswith("- ") else line for line in signed.split("\n")]
        text = head + "\n".join(lines)
    return _PGP_ARMOR.sub("", text).strip("\n")


_LIST_FOOTER = re.compile(r"\n?-- \nTo UNSUBSCRIBE, email to .*\Z", re.DOTALL)


def strip_list_footer(text: str) -> str:
    """Remove the footer lists.debian.org appends to every message."""
    return _LIST_FOOTER.sub("", text)


def cap(text: str, limit: int = BODY_CAP) -> str:
    return text if len(text) <= limit else text[:limit]


def display(agent: dict[str, str | None]) -> str:
    return agent.get("name") or agent.get("email") or "someone"

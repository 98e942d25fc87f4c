"""debbugs control transcripts: the commands a person sent and what the BTS answered.

Two forms exist: ``Processing commands for control@bugs.debian.org:`` (a mail to control@)
and ``Processing control commands:`` (``Control:`` pseudo-headers in a bug mail). In both,
each command is a line starting with ``> `` and the BTS's reply lines follow it.
"""

from __future__ import annotations

import re
from typing import Any

_START = re.compile(r"^Processing (?:commands for \S+|control commands):\s*$", re.MULTILINE)
_STOP_WORDS = {"thanks", "thank", "thankyou", "thank-you", "quit", "stop", "--", "kthx", "kthxbye"}
_REPLY_BUG = re.compile(r"\bBug #?(\d+)\b|\bbug (\d+)\b|#(\d{4,})", re.IGNORECASE)
_FAILURE = re.compile(
    r"^(Failed to|Unknown command|Unknown bug|Bug number \d+ not found|No valid bug|"
    r"Unable to|Too many)|not a valid|does not exist|is not a valid|malformed",
    re.IGNORECASE,
)
_SIGNATURE = "-- "


def parse_transcript(text: str) -> list[dict[str, Any]]:
    """The commands of a transcript, each ``{verb, args, bugs, ok, reply}``."""
    start = _START.search(text)
    lines = text[start.end() :].split("\n") if start else text.split("\n")
    commands: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for line in lines:
        if line == _SIGNATURE or line.rstrip() == "--":
            break
        if line.startswith(">"):
            current = _command(line[1:].strip())
            if current is None:
                continue
            if current["verb"] in _STOP_WORDS:
                break
            commands.append(current)
        elif current is not None and line.strip():
            current["reply"].append(line.rstrip())
    for command in commands:
        _settle(command)
    return commands


def _command(text: str) -> dict[str, Any] | None:
    if not text or text.startswith("#"):
        return None
    verb, _, rest = text.partition(" ")
    args = rest.split()
    bugs = [int(a.lstrip("#").rstrip(",")) for a in args if a.lstrip("#").rstrip(",").isdigit()]
    return {"verb": verb.lower(), "args": args, "bugs": bugs, "ok": True, "reply": []}


def _settle(command: dict[str, Any]) -> None:
    """Fill in the bugs named in the reply and whether the command succeeded."""
    reply = command["reply"]
    named = {
        int(next(g for g in m.groups() if g)) for line in reply for m in _REPLY_BUG.finditer(line)
    }
    bugs = [b for b in command["bugs"] if b > 0]
    command["bugs"] = sorted(set(bugs) | named)
    command["ok"] = bool(reply) and not any(_FAILURE.search(line) for line in reply)

"""A control transcript as an event body: its commands within the contract's caps, and a
summary that says what changed, closings and reopenings first."""

from __future__ import annotations

from typing import Any

from bridge.sdk import BODY_CAP, capped, display, summary_line
from parsers.grammar import BUG_VALUED
from parsers.transcript import ERROR_CAP, REPLY_LINE_CAP, REPLY_LINES_CAP

COMMANDS_CAP = 1000
REPLY_BUDGET = BODY_CAP  # characters of BTS reply kept over a whole transcript


def control_summary(agent: dict[str, str | None], commands: list[dict[str, Any]]) -> str:
    """Who changed what, closings and reopenings first: ``Jane: #123 reopened; #123 tags
    +patch +sid; closed on 2 bugs; 1 command failed``."""
    effects = [e for c in commands if c["status"] == "applied" for e in c["effects"]]
    states = [e for e in effects if e["field"] == "state"]
    others = [e for e in effects if e["field"] != "state"]
    # Whether a bug is open is what most readers look for: it is never folded into a count.
    parts = _grouped_changes(states, fold=False) + _grouped_changes(others, fold=not states)
    if states and len(parts) > 4:
        parts = _grouped_changes(states, fold=False) + _counted(others)
    failed = sum(1 for c in commands if c["status"] == "failed")
    if failed:
        parts.append(f"{failed} command{'s' if failed > 1 else ''} failed")
    if not parts:
        counted = sum(1 for c in commands if c["status"] != "noop")
        parts.append(f"{counted} control command{'s' if counted != 1 else ''}, no change")
    return summary_line(f"{display(agent)}: " + "; ".join(parts))


def _grouped_changes(effects: list[dict[str, Any]], fold: bool = True) -> list[str]:
    """Effects in few words: one change on many bugs is said once, many changes to one bug
    are said together, and (with *fold*) past four phrases only the fields changed are
    counted."""
    bugs_of: dict[tuple[str, str, str | None], set[int]] = {}
    for e in effects:
        bugs_of.setdefault((e["field"], e["op"], e["value"]), set()).add(e["bug"])
    together: dict[tuple[frozenset[int], str], list[str]] = {}
    for (field, op, value), bugs in bugs_of.items():
        together.setdefault((frozenset(bugs), field), []).append(describe_effect(field, op, value))
    parts = []
    for (bugs, field), phrases in together.items():
        text = " ".join(phrases[:1] + [p.removeprefix(f"{field} ") for p in phrases[1:]])
        parts.append(f"#{min(bugs)} {text}" if len(bugs) == 1 else f"{text} on {len(bugs)} bugs")
    if not fold or len(parts) <= 4:
        return parts
    return _counted(effects)


def _counted(effects: list[dict[str, Any]]) -> list[str]:
    """``3 bugs changed (tags, found versions)``, or nothing for no effects."""
    if not effects:
        return []
    fields = list(
        dict.fromkeys(FIELD_NAMES.get(e["field"], e["field"].replace("_", " ")) for e in effects)
    )
    named = ", ".join(fields[:5]) + (", …" if len(fields) > 5 else "")
    count = len({e["bug"] for e in effects})
    return [f"{count} bug{'s' if count > 1 else ''} changed ({named})"]


FIELD_NAMES = {"state": "open/done state", "found": "found versions", "fixed": "fixed versions"}


def describe_effect(field: str, op: str, value: str | None) -> str:
    """One change in a few words, the bug left out (``tags +patch``, ``reassigned to X``)."""
    if field == "state":
        return "closed" if value == "done" else "reopened"
    if field == "title":
        return "retitled"
    if field == "archived":
        return "archived" if value == "yes" else "unarchived"
    if field == "package":
        return f"reassigned to {value}"
    if field in BUG_VALUED:
        name = field.replace("_", " ")
        return f"{'not ' if op == 'remove' else ''}{name} #{value}"
    if op == "clear":
        return f"{field} cleared"
    sign = {"add": "+", "remove": "-"}.get(op, "")
    return f"{field} {sign}{value}"


def capped_commands(body: dict[str, Any], commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The commands within the contract's caps: at most COMMANDS_CAP commands, each reply
    line at most REPLY_LINE_CAP characters and REPLY_LINES_CAP lines, and REPLY_BUDGET
    characters of reply in all (later commands keep their effects and error, not their
    reply), each error at most ERROR_CAP characters. Each cut is marked in ``truncated``."""
    kept, spent = [], 0
    for command in commands[:COMMANDS_CAP]:
        reply = [line[:REPLY_LINE_CAP] for line in command["reply"][:REPLY_LINES_CAP]]
        if spent + sum(map(len, reply)) > REPLY_BUDGET:
            reply = []
        spent += sum(map(len, reply))
        if reply != command["reply"]:
            _mark(body, "commands.reply")
        error = command["error"]
        if error is not None and len(error) > ERROR_CAP:
            error = capped(body, "commands.error", error, ERROR_CAP)
        kept.append({**command, "reply": reply, "error": error})
    if len(commands) > COMMANDS_CAP:
        _mark(body, "commands")
    return kept


def _mark(body: dict[str, Any], name: str) -> None:
    if name not in body["truncated"]:
        body["truncated"].append(name)

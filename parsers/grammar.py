"""What each control verb asks for: the effects a command requests, read from its words.

This is what a ``Control:`` line in a bug mail asks debbugs to do (its outcome comes in
debbugs' own transcript), and what stands for a transcript command whose answer is worded in
a way :mod:`parsers.answers` does not read. The grammar follows debbugs' control server
(https://www.debian.org/Bugs/server-control).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Session:
    """What a command needs from the commands before it and from the mail around it."""

    here: int | None = None  # the bug ``-1`` stands for
    user: str | None = None  # set by ``user``, used by ``usertags``
    sender: str | None = None  # ``!`` in owner/submitter/reopen stands for the sender
    clones: dict[str, int] = field(default_factory=dict)  # ``-2``… from clone replies

    def bug(self, token: str) -> int | None:
        token = token.strip().lstrip("#").rstrip(",:.")
        if token == "-1":
            return self.here
        if token in self.clones:
            return self.clones[token]
        return int(token) if token.isdigit() and 0 < int(token) < 1 << 63 else None


Effects = Callable[[int], list[dict[str, Any]]]
# Fields whose values are bug numbers (written as decimal strings).
BUG_VALUED = frozenset({"merged_with", "blocked_by", "cloned_as"})
# Verbs whose free-text tail is one argument (a title, an address, a package list).
ONE_TAIL = {"retitle", "summary", "outlook", "submitter", "owner", "forwarded"}
# What debbugs applies to every bug of a merged set (the reply names each one).
SHARED = frozenset(
    {
        "severity",
        "tag",
        "tags",
        "found",
        "notfound",
        "fixed",
        "notfixed",
        "close",
        "done",
        "reopen",
        "reassign",
        "forwarded",
        "notforwarded",
        "owner",
        "noowner",
        "affects",
        "archive",
        "unarchive",
    }
)


def _effect(bug: int, field: str, op: str, value: str | None) -> dict[str, Any]:
    return {"bug": bug, "field": field, "op": op, "value": value}


def _set(field: str, value: str | None) -> Effects:
    return lambda bug: [_effect(bug, field, "set", value)]


def _clear(field: str) -> Effects:
    return lambda bug: [_effect(bug, field, "clear", None)]


def _listed(field: str, words: list[str]) -> Effects:
    """Values after ``+``/``-``/``=`` (each mark applies until the next one; none means
    ``+``). ``=`` replaces the list: it clears it, then adds."""
    changes: list[tuple[str, str | None]] = []
    op = "add"
    for word in words:
        for mark, name in (("+", "add"), ("-", "remove"), ("=", "set")):
            if word.startswith(mark):
                op, word = name, word[1:]
                if op == "set":
                    changes.append(("clear", None))
                break
        changes.extend(("add" if op == "set" else op, v) for v in word.split(",") if v)
    return lambda bug: [_effect(bug, field, o, v) for o, v in changes]


def _person(session: Session, value: str | None) -> str | None:
    return session.sender if value == "!" else value


def _versions(field: str, op: str) -> Callable[[list[str], Session], Effects]:
    def grammar(args: list[str], session: Session) -> Effects:
        return lambda bug: [_effect(bug, field, op, v) for v in args[1:]]

    return grammar


def _severity(args: list[str], session: Session) -> Effects:
    return _set("severity", args[1].lower()) if len(args) > 1 else _none


def _tags(args: list[str], session: Session) -> Effects:
    return _listed("tags", args[1:])


def _usertags(args: list[str], session: Session) -> Effects:
    listed = _listed("usertags", args[1:])
    user = session.user or session.sender

    def effects(bug: int) -> list[dict[str, Any]]:
        return [{**e, "user": user} for e in listed(bug)]

    return effects


def _affects(args: list[str], session: Session) -> Effects:
    return _listed("affects", args[1:])


def _retitle(args: list[str], session: Session) -> Effects:
    return _set("title", args[1]) if len(args) > 1 else _none


def _reassign(args: list[str], session: Session) -> Effects:
    if len(args) < 2:
        return _none
    version = args[2] if len(args) > 2 else None
    return lambda bug: (
        [_effect(bug, "package", "set", args[1])]
        + ([_effect(bug, "found", "add", version)] if version else [])
    )


def _merge(args: list[str], session: Session) -> Effects:
    bugs = [b for b in (session.bug(a) for a in args) if b is not None]
    return lambda bug: [_effect(bug, "merged_with", "add", str(o)) for o in bugs if o != bug]


def _close(args: list[str], session: Session) -> Effects:
    version = args[1] if len(args) > 1 else None
    return lambda bug: (
        [_effect(bug, "state", "set", "done")]
        + ([_effect(bug, "fixed", "add", version)] if version else [])
    )


def _reopen(args: list[str], session: Session) -> Effects:
    submitter = _person(session, args[1]) if len(args) > 1 and args[1] != "=" else None
    return lambda bug: (
        [_effect(bug, "state", "set", "open")]
        + ([_effect(bug, "submitter", "set", submitter)] if submitter else [])
    )


def _owner(args: list[str], session: Session) -> Effects:
    return _set("owner", _person(session, args[1] if len(args) > 1 else "!"))


def _submitter(args: list[str], session: Session) -> Effects:
    return _set("submitter", _person(session, args[1])) if len(args) > 1 else _none


def _forwarded(args: list[str], session: Session) -> Effects:
    return _set("forwarded", args[1]) if len(args) > 1 else _none


def _blocking(op: str) -> Callable[[list[str], Session], Effects]:
    def grammar(args: list[str], session: Session) -> Effects:
        others = [session.bug(a) for a in args[1:] if a.lower() not in ("by", "with")]
        bugs = [str(b) for b in others if b is not None]
        return lambda bug: [_effect(bug, "blocked_by", op, b) for b in bugs]

    return grammar


def _summary_of(field: str) -> Callable[[list[str], Session], Effects]:
    def grammar(args: list[str], session: Session) -> Effects:
        return _set(field, args[1]) if len(args) > 1 else _clear(field)

    return grammar


def _archived(value: str) -> Callable[[list[str], Session], Effects]:
    return lambda args, session: _set("archived", value)


def _clone(args: list[str], session: Session) -> Effects:
    clones = [session.clones[a] for a in args[1:] if a in session.clones]
    return lambda bug: [_effect(bug, "cloned_as", "add", str(c)) for c in clones]


def _none(bug: int) -> list[dict[str, Any]]:
    return []


GRAMMAR: dict[str, Callable[[list[str], Session], Effects]] = {
    "severity": _severity,
    "tag": _tags,
    "tags": _tags,
    "usertag": _usertags,
    "usertags": _usertags,
    "retitle": _retitle,
    "reassign": _reassign,
    "merge": _merge,
    "forcemerge": _merge,
    "unmerge": lambda args, session: _clear("merged_with"),
    "close": _close,
    "done": _close,
    "reopen": _reopen,
    "found": _versions("found", "add"),
    "notfound": _versions("found", "remove"),
    "fixed": _versions("fixed", "add"),
    "notfixed": _versions("fixed", "remove"),
    "owner": _owner,
    "noowner": lambda args, session: _clear("owner"),
    "forwarded": _forwarded,
    "notforwarded": lambda args, session: _clear("forwarded"),
    "affects": _affects,
    "block": _blocking("add"),
    "unblock": _blocking("remove"),
    "submitter": _submitter,
    "summary": _summary_of("summary"),
    "outlook": _summary_of("outlook"),
    "archive": _archived("yes"),
    "unarchive": _archived("no"),
    "clone": _clone,
}

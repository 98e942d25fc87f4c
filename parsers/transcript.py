"""debbugs' control language: commands, what each did to which bug, and what the BTS answered.

Commands reach debbugs two ways: a mail to control@ (its transcript starts ``Processing
commands for control@bugs.debian.org:``) and ``Control:`` pseudo-headers at the top of a
report or follow-up (``Processing control commands:``). A transcript echoes each command as a
``> `` line and puts the BTS's answer below it.

Each command becomes ``{verb, args, bugs, status, effects, effects_from, error, reply}``:

- ``status``: ``applied`` (it changed the bugs its ``effects`` list), ``unchanged`` (accepted,
  but the bugs already were that way), ``failed`` (``error`` holds the BTS's answer), ``noop``
  (a verb that never changes a bug: ``thanks``, comments, ``user``, ``package``…), or
  ``requested`` (a ``Control:`` line in a bug mail: debbugs reports the outcome in its own
  transcript).
- ``effects``: ``{bug, field, op, value}``, one per bug and value, in the order debbugs applies
  them: read from the BTS's answer (:mod:`parsers.answers`; ``effects_from`` is ``answer``),
  or, for a ``Control:`` line and an answer in wording not read, what the command asks
  (:mod:`parsers.grammar`; ``effects_from`` is ``command``). ``op`` is ``set``, ``add``,
  ``remove`` or ``clear``; ``value`` is a string (a bug number for ``merged_with``,
  ``blocked_by`` and ``cloned_as``) or null for ``clear``. Usertag effects also carry
  ``user``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from bridge.sdk import decode_header_value
from parsers.answers import bug_line, read_answer
from parsers.grammar import BUG_VALUED, GRAMMAR, ONE_TAIL, SHARED, Session

START = re.compile(r"^Processing (?:commands for \S+|control commands):\s*$", re.MULTILINE)
STOP_VERBS = frozenset(
    {"thanks", "thank", "thankyou", "thank-you", "quit", "stop", "--", "kthx", "kthxbye"}
)
# Verbs that never change a bug: they end processing, set the session's user or package
# scope, or ask for information.
NOOP_VERBS = STOP_VERBS | {"#", "", "user", "package", "limit", "debug", "help", "index", "list"}
REPLY_LINE_CAP = 512
REPLY_LINES_CAP = 20
ERROR_CAP = 1024

_FAILURE = re.compile(
    r"^(?:Failed to|Unknown command|Unknown bug|Bug number \d+ not found|No valid bug|"
    r"Unable to|Too many|Unknown/archived|Bug is archived|Attempt to)|not a valid|"
    r"does not exist|malformed|requires? (?:a|at least)",
    re.IGNORECASE,
)
# The BTS accepted the command but the bug already was that way.
_UNCHANGED = re.compile(
    r"^(?:Ignoring request to|\d+ was not (?:blocked by|blocking) any bugs\.|"
    r"Bug \d+ is already|Bug is already)",
)
_CLONED = re.compile(r"cloned as bugs? ([\d, and]+)", re.IGNORECASE)
_SIGNATURE = "-- "


def parse_transcript(text: str, sender: str | None = None) -> list[dict[str, Any]]:
    """Every ``>`` line of a transcript as a command, with its effects and status."""
    start = START.search(text)
    lines = text[start.end() :].split("\n") if start else text.split("\n")
    lines = _until_signature(lines)
    echoed: list[tuple[str, list[str]]] = []
    for line in lines:
        if line.startswith(">"):
            if echoed and _is_stop(echoed[-1][0]):
                break  # debbugs ran nothing after "thanks"
            echoed.append((line[1:].strip(), []))
        elif echoed and line.strip():
            echoed[-1][1].append(line.rstrip())
    session = Session(here=_implicit_bug(text, echoed), sender=sender)
    return [_command(words, reply, session, requested=False) for words, reply in echoed]


def parse_control_lines(
    lines: Iterable[str], bug: int | None, sender: str | None = None
) -> list[dict[str, Any]]:
    """``Control:`` pseudo-header values of a bug mail, ``-1`` being *bug*."""
    session = Session(here=bug, sender=sender)
    return [_command(line.strip(), [], session, requested=True) for line in lines]


def _is_stop(words: str) -> bool:
    return (words.split() or [""])[0].lower() in STOP_VERBS


def _until_signature(lines: list[str]) -> list[str]:
    for i, line in enumerate(lines):
        if line == _SIGNATURE or line.rstrip() == "--":
            return lines[:i]
    return lines


def _implicit_bug(text: str, echoed: list[tuple[str, list[str]]]) -> int | None:
    """The bug ``-1`` stands for in a transcript of ``Control:`` lines.

    The transcript's footer lists every bug touched; the one no command names by number is
    the bug the mail was about. Failing that, the reply to a command aimed at ``-1`` names it.
    """
    footer = {int(n) for n in re.findall(r"^(\d+): https?://bugs\.debian\.org/", text, re.M)}
    named = {
        int(w.lstrip("#").rstrip(",:."))
        for words, _ in echoed
        for w in words.split()
        if w.lstrip("#").rstrip(",:.").isdigit()
    }
    unnamed = footer - named
    if len(unnamed) == 1:
        return unnamed.pop()
    for words, reply in echoed:
        parts = words.split()
        if len(parts) > 1 and parts[1] == "-1":
            for line in reply:
                if bug_line(line) is not None:
                    return bug_line(line)
    return None


def _command(words: str, reply: list[str], session: Session, requested: bool) -> dict[str, Any]:
    if words.startswith("#"):
        verb, rest = "#", words[1:].strip()
    else:
        verb, _, rest = words.partition(" ")
        verb = verb.lower()
    args = _arguments(verb, rest.strip())
    reply = [_decoded(line) for line in reply]
    command: dict[str, Any] = {
        "verb": verb,
        "args": args,
        "bugs": [],
        "status": "noop",
        "effects": [],
        "error": None,
        "reply": reply,
        "effects_from": None,
    }
    if verb in NOOP_VERBS:
        if verb == "user" and args:
            session.user = args[0]
        return command
    grammar = GRAMMAR.get(verb)
    if grammar is None:
        command.update(status="failed", error=_error(reply) or f"unknown command {verb!r}")
        return command
    if not requested:
        _learn_clones(verb, args, reply, session)
    asked = grammar(args, session)
    targets = _targets(verb, args, session, reply)
    command["effects"] = [e for bug in targets for e in asked(bug)]
    if requested:
        command.update(status="requested", effects_from="command")
    elif not reply:
        # debbugs counts a command it answers with nothing among the transcript's errors.
        command.update(status="failed", effects=[], error="the BTS gave no answer")
    elif any(_FAILURE.search(line) for line in reply if bug_line(line) is None):
        command.update(status="failed", effects=[], error=_error(reply))
    else:
        _as_answered(command, reply, targets)
    command["bugs"] = sorted(
        set(targets)
        | {e["bug"] for e in command["effects"]}
        | {int(e["value"]) for e in command["effects"] if e["field"] in BUG_VALUED}
    )
    return command


def _as_answered(command: dict[str, Any], reply: list[str], targets: list[int]) -> None:
    """Status and effects of a command the BTS accepted, as its answer reports them.

    When the answer has no line :mod:`parsers.answers` reads (wording it does not know),
    the effects the command asked for stand, and ``effects_from`` says so.
    """
    answer = read_answer(reply, targets, merging=command["verb"] in ("merge", "forcemerge"))
    if answer.read:
        command.update(
            effects=answer.effects,
            status="applied" if answer.effects else "unchanged",
            effects_from="answer",
        )
    elif all(_UNCHANGED.match(line) or bug_line(line) is not None for line in reply):
        command.update(status="unchanged", effects=[], effects_from="answer")
    elif not command["effects"]:
        command.update(status="failed", error=_error(reply) or "no bug the command could act on")
    else:
        command.update(status="applied", effects_from="command")


def _decoded(line: str) -> str:
    """A reply line with the RFC 2047 names debbugs copies from headers decoded."""
    if "=?" in line:
        line = re.sub(r"=\?[^?\s]+\?[bqBQ]\?[^?\s]*\?=", lambda m: decode_header_value(m[0]), line)
    return line


def _error(reply: list[str]) -> str:
    return " ".join(line for line in reply if bug_line(line) is None)


# -- which bugs a command acts on -------------------------------------------------------


def _arguments(verb: str, rest: str) -> list[str]:
    if verb == "#":
        return [rest] if rest else []
    if verb in ONE_TAIL:
        bug, _, tail = rest.partition(" ")
        return [bug] + ([tail.strip()] if tail.strip() else [])
    return rest.split()


def _targets(verb: str, args: list[str], session: Session, reply: list[str]) -> list[int]:
    """The bugs a command acts on: its first argument (every argument for merges), widened
    to the merged set the reply lists for verbs debbugs applies to a whole set."""
    if verb in ("merge", "forcemerge"):
        named = [session.bug(a) for a in args]
    else:
        named = [session.bug(args[0])] if args else []
    bugs = [b for b in named if b is not None]
    if verb in SHARED and bugs:
        for line in reply:
            listed = bug_line(line)
            if listed is not None and listed not in bugs:
                bugs.append(listed)
    return bugs


def _learn_clones(verb: str, args: list[str], reply: list[str], session: Session) -> None:
    """``clone 123 -2 -3`` answered ``Bug 123 cloned as bugs 456, 457``: -2 is 456."""
    if verb != "clone":
        return
    for line in reply:
        match = _CLONED.search(line)
        if match:
            numbers = [int(n) for n in re.findall(r"\d+", match.group(1))]
            session.clones.update(zip(args[1:], numbers, strict=False))

"""What the BTS says it did: a control command's effects read from debbugs' answer.

debbugs answers each command in its transcript: first a ``Bug #N [package] title`` line for
each bug of the merged set it is about to change, then one line per bug for each change it
made (``Added tag(s) patch.``, ``Marked as found in versions hello/1.0 and reopened.``) or
declined (``Ignoring request to alter fixed versions of bug #N to the same values previously
set``, ``Bug N is already marked as done; not doing anything.``). A command can change more
than it asked for: ``reassign`` clears found and fixed versions, ``found`` on a closed bug
reopens it, ``forcemerge`` first copies severity, tags, owner, found versions and the done
state onto each bug. Those side effects are in the answer, so the effects are read from it,
never from the verb alone.

Lines that name no bug go to the bugs of the ``Bug #N`` lines above them, in order: debbugs
prints one line of each kind per bug, in the order it listed them (``Bug reopened`` and
``Merged …`` are said once for the whole set).

The wording is that of debbugs' ``Debbugs::Control`` (and, for mail before about 2009, of
its older ``service.in``); a line this module does not know is left alone, and
:func:`read_answer` says whether any line was read at all.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# "Bug #N [package] title" (or "Bug #N {Done: …} [package] title"); before about 2009
# "Bug#N: title".
BUG_LINE = re.compile(r"^Bug #(\d+) [\[{]|^Bug#(\d+): ")

Change = tuple[str, str, str | None]  # field, op, value


@dataclass
class Answer:
    """The effects an answer reports, and whether it said anything this module reads."""

    effects: list[dict[str, Any]] = field(default_factory=list)
    read: bool = False  # some line was a change or a declined change this module knows


def bug_line(line: str) -> int | None:
    """The bug a ``Bug #N …`` line names, or None for any other line."""
    match = BUG_LINE.match(line)
    return int(match.group(1) or match.group(2)) if match else None


def read_answer(reply: list[str], fallback: list[int], merging: bool = False) -> Answer:
    """The effects *reply* reports; *fallback*: the bugs the command names, for lines that
    come before any ``Bug #N`` line.

    With *merging* (``merge``, ``forcemerge``) debbugs lists the bug named first, then each
    bug it changes to make the set agree, right above its changes: lines go to the bug of
    the ``Bug #N`` line just above them.
    """
    answer = Answer()
    listed: list[int] = []  # the bugs of the last run of Bug #N lines
    answered: dict[str, set[int]] = {}  # bugs with a line of each kind since that run
    in_run = False
    for line in reply:
        bug = bug_line(line)
        if bug is not None:
            if not in_run or merging:
                listed, answered, in_run = [], {}, True
            if bug not in listed:
                listed.append(bug)
            continue
        in_run = False
        reading = read_line(line.strip())
        if reading is None:
            continue
        answer.read = True
        answer.effects.extend(reading.spelled)
        if reading.whole_set:
            bugs = list(listed or fallback)
        else:
            bugs = reading.bugs or _whose(listed or fallback, answered.get(reading.kind, set()))
        answered.setdefault(reading.kind, set()).update(bugs)
        answer.effects.extend(
            {"bug": bug, "field": f, "op": op, "value": value}
            for bug in bugs
            for f, op, value in reading.changes
        )
    return answer


def _whose(listed: list[int], answered: set[int]) -> list[int]:
    """The bug a line that names none is about: the first listed bug without a line of its
    kind yet (the last one, when every bug has had one)."""
    if not listed:
        return []
    waiting = [bug for bug in listed if bug not in answered]
    return [waiting[0] if waiting else listed[-1]]


@dataclass(frozen=True)
class Reading:
    """One answer line: its kind (one line per bug of each kind), the changes it reports,
    the bugs it names (empty: those listed above it), and whether it speaks for the whole
    merged set at once."""

    kind: str
    changes: list[Change]
    bugs: list[int] = field(default_factory=list)
    whole_set: bool = False
    spelled: list[dict[str, Any]] = field(default_factory=list)  # effects that differ per bug


def read_line(line: str) -> Reading | None:
    """What one line of an answer says was done (or declined), or None when it is not such
    a line (a warning, a note, a line this module does not know)."""
    for pattern, reader in LINES:
        match = pattern.match(line)
        if match:
            return reader(match)
    return _versions_tags_blocks(line)


def _listed_values(text: str) -> list[str]:
    """debbugs' English lists (``a``, ``a and b``, ``a, b, and c``) as their items."""
    text = text.strip().rstrip(".")
    items = re.split(r",\s+(?:and\s+)?|\s+and\s+", text)
    return [item.strip() for item in items if item.strip()]


# -- the lines that join several changes with "; " (found, fixed, tags, blocks) ------------

# clause, then its field (also the kind of line) and op
_CLAUSES: list[tuple[re.Pattern[str], str, str]] = [
    (re.compile(rf"^(?:{pattern}) (.+)$", re.I), name, op)
    for pattern, name, op in [
        (r"(?:bug )?no longer marked as found in versions?", "found", "remove"),
        (r"(?:bug )?no longer marked as fixed in versions?", "fixed", "remove"),
        (r"(?:bug )?marked as found in versions?", "found", "add"),
        (r"(?:bug )?marked as fixed in versions?", "fixed", "add"),
        (r"added tag\(s\)|tags added:", "tags", "add"),
        (r"removed tag\(s\)|tags removed:", "tags", "remove"),
    ]
]
_BLOCKS = re.compile(r"^(added|removed) blocking bug\(s\) of (\d+): (.+)$", re.I)
_DID_NOT_ALTER = re.compile(r"^did not alter (found|fixed) versions$", re.I)
_REOPENED = " and reopened"


def _versions_tags_blocks(line: str) -> Reading | None:
    """``Marked as found in versions a; no longer marked as fixed in versions b and
    reopened.``, ``Added tag(s) x and y; removed tag(s) z.``, ``Added blocking bug(s) of N:
    M``: clauses joined by ``; ``, the first capitalised, a period at the end."""
    text = line.rstrip(".")
    reopened = text.endswith(_REOPENED)
    text = text.removesuffix(_REOPENED)
    kind: str | None = None
    changes: list[Change] = []
    bugs: list[int] = []
    for clause in text.split("; "):
        blocks = _BLOCKS.match(clause)
        if blocks:
            op = "add" if blocks.group(1).lower() == "added" else "remove"
            kind, bugs = kind or "blocks", [int(blocks.group(2))]
            changes += [("blocked_by", op, v.lstrip("#")) for v in _listed_values(blocks.group(3))]
            continue
        unaltered = _DID_NOT_ALTER.match(clause)
        if unaltered:
            kind = kind or unaltered.group(1).lower()
            continue
        for pattern, name, op in _CLAUSES:
            match = pattern.match(clause)
            if match:
                kind = kind or name
                changes += [(name, op, v) for v in _listed_values(match.group(1))]
                break
        else:
            return None  # a clause this module does not know: not such a line
    if kind is None:
        return None
    if reopened:
        changes.append(("state", "set", "open"))
    return Reading(kind, changes, bugs)


# -- lines of one change each --------------------------------------------------------------

Reader = Callable[[re.Match[str]], Reading]


def _one(kind: str, name: str, op: str, group: int = 1) -> Reader:
    """A line that reports one change to the bug listed above it, its value in *group*."""
    return lambda m: Reading(kind, [(name, op, m.group(group))])


def _fixed(kind: str, name: str, op: str, value: str | None) -> Reader:
    """A line that reports one change whose value the line implies."""
    return lambda m: Reading(kind, [(name, op, value)])


def _declined(kind: str) -> Reader:
    """A line saying the bug already was so: read, no change."""
    return lambda m: Reading(kind, [], _named(m))


def _named(match: re.Match[str]) -> list[int]:
    return [int(match.group("bug"))] if "bug" in match.groupdict() else []


def _whole_set(kind: str, name: str, value: str | None) -> Reader:
    """A line said once for every bug of the merged set."""
    return lambda m: Reading(kind, [(name, "set", value)], whole_set=True)


def _merged(match: re.Match[str]) -> Reading:
    """``Merged 1 2 3``: each bug is now merged with the others."""
    bugs = [int(n) for n in match.group(1).split()]
    spelled = [
        _effect(b, "merged_with", "add", str(other)) for b in bugs for other in bugs if other != b
    ]
    return Reading("merge", [], bugs=[], spelled=spelled)


def _disconnected(match: re.Match[str]) -> Reading:
    return Reading(
        "merge", [], spelled=[_effect(int(match.group(1)), "merged_with", "clear", None)]
    )


def _cloned(match: re.Match[str]) -> Reading:
    bug = int(match.group(1))
    clones = re.findall(r"\d+", match.group(2))
    return Reading("clone", [], spelled=[_effect(bug, "cloned_as", "add", c) for c in clones])


def _affects(op: str) -> Reader:
    def reader(match: re.Match[str]) -> Reading:
        bug = int(match.group(1))
        values = _listed_values(match.group(2))
        return Reading("affects", [], spelled=[_effect(bug, "affects", op, v) for v in values])

    return reader


def _unarchived(match: re.Match[str]) -> Reading:
    return Reading("archive", [], spelled=[_effect(int(match.group(1)), "archived", "set", "no")])


def _note(match: re.Match[str]) -> Reading:
    """A summary or outlook taken from a message of the bug (its number), or removed."""
    name = match.group(1).lower()
    message = match.group(2) if match.lastindex and match.lastindex > 1 else None
    return Reading(name, [(name, "set" if message else "clear", message)])


def _effect(bug: int, name: str, op: str, value: str | None) -> dict[str, Any]:
    return {"bug": bug, "field": name, "op": op, "value": value}


_Q = r"['`](.*?)'"  # a quoted value: '…' (answers before about 2009 open with a backquote)
_FROM = r"(?: from ['`].*')?\.?$"  # what the value was before, when the answer says

_RULES: list[tuple[str, Reader]] = [
    (rf"^Severity set to {_Q}{_FROM}", _one("severity", "severity", "set")),
    (r"^Ignoring request to change severity of Bug (?P<bug>\d+)", _declined("severity")),
    (rf"^Bug reassigned from package ['`].*' to {_Q}\.?$", _one("package", "package", "set")),
    (rf"^Bug assigned to package {_Q}\.?$", _one("package", "package", "set")),
    (r"^Ignoring request to reassign bug #(?P<bug>\d+)", _declined("package")),
    (r"^Marked Bug as done$", _fixed("done", "state", "set", "done")),
    (r"^Bug closed, send any further explanations to", _fixed("done", "state", "set", "done")),
    (r"^Bug (?P<bug>\d+) is already marked as done; not doing anything", _declined("done")),
    (r"^Bug reopened", _whole_set("done", "state", "open")),
    (r"^Bug (?P<bug>\d+) is not marked as done; doing nothing", _declined("done")),
    (r"^Ignoring request to alter found versions of bug #(?P<bug>\d+)", _declined("found")),
    (r"^Ignoring request to alter fixed versions of bug #(?P<bug>\d+)", _declined("fixed")),
    (r"^Ignoring request to alter tags of bug #(?P<bug>\d+)", _declined("tags")),
    (r"^Ignoring request to alter blocking bugs of bug #(?P<bug>\d+)", _declined("blocks")),
    (rf"^(?:Changed|Set) Bug title to {_Q}{_FROM}", _one("title", "title", "set")),
    (r"^Ignoring request to change the title of bug#(?P<bug>\d+)", _declined("title")),
    (rf"^(?:Changed|Set) Bug submitter to {_Q}{_FROM}", _one("submitter", "submitter", "set")),
    (r"^Ignoring request to change the submitter of bug#(?P<bug>\d+)", _declined("submitter")),
    (rf"^(?:Changed|Set) Bug forwarded-to-address to {_Q}{_FROM}", _one("fwd", "forwarded", "set")),
    (
        r"^Noted your statement that Bug has been forwarded to (.*?)\.?$",
        _one("fwd", "forwarded", "set"),
    ),
    (r"^Unset Bug forwarded-to-address", _fixed("fwd", "forwarded", "clear", None)),
    (r"^Ignoring request to change the forwarded-to-address of bug#(?P<bug>\d+)", _declined("fwd")),
    (r"^Owner recorded as (.*?)\.?$", _one("owner", "owner", "set")),
    (r"^Owner changed from .* to (.*?)\.?$", _one("owner", "owner", "set")),
    (r"^Removed annotation that Bug was owned by", _fixed("owner", "owner", "clear", None)),
    (r"^Ignoring request to (?:un)?set the owner of bug #(?P<bug>\d+)", _declined("owner")),
    (r"^Added indication that (\d+) affects (.+)$", _affects("add")),
    (r"^Removed indication that (\d+) affects (.+)$", _affects("remove")),
    (r"^Ignoring request to set affects of bug (?P<bug>\d+)", _declined("affects")),
    (r"^Merged ((?:\d+\s*)+)\.?$", _merged),
    (r"^Disconnected #(\d+) from all other report", _disconnected),
    (r"^Requested to merge with no additional bugs", _declined("merge")),
    (r"^Bug (\d+) cloned as bugs? (.+)$", _cloned),
    (r"^Unarchived Bug (\d+)", _unarchived),
    (r"^Bug archived\.?$", _fixed("archive", "archived", "set", "yes")),
    (r"^(Summary|Outlook) (?:recorded from|replaced with) message bug \d+ message (\d+)", _note),
    (r"^Removed (summary|outlook)", _note),
]
LINES: list[tuple[re.Pattern[str], Reader]] = [(re.compile(p), r) for p, r in _RULES]

"""Mail from Debian's bug tracker (debbugs) as bug events.

debbugs labels what it sends: ``X-Debian-PR-Message: <type> <bug>`` says what happened, the
``X-Debian-PR-Package``/``-Source``/``-Keywords`` headers say to what, and the handler ids in
``Resent-Message-ID``/``Message-ID`` and the ``Received: via spool by …`` line tie every copy
of one message together. Classification uses those headers; bodies are read only for the
fields an event carries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

from bridge.sdk import (
    API_VERSION,
    BODY_CAP,
    Event,
    SkipMessage,
    address,
    capped,
    display,
    header,
    origin,
    patches,
    people,
    strip_list_footer,
    strip_pgp,
    summary_line,
    text_body,
)
from parsers.control import capped_commands, control_summary
from parsers.transcript import (
    parse_control_lines,
    parse_transcript,
)

BTS_URL = "https://bugs.debian.org/"
HEADER_CAP = 1024  # subject and title
DEFAULT_SEVERITY = "normal"  # what debbugs records for a report without a Severity: line
SCHEMAS = Path(__file__).parent / "schemas"
CLOSED_TYPES = ("closed", "done", "they-closed")
_HANDLER_ID = re.compile(r"handler\.(\d+|s)\.([A-Z]+)(\d*)\.(\d+)")
_SPOOL = re.compile(r"via spool by (\S+?)@bugs\.debian\.org\s+id=([A-Z]+)(\d*)\.(\d+)")
# List tags and reply markers come before "Bug#N:"; after it, brackets belong to the title.
_PREFIX = re.compile(r"^\s*(?:\[[^\]]*\]\s*|(?:re|fwd?|aw|sv|tr)\s*:\s*)", re.IGNORECASE)
_BUG_NUMBER = re.compile(r"^\s*(?:debian\s+)?bug\s*#\s*\d+\s*:\s*", re.IGNORECASE)
_REPLY = re.compile(r"^(?:\s*(?:re|fwd?|aw|sv|tr)\s*:\s*)+", re.IGNORECASE)
# A further "Bug#N:" (a mail sent to two bugs, a list's copy of a BTS mail), with the list
# tags and reply markers before it.
_ANOTHER_BUG = re.compile(
    r"^\s*(?:\[[^\]]*\]\s*|(?:re|fwd?|aw|sv|tr)\s*:\s*)*(?:debian\s+)?bug\s*#\s*\d+\s*:\s*",
    re.IGNORECASE,
)
_MARKED_DONE = re.compile(r"marked as done \((.*)\)\s*$", re.DOTALL)
_PSEUDO = re.compile(
    r"^(Package|Source|Version|Severity|Tags|Control|User|Usertags|X-Debbugs-\S+)\s*:\s*(.*)$",
    re.IGNORECASE,
)
_DONE = re.compile(r"^Done:[ \t]*(\S.*)$", re.MULTILINE)
# Where Debian's services send from: nobody there closes a bug in person.
ROBOT_DOMAINS = frozenset({"bugs.debian.org", "ftp-master.debian.org"})
ROBOT_LOCAL_PARTS = frozenset({"noreply", "no-reply", "nobody", "mailer-daemon"})
_FIXED_IN = re.compile(r"\bfixed in \S+ (\S+)", re.IGNORECASE)
_SOURCE_VERSION = re.compile(r"^Source-Version:\s*(\S+)", re.MULTILINE)


@dataclass(frozen=True)
class Label:
    """The parsed ``X-Debian-PR-Message`` header: a type and, usually, a bug number."""

    type: str
    bug: int | None


def read_label(message: Message) -> Label | None:
    value = header(message, "X-Debian-PR-Message")
    if not value:
        return None
    kind, _, rest = value.partition(" ")
    number = rest.strip().split(" ")[0] if rest.strip() else ""
    return Label(kind.lower(), int(number) if number.isdigit() else None)


class DebbugsParser:
    """Bug reports, follow-ups, closures, forwards and control transcripts."""

    name = "debbugs"
    description = "Debian's bug tracker: reports, follow-ups, closures, forwards, control"
    api_version = API_VERSION
    topics = (
        "debbugs.bug.report",
        "debbugs.bug.followup",
        "debbugs.bug.closed",
        "debbugs.bug.forwarded",
        "debbugs.bug.control",
    )
    schemas = SCHEMAS

    def accepts(self, message: Message) -> bool:
        if message.get("X-Debian-PR-Message") is not None:
            return True
        return "owner@bugs.debian.org" in " ".join(message.get_all("X-Loop") or [])

    def parse(self, message: Message) -> list[Event]:
        label = read_label(message)
        if label is None:
            raise SkipMessage("bug-tracker mail without X-Debian-PR-Message (a raw log copy?)")
        if label.type == "transcript":
            return [self._transcript(message)]
        if label.bug is None:
            raise SkipMessage(f"debbugs {label.type!r} message without a bug number")
        if label.type.startswith("ack"):
            raise SkipMessage(
                f"debbugs {label.type} for #{label.bug}: an acknowledgement, not news"
            )
        if label.type == "report":
            topic_type = "followup" if is_followup_report(message, label.bug) else "report"
            return [self._bug_event(message, label, topic_type)]
        if label.type == "followup":
            return [self._bug_event(message, label, "followup")]
        if label.type in CLOSED_TYPES:
            return [self._closed(message, label)]
        if label.type == "forwarded":
            return [self._bug_event(message, label, "forwarded")]
        raise SkipMessage(f"debbugs message type {label.type!r} is not an event")

    # -- events ------------------------------------------------------------------------

    def _bug_event(self, message: Message, label: Label, topic_type: str) -> Event:
        body = common_bug_fields(message, label)
        text = strip_pgp(strip_list_footer(text_body(message, 4 * BODY_CAP)))
        stated = leading_pseudo_headers(text)
        pseudo = first_values(stated) if topic_type == "report" else {}
        agent = author(message)
        body.update(
            agent=agent,
            severity=_severity(pseudo) if topic_type == "report" else None,
            version=pseudo.get("version"),
            body=capped(body, "body", text),
            patches=patches(message),
            control=control_requests(stated, label.bug, agent),
        )
        body["summary"] = _summary(topic_type, agent, body)
        return bug_event(f"debbugs.bug.{topic_type}", body, dedup_key(message, label), [label.bug])

    def _closed(self, message: Message, label: Label) -> Event:
        body = common_bug_fields(message, label)
        closing = closing_mail(message)
        source = closing if closing is not None else message
        text = strip_pgp(strip_list_footer(text_body(source, 4 * BODY_CAP)))
        report = original_report(message)
        # The notice carries the bug's first report: its pseudo-headers are what the bug
        # was filed with.
        filed = first_values(leading_pseudo_headers(report_text(report))) if report else {}
        agent = closer(source, text)
        body.update(
            agent=agent,
            severity=_severity(filed) if report is not None else None,
            version=filed.get("version"),
            body=capped(body, "body", text),
            patches=patches(source),
            control=control_requests(leading_pseudo_headers(text), label.bug, agent),
            fixed_version=fixed_version(source, text),
        )
        body["summary"] = _summary("closed", agent, body)
        return bug_event("debbugs.bug.closed", body, dedup_key(message, label), [label.bug])

    def _transcript(self, message: Message) -> Event:
        text = text_body(message, 1 << 20)
        agent = address(header(message, "To").split(",")[0])
        commands = parse_transcript(text, sender=agent.get("email"))
        applied = [c for c in commands if c["status"] == "applied"]
        # A command that failed changed nothing: its bug stays in the command, not here.
        bugs = sorted({b for c in applied for b in c["bugs"]} | footer_bugs(text))
        packages, sources = package_headers(message)
        subject = header(message, "Subject")
        body: dict[str, Any] = {"truncated": []}
        body.update(
            bugs=bugs,
            commands=capped_commands(body, commands),
            type="transcript",
            subject=capped(body, "subject", subject, HEADER_CAP),
            title=capped(
                body,
                "title",
                bug_title(re.sub(r"^Processed(?: \(with \d+ errors?\))?:\s*", "", subject)),
                HEADER_CAP,
            ),
            package=packages,
            sources=sources,
            packages=sources or _sources_of(packages),
            agent=agent,
            url=f"{BTS_URL}{bugs[0]}" if len(bugs) == 1 else BTS_URL,
            origin=origin(message),
        )
        body["summary"] = control_summary(agent, commands)
        key = dedup_key(message, Label("transcript", None))
        return bug_event("debbugs.bug.control", body, key, bugs)


# -- field helpers -----------------------------------------------------------------------


def bug_event(topic: str, body: dict[str, Any], key: str, bugs: list[int | None]) -> Event:
    """A bug event, indexed by its source packages, its bugs and who acted."""
    return Event(
        topic,
        body,
        dedup_key=key,
        packages=tuple(body["packages"]),
        bugs=tuple(b for b in bugs if b is not None),
        people=people(body["agent"]),
        occurred_at=body["origin"]["date"],
    )


def common_bug_fields(message: Message, label: Label) -> dict[str, Any]:
    subject = header(message, "Subject")
    packages, sources = package_headers(message)
    body: dict[str, Any] = {"truncated": []}
    body.update(
        bug=label.bug,
        type=label.type,
        title=capped(body, "title", bug_title(subject), HEADER_CAP),
        subject=capped(body, "subject", subject, HEADER_CAP),
        package=packages,
        sources=sources,
        packages=sources or _sources_of(packages),
        tags=header(message, "X-Debian-PR-Keywords").split(),
        url=f"{BTS_URL}{label.bug}",
        origin=origin(message),
    )
    return body


def package_headers(message: Message) -> tuple[list[str], list[str]]:
    """Binary package names and source names, as debbugs lists them (space or comma separated)."""
    packages = _words(header(message, "X-Debian-PR-Package"))
    sources = _words(header(message, "X-Debian-PR-Source"))
    return packages, sources


def _words(value: str) -> list[str]:
    return [w for w in re.split(r"[\s,]+", value) if w]


def _sources_of(packages: list[str]) -> list[str]:
    """Without X-Debian-PR-Source: the ``src:`` entries, else the binary names as a best guess."""
    sources = [p[4:] for p in packages if p.startswith("src:")]
    return sources or list(packages)


def bug_title(subject: str) -> str:
    """The bug's title: no list tags, ``Re:``, ``Bug#N:``; the inside of ``marked as done (…)``."""
    title = subject
    while not _BUG_NUMBER.match(title):
        stripped = _PREFIX.sub("", title, count=1)
        if stripped == title:
            break
        title = stripped
    title = _REPLY.sub("", _BUG_NUMBER.sub("", title, count=1))
    while _ANOTHER_BUG.match(title):
        title = _ANOTHER_BUG.sub("", title, count=1)
    done = _MARKED_DONE.match(title)
    return (done.group(1) if done else title).strip()


def author(message: Message) -> dict[str, str | None]:
    """The person who wrote the mail (debbugs resends under the author's own From)."""
    return address(header(message, "From") or header(message, "Resent-From"))


def closer(closing: Message, text: str) -> dict[str, str | None]:
    """Who closed the bug: the closing mail's ``Done:`` line, then its ``Reply-To:``, then
    its ``From:``; the first that is a person, not a robot. dak closes bugs for an upload
    from ``ftpmaster@ftp-master.debian.org`` and names the uploader in ``Done:`` and
    ``Reply-To:``; a developer's own ``-done`` mail has them in ``From:``."""
    head = text.lstrip("\n").split("\n\n", 1)[0]
    done = _DONE.search(head)
    candidates = [done.group(1) if done else ""]
    candidates += [header(closing, name) for name in ("Reply-To", "From", "Resent-From")]
    people_named = [address(value) for value in candidates if value.strip()]
    for person in people_named:
        if person.get("email") and not is_robot(person["email"]):
            return person
    return author(closing)


def is_robot(email: str) -> bool:
    """An address of a Debian service rather than of a person (the archive software, the
    bug tracker and its per-bug addresses)."""
    local, _, domain = email.lower().rpartition("@")
    return domain in ROBOT_DOMAINS or local in ROBOT_LOCAL_PARTS


def leading_pseudo_headers(text: str) -> list[tuple[str, str]]:
    """The ``Package:``/``Severity:``/``Control:``… lines at the top of a bug mail's body, in
    order (``Control:`` may repeat)."""
    found: list[tuple[str, str]] = []
    for line in text.lstrip("\n").split("\n"):
        match = _PSEUDO.match(line.strip())
        if not match:
            break
        found.append((match.group(1).lower(), match.group(2).strip()))
    return found


def first_values(stated: list[tuple[str, str]]) -> dict[str, str]:
    """Each pseudo-header's first value, by lower-case name."""
    found: dict[str, str] = {}
    for name, value in stated:
        found.setdefault(name, value)
    return found


def _severity(pseudo: dict[str, str]) -> str:
    return (pseudo.get("severity") or DEFAULT_SEVERITY).lower()


def control_requests(
    stated: list[tuple[str, str]], bug: int | None, agent: dict[str, str | None]
) -> list[dict[str, Any]]:
    """The ``Control:`` pseudo-headers of a bug mail as commands debbugs will run, ``-1``
    being this mail's bug (their outcome comes in debbugs' own transcript)."""
    lines = [value for name, value in stated if name == "control"]
    return parse_control_lines(lines, bug, sender=agent.get("email"))


def original_report(notice: Message) -> Message | None:
    """In a ``marked as done`` notice, the bug's first report (the first attached message,
    before the closing mail)."""
    attached = _attached(notice)
    return attached[0] if len(attached) >= 2 else None


def report_text(report: Message) -> str:
    return strip_pgp(strip_list_footer(text_body(report, 4 * BODY_CAP)))


def is_followup_report(message: Message, bug: int) -> bool:
    """Tell a 2008-era follow-up labelled ``report N`` from a bug's first report.

    debbugs numbers a new bug's handler id ``B.<stamp>`` (received at ``submit@``) and a
    follow-up's ``B<bug>.<stamp>`` (received at ``<bug>-submit@`` or ``<bug>@``).
    """
    handler = _HANDLER_ID.search(header(message, "Resent-Message-ID"))
    if handler and handler.group(1) != "s":
        return bool(handler.group(3))
    for received in message.get_all("Received") or []:
        spool = _SPOOL.search(" ".join(str(received).split()))
        if spool:
            return spool.group(1) != "submit" or bool(spool.group(3))
    return False


def dedup_key(message: Message, label: Label) -> str:
    """One key for every copy of one bug-tracker message.

    debbugs' own handler id when one is found (list servers put their own Resent-Message-ID
    on copies of closures and transcripts), else the Message-ID; the pipeline falls back to
    the mail's hash when neither exists.
    """
    for name in ("Resent-Message-ID", "Message-ID"):
        match = _HANDLER_ID.search(header(message, name))
        if match:
            return "debbugs:handler." + ".".join(match.groups())
    for received in message.get_all("Received") or []:
        spool = _SPOOL.search(" ".join(str(received).split()))
        if spool and label.bug is not None:
            return f"debbugs:handler.{label.bug}.{spool.group(2)}.{spool.group(3)}.{spool.group(4)}"
    message_id = header(message, "Message-ID")
    return f"debbugs:{message_id}" if message_id else ""


def closing_mail(message: Message) -> Message | None:
    """In a ``marked as done`` notice, the attached closing mail (the last message part)."""
    attached = _attached(message)
    return attached[-1] if attached else None


def _attached(message: Message) -> list[Message]:
    """The messages attached as ``message/rfc822`` parts, in order."""
    if not message.is_multipart():
        return []
    found = []
    for part in message.walk():
        if part.get_content_type() != "message/rfc822":
            continue
        inner = part.get_payload()
        if isinstance(inner, list) and inner and isinstance(inner[0], Message):
            found.append(inner[0])
    return found


def fixed_version(closing: Message, text: str) -> str | None:
    """The version that fixed the bug, when the closing mail says so."""
    pseudo = first_values(leading_pseudo_headers(text))
    if pseudo.get("version"):
        return pseudo["version"]
    source_version = _SOURCE_VERSION.search(text)
    if source_version:
        return source_version.group(1)
    fixed = _FIXED_IN.search(header(closing, "Subject"))
    return fixed.group(1) if fixed else None


def footer_bugs(text: str) -> set[int]:
    """Bug numbers in the transcript's footer (``N: https://bugs.debian.org/…``)."""
    return {int(n) for n in re.findall(r"^(\d+): https?://bugs\.debian\.org/", text, re.MULTILINE)}


def without_package_prefix(title: str, packages: list[str]) -> str:
    """*title* without a leading ``pkg:`` or ``[pkg]`` naming a package the summary names."""
    for name in packages:
        for prefix in (f"{name}:", f"[{name}]"):
            if title.lower().startswith(prefix.lower()) and title[len(prefix) :].strip():
                return title[len(prefix) :].strip()
    return title


def _summary(topic_type: str, agent: dict[str, str | None], body: dict[str, Any]) -> str:
    who = display(agent)
    what = f"#{body['bug']}"
    names = body["packages"] or body["package"]
    pkg = ", ".join(names) or "an unknown package"
    title = without_package_prefix(body["title"], names + body["package"])
    if topic_type == "report":
        line = f"{who} reported {what} against {pkg}: {title}"
    elif topic_type == "followup":
        line = f"{who} followed up on {what} ({pkg}): {title}"
    elif topic_type == "forwarded":
        line = f"{who} forwarded {what} ({pkg}) upstream: {title}"
    else:
        fixed = f" in {body['fixed_version']}" if body.get("fixed_version") else ""
        line = f"{who} closed {what} ({pkg}){fixed}: {title}"
    return summary_line(line)

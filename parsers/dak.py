"""Mail from Debian's archive software (dak) as upload events.

dak marks its mail with ``X-DAK``/``X-Katie``, ``X-Debian: DAK`` (``Debian: DAK`` and the
``Debian-Archive-Action``/``-Source``/``-Version``/``-Suite`` headers since about 2022) and
says what happened in the subject. Accepted uploads carry the uploader's ``.changes``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

from bridge.sdk import (
    API_VERSION,
    Event,
    ParseError,
    SkipMessage,
    address,
    capped,
    clearsigned,
    display,
    header,
    origin,
    part_text,
    people,
    strip_list_footer,
    summary_line,
)
from parsers.changes import (
    find_changes,
    is_nmu,
    read_changes,
    unsigned_signature,
    unverified_signature,
    upload_fields,
)

TRACKER_URL = "https://tracker.debian.org/pkg/"
REASON_CAP = 8 * 1024
SCHEMAS = Path(__file__).parent / "schemas"
_CHANGES_NAME = r"(?P<source>[a-z0-9][a-z0-9+.-]*)_(?P<version>[^_\s]+)_(?P<arch>[^_\s]+)\.changes"
_SUBJECTS: list[tuple[str, re.Pattern[str]]] = [
    (
        "accepted",
        re.compile(
            r"^Accepted (?P<source>\S+) (?P<version>\S+) \((?P<arch>[^)]*)\)"
            r"(?: into (?P<suite>\S+))?"
        ),
    ),
    ("accepted", re.compile(rf"^{_CHANGES_NAME} ACCEPTED into (?P<suite>\S+)")),
    ("rejected", re.compile(rf"^{_CHANGES_NAME} REJECTED")),
    ("new", re.compile(rf"^{_CHANGES_NAME} is NEW")),
    ("received", re.compile(rf"^Processing of {_CHANGES_NAME}")),
    ("removed", re.compile(r"^(?:Bug#\d+: )?Removed package\(s\) from (?P<suite>\S+)")),
]
_REMOVAL_ROW = re.compile(
    r"^\s*(?P<pkg>[a-z0-9][a-z0-9+.-]*)\s*\|\s*(?P<ver>\S+)\s*\|\s*(?P<archs>.+?)\s*$", re.MULTILINE
)
_DAK_HEADERS = ("X-DAK", "X-Katie", "Debian-Archive-Action")


@dataclass(frozen=True)
class Subject:
    """What the subject line says: the action and whatever names it gives."""

    action: str
    source: str | None
    version: str | None
    arch: list[str]
    suite: str | None


def read_subject(message: Message) -> Subject | None:
    text = header(message, "Subject")
    for action, pattern in _SUBJECTS:
        match = pattern.match(text)
        if match:
            found = match.groupdict()
            return Subject(
                action,
                found.get("source"),
                found.get("version"),
                (found.get("arch") or "").split(),
                found.get("suite"),
            )
    return None


class DakParser:
    """Accepted, rejected, NEW and received uploads, and removals."""

    name = "dak"
    description = (
        "Debian archive (dak) mail: uploads accepted, rejected, NEW, received or discarded by"
        " the upload queue; removals"
    )
    api_version = API_VERSION
    topics = (
        "dak.upload.accepted",
        "dak.upload.rejected",
        "dak.upload.new",
        "dak.upload.received",
        "dak.upload.discarded",
        "dak.package.removed",
    )
    schemas = SCHEMAS

    def accepts(self, message: Message) -> bool:
        if message.get("X-Debian-PR-Message") is not None:
            return False  # a bug-tracker copy (e.g. a closing mail dak sent): debbugs' business
        if any(message.get(h) is not None for h in _DAK_HEADERS):
            return True
        marks = (header(message, "X-Debian") + " " + header(message, "Debian")).upper()
        if "DAK" in marks.split():
            return True
        return (
            "Archive Administrator" in header(message, "Sender")
            and read_subject(message) is not None
        )

    def parse(self, message: Message) -> list[Event]:
        subject = read_subject(message)
        if subject is None:
            raise SkipMessage(
                f"dak mail with an unrecognised subject: {header(message, 'Subject')!r}"
            )
        if subject.action == "accepted":
            return [self._accepted(message, subject)]
        if subject.action == "removed":
            return [self._removed(message, subject)]
        return [self._queue_event(message, subject)]

    def _accepted(self, message: Message, subject: Subject) -> Event:
        found, signed = changes_of(message, body_text(message))
        if found is None:
            raise ParseError("accepted-upload mail without a .changes in its body")
        body = new_body()
        body.update(upload_fields(found, body))
        suite = (
            subject.suite
            or header(message, "Debian-Suite")
            or next(iter(body["distribution"]), None)
        )
        if subject.source and body["source"] != subject.source:
            raise ParseError(
                f"subject names {subject.source} but the .changes is for {body['source']}"
            )
        _place(body, message, suite, body["changed_by"])
        body["summary"] = summary_line(
            f"{display(body['agent'])} uploaded {body['source']} {body['version']} to {suite}"
        )
        key = f"{body['source']}/{body['version']}/{suite}"
        return upload_event("dak.upload.accepted", body, key, signed)

    def _queue_event(self, message: Message, subject: Subject) -> Event:
        """Rejected, NEW and received: names from the subject, the .changes when present."""
        text = body_text(message)
        body = new_body()
        body.update(_from_subject(subject))
        found, signed = changes_of(message, text)
        if found is not None:
            body.update(upload_fields(found, body))
        elif subject.action == "received":
            listed = received_files(text)
            body["files"] = [
                {"name": n, "size": None, "sha256": None, "section": None, "priority": None}
                for n in listed
            ]
            body["architecture"] = architectures_of(listed)
        agent = body.get("changed_by") or addressee(message)
        suite = header(message, "Debian-Suite") or next(iter(body.get("distribution") or []), None)
        _place(body, message, suite, agent)
        action = subject.action
        if action == "rejected":
            body["reason"] = capped(body, "reason", rejection_reason(text), REASON_CAP)
        if action == "received":
            action = _queue_outcome(body, text)
        verb = {
            "rejected": "was rejected",
            "new": "is NEW (waiting for ftp-master review)",
            "received": "was received by the upload queue",
            "discarded": f"was discarded by the upload queue ({body.get('cause')})",
        }[action]
        body["summary"] = summary_line(f"{body['source']} {body['version']} {verb}")
        arch = body["architecture"]
        if action == "discarded":  # what it lists may be a few files: the .changes name says
            arch = subject.arch
        key = "/".join([action, body["source"], body["version"], "+".join(arch)])
        return upload_event(f"dak.upload.{action}", body, key, signed)

    def _removed(self, message: Message, subject: Subject) -> Event:
        text = body_text(message)
        rows = [m.groupdict() for m in _REMOVAL_ROW.finditer(text.split("--- Reason ---")[0])]
        if not rows:
            raise ParseError("removal mail without a package table")
        removed = [
            {
                "name": r["pkg"],
                "version": r["ver"],
                "architecture": [a.strip() for a in r["archs"].split(",")],
            }
            for r in rows
        ]
        reason = text.split("--- Reason ---", 1)[1] if "--- Reason ---" in text else ""
        sources = sorted({r["name"] for r in removed if "source" in r["architecture"]})
        agent = address(header(message, "From"))
        packages = sources or sorted({r["name"] for r in removed})
        body = new_body()
        body.update(
            suite=subject.suite,
            removed=removed,
            reason=capped(body, "reason", reason.strip().strip("-").strip(), REASON_CAP),
            packages=packages,
            agent=agent,
            url=TRACKER_URL + packages[0],
            origin=origin(message),
            summary=summary_line(f"{', '.join(packages)} removed from {subject.suite}"),
        )
        key = (
            "removed/"
            + subject.suite
            + "/"
            + ",".join(f"{r['name']}={r['version']}" for r in removed)
        )
        return Event(
            "dak.package.removed",
            body,
            dedup_key=key,
            packages=tuple(packages),
            people=people(agent),
            occurred_at=body["origin"]["date"],
        )


def addressee(message: Message) -> dict[str, str | None] | None:
    """The person dak addressed (its notices go to the uploader), or None when the first
    ``To:`` is the mailing list the copy came through: a list is not who acted."""
    person = address(header(message, "To").split(",")[0])
    email = (person.get("email") or "").lower()
    if not email:
        return None
    list_names = {
        header(message, "X-Mailing-List").lower(),
        header(message, "List-Id").lower().strip("<> ").split("<")[-1].rstrip(">"),
        header(message, "List-Post").lower().removeprefix("<mailto:").rstrip(">"),
    }
    if email in list_names or email.replace("@", ".") in list_names:
        return None
    return person


def new_body() -> dict[str, Any]:
    """The fields every dak body starts with."""
    return {"truncated": []}  # schema_version: the pipeline's, from the topic's schema


def upload_event(topic: str, body: dict[str, Any], key: str, signed: bytes | None) -> Event:
    """An upload event, indexed by its source, the bugs it closes and the people in it;
    *signed*: the clearsigned block its ``.changes`` was read from. Without one the upload
    is ``unsigned``, whether or not a signature check is configured: there is nothing to
    check."""
    if signed is None:
        body["signed_by"] = unsigned_signature(
            "the .changes was read from no clearsigned block in the mail's bytes"
            if body.get("fields")
            else "the mail holds no .changes, so no signature"
        )
    return Event(
        topic,
        body,
        dedup_key=key,
        packages=tuple(body["packages"]),
        bugs=tuple(body.get("closes") or ()),
        # those who acted: the uploader (and, once trust has checked the signature, the
        # signer); the Maintainer did not act
        people=people(body.get("agent"), body.get("changed_by")),
        occurred_at=body["origin"]["date"],
        signed=signed,
    )


def _place(body: dict[str, Any], message: Message, suite: str | None, agent: Any) -> None:
    """The fields every upload event fills the same way."""
    body.update(
        suite=suite,
        agent=agent,
        packages=[body["source"]],
        url=TRACKER_URL + body["source"],
        origin=origin(message),
    )


def body_text(message: Message) -> str:
    """The decoded text of the mail: the text/plain parts, list footer removed."""
    if message.is_multipart():
        parts = [
            p
            for p in message.walk()
            if not p.is_multipart() and p.get_content_type() == "text/plain"
        ]
        text = "\n".join(part_text(p) for p in parts)
    else:
        text = part_text(message)
    return strip_list_footer(text)


def changes_of(message: Message, text: str) -> tuple[Any, bytes | None]:
    """The mail's ``.changes`` and the clearsigned block it was read from.

    A clearsigned ``.changes`` is read from the signed text of the block the signature check
    verifies (the first in the parts' bytes), never from another part or decoding; only a
    mail with no such block has its ``.changes`` read from the decoded text, unsigned.
    """
    signed = clearsigned(message)
    if signed is not None:
        return read_changes(signed.text()), signed.block
    found = find_changes(text)
    return (read_changes(found) if found is not None else None), None


def _from_subject(subject: Subject) -> dict[str, Any]:
    if not subject.source or not subject.version:
        raise ParseError("dak subject without source and version")
    return {
        "source": subject.source,
        "version": subject.version,
        "architecture": subject.arch,
        "distribution": [],
        "urgency": None,
        "binaries": [],
        "maintainer": None,
        "changed_by": None,
        "date": None,
        "closes": [],
        "changes": None,
        "files": [],
        # Debian's NMU version rule (-x.y, +nmuN) is all the subject offers.
        "nmu": is_nmu(subject.version, ""),
        "signed_by": unverified_signature(),
        "signer": None,
        "fields": {},
    }


# What debianqueued says when it drops an upload rather than passing it on, and the cause
# each sentence gives (the ``cause`` field of ``dak.upload.discarded``).
_DISCARDED = [
    (re.compile(r"is already present on target host"), "already-present"),
    (re.compile(r"couldn't be processed for \d+ hours and is now deleted"), "expired"),
    (re.compile(r"^Job \S+ removed", re.MULTILINE), "removed"),
]
_RECEIVED = re.compile(r"uploaded successfully to")


def _queue_outcome(body: dict[str, Any], text: str) -> str:
    """``received`` or ``discarded``: what the upload queue says it did with the upload.

    debianqueued mails "Processing of X.changes" both when it passed an upload on and when
    it dropped it; only the text tells them apart. A notice that says neither is not news
    this parser can vouch for: it is skipped, with its first line as the reason.
    """
    for pattern, cause in _DISCARDED:
        if pattern.search(text):
            body["cause"] = cause
            body["reason"] = capped(body, "reason", queue_words(text), REASON_CAP)
            return "discarded"
    if _RECEIVED.search(text):
        return "received"
    first = next((line.strip() for line in text.split("\n") if line.strip()), "")
    raise SkipMessage(f"upload-queue notice that says neither received nor discarded: {first!r}")


def queue_words(text: str) -> str:
    """What the queue said, without its greeting and signature."""
    return text.split("\nGreetings,", 1)[0].strip()


def rejection_reason(text: str) -> str:
    """The reason dak gave, without its boilerplate tail."""
    return text.split("\n===\n")[0].strip()


def architectures_of(files: list[str]) -> list[str]:
    """The architectures an upload's file names show: ``.dsc`` is ``source``, and
    ``name_version_arch.deb`` (or ``.udeb``) is built for ``arch``."""
    found: list[str] = []
    for name in files:
        if name.endswith(".dsc"):
            arch = "source"
        else:
            match = re.match(r"^[^_]+_[^_]+_([a-z0-9-]+)\.u?deb$", name)
            if not match:
                continue
            arch = match.group(1)
        if arch not in found:
            found.append(arch)
    return found


def received_files(text: str) -> list[str]:
    """The files a queue notice names: indented after "along with the files:" (a receipt),
    comma-separated after "All files it mentions are also removed:" (an expired upload), or
    one a line after "is already present on target host:" (a duplicate)."""
    for marker, separator, indented in (
        ("along with the files:", None, True),
        ("All files it mentions are also removed:", ",", True),
        ("is already present on target host:", None, False),
    ):
        after = text.split(marker, 1)
        if len(after) == 2:
            return _listed_files(after[1], separator, indented)
    return []


def _listed_files(text: str, separator: str | None, indented: bool) -> list[str]:
    names: list[str] = []
    for line in text.split("\n")[1:]:
        if not line.strip() or (indented and not line.startswith((" ", "\t"))):
            break
        if not indented and " " in line.strip():
            break  # the sentence after the list ("Either you already uploaded it, …")
        names += [n.strip() for n in line.split(separator) if n.strip()]
    return names

"""What a signature must vouch for before an event is ``pass``.

debbugs does not sign the ``X-Debian-PR-*`` headers the debbugs parser classifies on, so a
valid signature alone proves little: the facts the event asserts must be in what was signed.
Each rule takes the event and the signed headers (name → value, only headers the signature
covers every instance of) and returns None when the facts are confirmed, else the reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from bridge.events import Event

Rule = Callable[[Event, Mapping[str, str]], str | None]


def _bug_named(bug: int, signed: Mapping[str, str]) -> bool:
    subject = signed.get("subject", "")
    message_id = signed.get("message-id", "")
    return bool(
        re.search(rf"\bbug\s*#\s*{bug}\b", subject, re.IGNORECASE)
        or re.search(rf"handler\.{bug}\.", message_id)
    )


def debbugs(event: Event, signed: Mapping[str, str]) -> str | None:
    body = event.body
    if event.topic == "debbugs.bug.control":
        subject, message_id = signed.get("subject", ""), signed.get("message-id", "")
        if not (
            subject.startswith("Processed") or message_id.endswith("transcript@bugs.debian.org>")
        ):
            return "no signed header says this is a control transcript (Subject: Processed…)"
        return None
    bug = body.get("bug")
    if not isinstance(bug, int) or not _bug_named(bug, signed):
        return (
            f"X-Debian-PR-Message names #{bug}, but neither the signed Subject nor the signed"
            " Message-ID does (the X-Debian-PR-* headers are not signed)"
        )
    if event.topic == "debbugs.bug.closed":
        subject, message_id = signed.get("subject", ""), signed.get("message-id", "")
        done = re.search(
            r"marked as done|\bclosed\b|fixed in", subject, re.IGNORECASE
        ) or re.search(rf"handler\.{bug}\.D", message_id)
        if not done:
            return (
                f"X-Debian-PR-Message says #{bug} was closed, but no signed header does"
                " (neither 'marked as done' in the Subject nor a done handler id)"
            )
    return None


_DAK_SUBJECT = re.compile(
    r"^(?:Accepted (?P<s1>\S+) (?P<v1>\S+) "
    r"|(?P<s2>[a-z0-9][a-z0-9+.-]*)_(?P<v2>[^_\s]+)_\S+\.changes\b"
    r"|Processing of (?P<s3>[a-z0-9][a-z0-9+.-]*)_(?P<v3>[^_\s]+)_)"
)


def dak(event: Event, signed: Mapping[str, str]) -> str | None:
    body = event.body
    if event.topic == "dak.package.removed":
        return None
    match = _DAK_SUBJECT.match(signed.get("subject", ""))
    if not match:
        return "the signed Subject does not name the upload's source and version"
    source = match.group("s1") or match.group("s2") or match.group("s3")
    version = match.group("v1") or match.group("v2") or match.group("v3")
    # file names drop the epoch that the .changes Version keeps
    if (
        source != body.get("source")
        or version.split(":")[-1] != str(body.get("version", "")).split(":")[-1]
    ):
        return (
            f"the signed Subject names {source} {version}, the event"
            f" {body.get('source')} {body.get('version')}"
        )
    return None


def any_parser(event: Event, signed: Mapping[str, str]) -> str | None:
    """For parsers without a rule of their own: a signature over the whole mail (every
    signature that passes signs the whole body) is enough."""
    return None


RULES: dict[str, Rule] = {"debbugs": debbugs, "dak": dak}


def rule_for(parser: str) -> Rule:
    return RULES.get(parser, any_parser)


def upload_confirmed(body: dict[str, Any]) -> bool:
    """A good OpenPGP signature vouches for an upload (its .changes is what the event says)."""
    return isinstance(body.get("signed_by"), dict) and body["signed_by"].get("status") == "good"

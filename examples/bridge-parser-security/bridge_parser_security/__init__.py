"""Debian security advisories (DSA and DLA) as ``security.advisory`` events.

The security team announces each advisory on debian-security-announce, the LTS team on
debian-lts-announce, as OpenPGP clear-signed text in one fixed layout: a subject
``[SECURITY] [DSA 5512-1] exim4 security update``, a header block naming the advisory,
``Package :``/``CVE ID :``/``Debian Bug :`` fields, and one sentence per suite saying in
which version the problem is fixed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bridge.sdk import (
    API_VERSION,
    Event,
    Message,
    ParseError,
    SkipMessage,
    address,
    cap,
    header,
    origin,
    people,
    strip_list_footer,
    strip_pgp,
    text_body,
)

TOPIC = "security.advisory"
TRACKER = "https://security-tracker.debian.org/tracker/"
LISTS = ("debian-security-announce", "debian-lts-announce")
_SUBJECT = re.compile(
    r"\[SECURITY\]\s*\[(?P<kind>DSA|DLA)[ -](?P<number>\d+)-(?P<rev>\d+)\]\s*(?P<title>.*)"
)
_FIELD = re.compile(r"^(?P<name>Package|CVE ID|Debian Bug|Version)\s*:\s*(?P<value>.*)$", re.M)
_CVE = re.compile(r"\bCVE-\d{4}-\d{4,}\b")
# "For the stable distribution (bookworm), these problems have been fixed in version X."
# "For Debian 11 bullseye, this problem has been fixed in version X."
_FIXED = re.compile(
    r"For (?:the \w+ distribution \((?P<suite>[\w-]+)\)|Debian \d+ (?P<lts>[\w-]+)),"
    r" (?:this problem has|these problems have) been fixed in versions? (?P<version>\S+?)\.(?=\s|$)"
)


class SecurityParser:
    """Advisories from the Debian security and LTS teams."""

    name = "security"
    description = "Debian security advisories (DSA, DLA) from the announcement lists"
    api_version = API_VERSION
    topics = (TOPIC,)
    schemas = Path(__file__).parent / "schemas"

    def accepts(self, message: Message) -> bool:
        listed = header(message, "List-Id")
        return any(name in listed for name in LISTS) or "[SECURITY]" in header(message, "Subject")

    def parse(self, message: Message) -> list[Event]:
        subject = _SUBJECT.search(header(message, "Subject"))
        if subject is None:
            raise SkipMessage("a message on the announcement list that is not an advisory")
        text = strip_pgp(strip_list_footer(text_body(message, 1 << 20)))
        fields = {m["name"]: m["value"].strip() for m in _FIELD.finditer(text)}
        if not fields.get("Package"):
            raise ParseError(f"advisory {subject['kind']}-{subject['number']} names no Package")
        return [advisory_event(message, subject, fields, text)]


def advisory_event(
    message: Message, subject: re.Match[str], fields: dict[str, str], text: str
) -> Event:
    advisory = f"{subject['kind']}-{subject['number']}-{subject['rev']}"
    packages = fields["Package"].replace(",", " ").split()
    bugs = [int(b) for b in re.findall(r"\d+", fields.get("Debian Bug", ""))]
    cves = sorted(set(_CVE.findall(fields.get("CVE ID", ""))))
    signer = address(header(message, "From"))
    fixed = fixed_versions(text)
    body: dict[str, Any] = {
        "advisory": advisory,
        "kind": subject["kind"],
        "title": subject["title"].strip(),
        "packages": packages,
        "cves": cves,
        "bugs": bugs,
        "fixed": fixed,
        "agent": signer,
        "url": TRACKER + advisory,
        "text": cap(text),
        "origin": origin(message),
    }
    body["summary"] = summary(advisory, packages, cves, fixed)
    return Event(
        TOPIC,
        body,
        dedup_key=advisory,
        packages=tuple(packages),
        bugs=tuple(bugs),
        people=people(signer),
        occurred_at=body["origin"]["date"],
    )


def fixed_versions(text: str) -> list[dict[str, str]]:
    """``[{suite, version}]`` from the "has been fixed in version" sentences, in order."""
    flat = " ".join(text.split())
    return [
        {"suite": m["suite"] or m["lts"], "version": m["version"]} for m in _FIXED.finditer(flat)
    ]


def summary(
    advisory: str, packages: list[str], cves: list[str], fixed: list[dict[str, str]]
) -> str:
    what = ", ".join(packages)
    if cves:
        what += f" ({cves[0]}" + (f" and {len(cves) - 1} more)" if len(cves) > 1 else ")")
    where = "; ".join(f"{f['suite']} {f['version']}" for f in fixed)
    return f"{advisory} fixes {what}" + (f" in {where}" if where else "")

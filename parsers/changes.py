"""Finding and reading a Debian ``.changes`` file inside a mail body.

The text is located (clearsigned or bare, after any preamble), checked for the fields an
upload event needs, and read with python-debian's ``deb822.Changes``.
"""

from __future__ import annotations

import re
from typing import Any

from debian import deb822

from bridge.sdk import ParseError, address, capped, iso_date

SIGNED_START = "-----BEGIN PGP SIGNED MESSAGE-----"
SIGNATURE_START = "-----BEGIN PGP SIGNATURE-----"
SIGNATURE_END = "-----END PGP SIGNATURE-----"
REQUIRED = ("Source", "Version", "Architecture", "Maintainer")
_BARE_START = re.compile(r"^(Format|Date|Source):", re.MULTILINE)
_NMU_VERSION = re.compile(r"(\+nmu\d+|-\d+\.\d+)$")
CHANGES_CAP = 32 * 1024  # the changelog text
FIELD_CAP = 64 * 1024  # each value in ``fields``


def find_changes(text: str) -> str | None:
    """The ``.changes`` text in *text* (armour included when signed), or None."""
    start = text.find(SIGNED_START)
    if start >= 0:
        end = text.find(SIGNATURE_END, start)
        if end < 0:
            raise ParseError("truncated .changes: PGP signed message without a complete signature")
        return text[start : end + len(SIGNATURE_END)] + "\n"
    bare = _BARE_START.search(text)
    return text[bare.start() :] if bare else None


def read_changes(text: str) -> deb822.Changes:
    """Parse a ``.changes`` text; a missing required field is a ParseError."""
    try:
        changes = deb822.Changes(text)
    except Exception as e:  # python-debian raises assorted errors on broken input
        raise ParseError(f"malformed .changes: {type(e).__name__}: {e}") from e
    missing = [f for f in REQUIRED if not str(changes.get(f, "")).strip()]
    if missing:
        raise ParseError(f"malformed .changes: missing {', '.join(missing)}")
    return changes


def upload_fields(changes: deb822.Changes, body: dict[str, Any]) -> dict[str, Any]:
    """The upload part of an event body (design §5), from a parsed ``.changes``; caps that
    apply are recorded in *body*'s ``truncated``."""
    version = changes["Version"].strip()
    text = plain_value(changes.get("Changes", ""))
    maintainer = address(changes["Maintainer"])
    changed_by = address(changes.get("Changed-By") or changes["Maintainer"])
    return {
        "source": changes["Source"].split()[0],
        "version": version,
        "distribution": changes.get("Distribution", "").split(),
        "urgency": (changes.get("Urgency") or "").split()[0] if changes.get("Urgency") else None,
        "architecture": changes["Architecture"].split(),
        "binaries": changes.get("Binary", "").split(),
        "maintainer": maintainer,
        "changed_by": changed_by,
        "date": iso_date(changes.get("Date", "")),
        "closes": sorted({int(n) for n in re.findall(r"\d+", changes.get("Closes", ""))}),
        "changes": capped(body, "changes", text, CHANGES_CAP),
        "files": file_list(changes),
        "nmu": is_nmu(version, text),
        "signed_by": unverified_signature(),
        "signer": None,  # who signed, once the signature is verified (bridge.trust)
        "fields": {
            k: capped(body, f"fields.{k}", plain_value(changes.get_as_string(k)), FIELD_CAP)
            for k in changes
        },
    }


def plain_value(value: str) -> str:
    """A deb822 value as plain text: a multi-line value loses its empty first line, each
    continuation line its one leading space, and `` .`` lines (deb822's blank line) become
    empty lines."""
    if "\n" not in value:
        return value.strip()
    lines = value.split("\n")
    if not lines[0].strip():
        lines = lines[1:]
    plain = []
    for line in lines:
        line = line[1:] if line.startswith((" ", "\t")) else line
        plain.append("" if line == "." else line.rstrip())
    return "\n".join(plain).strip("\n")


def unverified_signature() -> dict[str, Any]:
    """``signed_by`` before any OpenPGP check has run."""
    return {
        "status": "unverified",
        "fingerprint": None,
        "uid": None,
        "signed_at": None,
        "reason": "no OpenPGP check has run",
    }


def unsigned_signature(reason: str) -> dict[str, Any]:
    """``signed_by`` of an upload read from no signed text."""
    return {
        "status": "unsigned",
        "fingerprint": None,
        "uid": None,
        "signed_at": None,
        "reason": reason,
    }


def file_list(changes: deb822.Changes) -> list[dict[str, Any]]:
    """Files with size, SHA-256 (when listed), section and priority."""
    try:
        by_name: dict[str, dict[str, Any]] = {}
        for entry in changes.get("Files", []):
            by_name[entry["name"]] = {
                "name": entry["name"],
                "size": int(entry["size"]),
                "sha256": None,
                "section": entry.get("section"),
                "priority": entry.get("priority"),
            }
        for entry in changes.get("Checksums-Sha256", []):
            item = by_name.setdefault(
                entry["name"],
                {
                    "name": entry["name"],
                    "size": int(entry["size"]),
                    "sha256": None,
                    "section": None,
                    "priority": None,
                },
            )
            item["sha256"] = entry["sha256"]
    except (KeyError, ValueError, TypeError) as e:
        raise ParseError(f"malformed .changes: bad file list ({type(e).__name__}: {e})") from e
    return list(by_name.values())


def is_nmu(version: str, changes_text: str) -> bool:
    """A non-maintainer upload: said so in the changelog, or an NMU-style version."""
    return "non-maintainer upload" in changes_text.lower() or bool(_NMU_VERSION.search(version))

"""Every DKIM signature of a mail, verified with dkimpy, each with what it covers.

A result is ``pass`` (the signature verifies), ``fail`` (it does not: body or headers
changed after signing, a malformed signature), ``temperror`` (the key could not be fetched
now: try again later), ``permerror`` (no such key) or ``skipped`` (not verified: no parser
trusts its domain).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bridge.trust.keys import KeyStore, Lookup

MAX_VERIFIED = 5  # signatures by trusted domains verified per mail: each may cost a lookup


@dataclass(frozen=True)
class Signature:
    """One ``DKIM-Signature`` header and what became of verifying it."""

    domain: str
    selector: str
    headers: tuple[str, ...]  # h=, lower case, in order (a name may repeat)
    body_length: int | None  # l=: only this many body bytes are signed
    result: str  # pass, fail, temperror, permerror
    reason: str
    b: str = ""  # the start of b=, as Authentication-Results' header.b names it

    def covers(self, name: str) -> int:
        """How many instances of header *name* the signature covers."""
        return self.headers.count(name.lower())


def _tags(value: str) -> dict[str, str]:
    tags = {}
    for part in value.split(";"):
        key, sep, item = part.partition("=")
        if sep:
            tags[key.strip().lower()] = re.sub(r"\s+", "", item)
    return tags


def verify_all(
    raw: bytes, headers: list[str], keys: KeyStore, trusted: set[str]
) -> list[Signature]:
    """Verify the mail's DKIM signatures by *trusted* domains (*headers*: the values of its
    DKIM-Signature headers, top first). Others are listed, not verified: a mail with a
    hundred signatures must not cost a hundred key lookups."""
    import dkim

    found = []
    verifier = None
    checked = 0
    for index, value in enumerate(headers):
        tags = _tags(value)
        domain = tags.get("d", "").lower()
        selector = tags.get("s", "").lower()
        covered = tuple(h.lower() for h in tags.get("h", "").split(":") if h)
        length = int(tags["l"]) if tags.get("l", "").isdigit() else None
        b = tags.get("b", "")[:16]
        if domain not in trusted or checked >= MAX_VERIFIED:
            why = "no parser trusts this domain" if domain not in trusted else "too many signatures"
            found.append(Signature(domain, selector, covered, length, "skipped", why, b))
            continue
        checked += 1
        asked: dict[str, Lookup] = {}

        def dnsfunc(
            name: bytes, timeout: float = 5, asked: dict[str, Lookup] = asked
        ) -> bytes | None:
            key = name.decode("ascii", "replace").lower().rstrip(".")
            asked[key] = keys.lookup(key)
            return asked[key].record

        try:
            verifier = verifier or dkim.DKIM(raw, minkey=1024, timeout=keys.timeout)
            ok = verifier.verify(idx=index, dnsfunc=dnsfunc)
            result, reason = ("pass", "verifies") if ok else _why_not(asked)
        except dkim.ValidationError as e:
            result, reason = "fail", _validation(str(e))
        except dkim.DKIMException as e:
            result, reason = "fail", f"malformed signature: {e}"
        except Exception as e:  # dkimpy on hostile input: a verdict, never a crash
            result, reason = "fail", f"cannot verify: {type(e).__name__}: {e}"
        found.append(Signature(domain, selector, covered, length, result, reason, b))
    return found


def _why_not(asked: dict[str, Lookup]) -> tuple[str, str]:
    for name, lookup in asked.items():
        if lookup.record is None:
            return ("temperror" if lookup.temporary else "permerror"), lookup.reason or name
    return "fail", "the signature does not verify (headers changed after signing?)"


def _validation(message: str) -> str:
    if "body hash mismatch" in message:
        return "the body was changed after signing (body hash mismatch)"
    return f"does not verify: {message}"

"""Every DKIM signature of a mail, verified with dkimpy, each with what it covers.

A result is ``pass`` (the signature verifies), ``fail`` (it does not: body or headers
changed after signing, a malformed signature), ``temperror`` (the key could not be fetched
now: try again later), ``permerror`` (no such key) or ``skipped`` (not verified: no parser
trusts its domain).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from bridge.mail import header_block
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
    unsigned_tail: int = 0  # body bytes after the l= limit, as the signature canonicalises

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


def verify_all(raw: bytes, keys: KeyStore, trusted: set[str], budget: float) -> list[Signature]:
    """Verify the mail's DKIM signatures by *trusted* domains, top first. Others are listed,
    not verified: a mail with a hundred signatures must not cost a hundred key lookups.

    The signatures are read from dkimpy's own reading of the header block, so the i-th
    signature verified is the i-th it lists (the pipeline refuses a mail whose header block
    the parsers would read otherwise). Key lookups for the whole mail share *budget*
    seconds: past it, a signature is ``temperror`` at once.
    """
    if not names_a_signature(raw):
        return []  # nothing to verify: spare dkimpy its second reading of the headers
    import dkim

    deadline = time.monotonic() + budget
    try:
        verifier = dkim.DKIM(raw, minkey=1024, timeout=keys.timeout)
    except Exception as e:  # dkimpy cannot read the header block: no signature verifies
        values, unreadable = _signature_values_of(raw), f"cannot read the mail: {e}"
    else:
        values, unreadable = (
            [v.decode("ascii", "replace") for n, v in verifier.headers if n.lower() == _NAME],
            None,
        )
    found = []
    checked = 0
    for index, value in enumerate(values):
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
        if unreadable:
            found.append(Signature(domain, selector, covered, length, "fail", unreadable, b))
            continue
        asked: dict[str, Lookup] = {}

        def dnsfunc(
            name: bytes, timeout: float = 5, asked: dict[str, Lookup] = asked
        ) -> bytes | None:
            key = name.decode("ascii", "replace").lower().rstrip(".")
            asked[key] = keys.lookup(key, deadline=deadline)
            return asked[key].record

        tail = _unsigned_tail(verifier, tags, length)
        try:
            ok = verifier.verify(idx=index, dnsfunc=dnsfunc)
            result, reason = ("pass", "verifies") if ok else _why_not(asked)
        except dkim.ValidationError as e:
            result, reason = "fail", _validation(str(e))
        except dkim.DKIMException as e:
            result, reason = "fail", f"malformed signature: {e}"
        except Exception as e:  # dkimpy on hostile input: a verdict, never a crash
            result, reason = "fail", f"cannot verify: {type(e).__name__}: {e}"
        found.append(Signature(domain, selector, covered, length, result, reason, b, tail))
    return found


def _unsigned_tail(verifier: Any, tags: dict[str, str], length: int | None) -> int:
    """How many bytes of the canonical body a signature's ``l=`` leaves unsigned."""
    if length is None:
        return 0
    from dkim.canonicalization import CanonicalizationPolicy, InvalidCanonicalizationPolicyError

    try:
        policy = CanonicalizationPolicy.from_c_value(tags.get("c", "simple/simple").encode())
    except InvalidCanonicalizationPolicyError:
        return 0  # dkimpy fails such a signature itself
    return max(0, len(policy.canonicalize_body(verifier.body)) - length)


_NAME = b"dkim-signature"
# a header line naming a DKIM signature (what dkimpy would list), in any case
_SIGNATURE_LINE = re.compile(rb"^dkim-signature[ \t]*:", re.IGNORECASE | re.MULTILINE)


def names_a_signature(raw: bytes) -> bool:
    """Whether *raw*'s header block has a DKIM-Signature line: dkimpy finds none in a mail
    without one."""
    return bool(_SIGNATURE_LINE.search(header_block(raw)))


def _signature_values_of(raw: bytes) -> list[str]:
    """The DKIM-Signature values of a header block dkimpy cannot read, to name them in
    verdicts (each is then ``fail``)."""
    import email

    message = email.message_from_bytes(raw.split(b"\n\n", 1)[0] + b"\n\n")
    return [str(v) for v in message.get_all("DKIM-Signature") or []]


def _why_not(asked: dict[str, Lookup]) -> tuple[str, str]:
    for name, lookup in asked.items():
        if lookup.record is None:
            return ("temperror" if lookup.temporary else "permerror"), lookup.reason or name
    return "fail", "the signature does not verify (headers changed after signing?)"


def _validation(message: str) -> str:
    if "body hash mismatch" in message:
        return "the body was changed after signing (body hash mismatch)"
    return f"does not verify: {message}"

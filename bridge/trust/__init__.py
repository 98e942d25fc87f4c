"""Trust: who vouches for each event (design §10).

:class:`Trust` checks a mail once (every DKIM signature, the trusted Authentication-Results,
the OpenPGP signature of an upload's ``.changes``) and gives each of its events an
``origin.auth`` verdict: ``pass`` only when a signature by a domain trusted for the parser
verifies, covers the required headers, and confirms the facts the event asserts
(:mod:`bridge.trust.facts`); ``fail`` when such a signature exists but is broken,
insufficient or contradicts the event; ``none`` when nothing usable vouches. Every verdict
says why.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import Message
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.events import Event
from bridge.mail import address, header
from bridge.trust.authresults import BorderResult, dkim_results, untrusted_ids
from bridge.trust.facts import rule_for, upload_confirmed
from bridge.trust.keys import KeyStore, read_key_file
from bridge.trust.openpgp import Gpgv
from bridge.trust.signatures import Signature, verify_all

if TYPE_CHECKING:
    from bridge.config import TrustConfig

__all__ = ["Trust", "auth"]

EVIDENCE_HEADERS = ("from", "subject", "message-id", "date")  # what facts are read from

# dkimpy logs each failed lookup at ERROR; the verdict's reason already says it.
logging.getLogger("dkimpy").setLevel(logging.CRITICAL)


def auth(
    verdict: str,
    reason: str,
    method: str | None = None,
    domain: str | None = None,
    selector: str | None = None,
) -> dict[str, Any]:
    """An ``origin.auth`` value."""
    return {
        "verdict": verdict,
        "method": method,
        "domain": domain,
        "selector": selector,
        "reason": reason,
    }


@dataclass
class Evidence:
    """What one mail offers, checked once for all its events."""

    message: Message
    raw: bytes
    signatures: list[Signature]
    border: list[BorderResult]
    trusted_servs: list[str]

    @cached_property
    def ignored_border(self) -> list[str]:
        """The authserv-ids of Authentication-Results headers that were not trusted: only a
        verdict's reason names them, so they are read only then."""
        values = [str(v) for v in self.message.get_all("Authentication-Results") or []]
        return untrusted_ids(values, self.trusted_servs)


class Trust:
    """The trust check the configuration describes."""

    def __init__(self, config: TrustConfig):
        self.config = config
        records = read_key_file(Path(config.dkim_keys).expanduser()) if config.dkim_keys else {}
        self.keys = KeyStore(
            records,
            dns=config.dns,
            timeout=config.dns_timeout,
            servers=config.dns_servers,
            port=config.dns_port,
        )
        self.gpgv = Gpgv(config.keyrings, config.gpgv, engine=config.openpgp)
        self.required = [h.lower() for h in config.required_headers]

    def assess(self, parser: str, message: Message, raw: bytes, events: Sequence[Event]) -> None:
        """Set ``origin.auth`` (and an upload's ``signed_by``) on each of *events*."""
        if not events:
            return
        if not self.config.verify:
            for event in events:
                _set_auth(event, auth("none", "verification is off ([trust] verify = false)"))
            return
        checked: dict[bytes | None, dict[str, Any]] = {}
        for event in events:
            signed_by = event.body.get("signed_by")
            if isinstance(signed_by, dict) and not (
                event.signed is None and signed_by.get("status") == "unsigned"
            ):
                # exactly the block the event was read from, each block checked once
                if event.signed not in checked:
                    checked[event.signed] = self.gpgv.check(event.signed)
                event.body["signed_by"] = dict(checked[event.signed])
                if "signer" in event.body:
                    event.body["signer"] = signatory(event.body["signed_by"])
        border = dkim_results(
            [str(v) for v in message.get_all("Authentication-Results") or []],
            self.config.authserv_ids,
        )
        evidence = Evidence(
            message,
            raw,
            verify_all(
                raw,
                self.keys,
                {d.lower() for domains in self.config.domains.values() for d in domains},
                self.config.dns_budget,
            ),
            border,
            self.config.authserv_ids,
        )
        for event in events:
            _set_auth(event, self.verdict(parser, event, evidence))

    def verdict(self, parser: str, event: Event, evidence: Evidence) -> dict[str, Any]:
        allowed = [d.lower() for d in self.config.domains.get(parser, [])]
        outcomes = [
            self._signature(parser, event, evidence, s)
            for s in evidence.signatures
            if s.domain in allowed
        ]
        for outcome in outcomes:
            if outcome["verdict"] == "pass":
                return outcome
        if upload_confirmed(event.body):
            signer = event.body["signed_by"]
            return auth(
                "pass",
                f"the .changes is signed by {signer['fingerprint']} ({signer['uid']}), a key in"
                " the configured keyrings",
                method="openpgp",
            )
        for outcome in outcomes:
            if outcome["verdict"] == "fail":
                return outcome
        if outcomes:
            return outcomes[0]
        unsigned_pass = [r for r in evidence.border if r.result == "pass" and r.domain in allowed]
        if unsigned_pass:
            return auth(
                "fail",
                f"{unsigned_pass[0].authserv_id} says DKIM passed for {unsigned_pass[0].domain},"
                " but the mail carries no signature by that domain to show what it covered",
                method="authres",
                domain=unsigned_pass[0].domain,
            )
        reason = self._nothing_usable(parser, allowed, evidence)
        signer = event.body.get("signed_by")
        if isinstance(signer, dict):  # an upload: say what became of its OpenPGP check too
            reason += f"; the .changes is {signer.get('status')} ({signer.get('reason')})"
        return auth("none", reason)

    def _signature(
        self, parser: str, event: Event, evidence: Evidence, signature: Signature
    ) -> dict[str, Any]:
        """The verdict one signature by an allowed domain gives the event."""
        method = "dkim"
        where = {"domain": signature.domain, "selector": signature.selector}
        if signature.result in ("temperror", "permerror"):
            vouched = [
                r
                for r in evidence.border
                if r.domain == signature.domain
                and r.result == "pass"
                and (not r.b or signature.b.startswith(r.b))
            ]
            if not vouched:
                kind = "temperror" if signature.result == "temperror" else "no key"
                return auth("none", f"{kind}: {signature.reason}", method, **where)
            method, verified_by = "authres", f"{vouched[0].authserv_id} verified"
        elif signature.result == "pass":
            verified_by = "verifies"
        else:
            return auth(
                "fail", f"DKIM signature by {signature.domain}: {signature.reason}", method, **where
            )
        problem = self._coverage(evidence.message, signature)
        if problem:
            return auth("fail", problem, method, **where)
        if signature.unsigned_tail:
            # the parsers read the whole body: what follows the signed bytes is anyone's
            return auth(
                "fail",
                f"DKIM signature by {signature.domain} signs only the first"
                f" {signature.body_length} bytes of the body (l=); {signature.unsigned_tail}"
                " more follow unsigned",
                method,
                **where,
            )
        signed = {
            name: header(evidence.message, name)
            for name in EVIDENCE_HEADERS
            if signature.covers(name)
        }
        contradiction = rule_for(parser)(event, signed)
        if contradiction:
            return auth("fail", contradiction, method, **where)
        return auth(
            "pass",
            f"DKIM signature by {signature.domain} (s={signature.selector}) {verified_by}, covers"
            f" {', '.join(self.required)} and confirms what the event says",
            method,
            **where,
        )

    def _coverage(self, message: Message, signature: Signature) -> str | None:
        missing = [h for h in self.required if not signature.covers(h)]
        if missing:
            return (
                f"DKIM signature by {signature.domain} does not cover"
                f" {', '.join(missing)} (h= lists {':'.join(signature.headers)})"
            )
        # A header the facts are read from must be signed in every copy: DKIM signs the
        # bottom-most, a reader takes the first.
        for name in dict.fromkeys([*self.required, *EVIDENCE_HEADERS]):
            if not signature.covers(name):
                continue
            present = len(message.get_all(name) or [])
            if present > signature.covers(name):
                covered = signature.covers(name)
                return f"the mail has {present} {name} headers; the signature covers {covered}"
        return None

    def _nothing_usable(self, parser: str, allowed: list[str], evidence: Evidence) -> str:
        if not allowed:
            return f"no domain is trusted for {parser} mail ([trust.domains] {parser})"
        others = sorted({s.domain for s in evidence.signatures})
        if others:
            return (
                f"signed only by {', '.join(others)}, not trusted for {parser} mail"
                f" (trusted: {', '.join(allowed)})"
            )
        if evidence.ignored_border:
            return (
                "no DKIM signature; Authentication-Results from untrusted authserv-id(s)"
                f" {', '.join(sorted(set(evidence.ignored_border)))} ignored"
            )
        return "no DKIM signature"


# gpgv found a valid signature by a known key (it may have expired or been revoked since)
SIGNED = ("good", "expired-key", "revoked-key")


def signatory(signed_by: dict[str, Any]) -> dict[str, str | None] | None:
    """The person whose key made a valid signature, from the key's uid: the uploader of
    record, who is the sponsor when someone else prepared the upload; None when no valid
    signature was found."""
    if signed_by.get("status") not in SIGNED or not signed_by.get("uid"):
        return None
    return address(signed_by["uid"])


def _set_auth(event: Event, verdict: dict[str, Any]) -> None:
    origin = event.body.get("origin")
    if isinstance(origin, dict):
        origin["auth"] = verdict

"""fedmsg's X.509 message signatures, checked as fedmsg checks them
(``fedmsg.crypto.x509_ng.validate``), for messages of other buses.

A signed message carries ``signature`` (RSA PKCS#1 v1.5 over SHA-1 of the message without
``signature`` and ``certificate``, in fedmsg's JSON: sorted keys, compact separators, ASCII)
and ``certificate`` (base64 PEM). It passes when the certificate was issued by the CA,
is within its validity and not revoked by the CRL, the signature verifies with its key,
and the certificate's common name may send the message's topic (``routing_policy``; a
topic the policy does not list passes unless ``routing_nitpicky``). Every verdict says why.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from bridge.config import FedmsgTrust
from bridge.errors import ConfigError
from bridge.events import dumps

CREDENTIALS = ("signature", "certificate")


@dataclass(frozen=True)
class Verdict:
    """Whether a message passed, who signed it (the certificate's common name), and why."""

    passed: bool
    signer: str | None
    reason: str

    def as_auth(self) -> dict[str, Any]:
        """The ``origin.auth`` of a journaled message, in the shape of the bridge's own."""
        return {
            "verdict": "pass" if self.passed else ("none" if self.signer is None else "fail"),
            "method": "x509" if self.signer is not None else None,
            "domain": None,
            "selector": self.signer,
            "reason": self.reason,
        }


class FedmsgVerifier:
    """Checks messages against one CA, its CRL and a routing policy."""

    def __init__(
        self,
        ca_certificate: str,
        crl: str = "",
        routing_policy: Mapping[str, Sequence[str]] | None = None,
        nitpicky: bool = False,
    ):
        try:
            self.ca = x509.load_pem_x509_certificate(Path(ca_certificate).read_bytes())
            self.crl = x509.load_pem_x509_crl(Path(crl).read_bytes()) if crl else None
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot load the fedmsg CA or CRL: {e}") from e
        if self.crl is not None and not self.crl.is_signature_valid(self.ca.public_key()):  # type: ignore[arg-type]
            raise ConfigError(f"the CRL {crl} is not signed by the CA {ca_certificate}")
        self.routing_policy = {t: list(names) for t, names in (routing_policy or {}).items()}
        self.nitpicky = nitpicky
        # a sender signs every message with one certificate: read and check it once (per
        # day: a certificate that expires meanwhile is checked again)
        self._certificates: dict[tuple[bytes, str], tuple[x509.Certificate, str | None]] = {}

    def verify(self, message: Mapping[str, Any], *, now: datetime | None = None) -> Verdict:
        if not all(isinstance(message.get(f), str) for f in CREDENTIALS):
            return Verdict(False, None, "unsigned: no signature and certificate")
        now = now or datetime.now(UTC)
        try:
            signature = base64.b64decode(message["signature"])
            pem = base64.b64decode(message["certificate"])
            certificate, problem = self._checked(pem, now)
        except (binascii.Error, ValueError) as e:
            return Verdict(False, "", f"the certificate cannot be read: {e}")
        signer = _name(certificate)
        if problem:
            return Verdict(False, signer, problem)
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            return Verdict(
                False, signer, "the certificate's key is not RSA (fedmsg signs with RSA)"
            )
        unsigned = {k: v for k, v in message.items() if k not in CREDENTIALS}
        try:
            key.verify(
                signature, dumps(unsigned).encode("utf-8"), padding.PKCS1v15(), hashes.SHA1()
            )
        except InvalidSignature:
            return Verdict(False, signer, f"the signature by {signer} does not match the message")
        topic = message.get("topic")
        if topic in self.routing_policy:
            if signer not in self.routing_policy[topic]:
                return Verdict(False, signer, f"routing_policy does not let {signer} send {topic}")
            return Verdict(True, signer, f"signed by {signer}, allowed {topic} by routing_policy")
        if self.nitpicky:
            return Verdict(
                False, signer, f"routing_policy names no sender of {topic} (routing_nitpicky)"
            )
        return Verdict(True, signer, f"signed by {signer} (routing_policy does not list {topic})")

    def _checked(self, pem: bytes, now: datetime) -> tuple[x509.Certificate, str | None]:
        key = (pem, f"{now:%Y-%m-%d}")
        found = self._certificates.get(key)
        if found is None:
            if len(self._certificates) > 1000:  # senders come and go: start over
                self._certificates.clear()
            certificate = x509.load_pem_x509_certificate(pem)
            found = (certificate, self._certificate_problem(certificate, now))
            self._certificates[key] = found
        return found

    def _certificate_problem(self, certificate: x509.Certificate, now: datetime) -> str | None:
        try:
            certificate.verify_directly_issued_by(self.ca)
        except (ValueError, TypeError, InvalidSignature):
            return f"the certificate of {_name(certificate)} was not issued by the CA"
        if not (certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc):
            return f"the certificate of {_name(certificate)} is not valid at {now:%Y-%m-%d}"
        if self.crl is not None:
            revoked = self.crl.get_revoked_certificate_by_serial_number(certificate.serial_number)
            if revoked is not None:
                return f"the certificate of {_name(certificate)} is revoked by the CRL"
        return None


def verifier_for(settings: FedmsgTrust) -> FedmsgVerifier | None:
    """The verifier fedmsg's keys in *settings* ask for (``[relay]``, an ``[upstream.NAME]``),
    or None when ``validate_signatures`` is off."""
    if not settings.validate_signatures:
        return None
    return FedmsgVerifier(
        settings.ca_cert_location,
        settings.crl_location,
        settings.routing_policy,
        settings.routing_nitpicky,
    )


def _name(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else certificate.subject.rfc4514_string()

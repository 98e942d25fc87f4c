"""The tests' own DKIM keys: sign mails as bugs.debian.org or anyone, publish the public
keys in a key file the bridge reads (``[trust] dkim_keys``). No real DNS is involved."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

SIGNED_HEADERS = ["From", "To", "Subject", "Date", "Message-ID", "References", "In-Reply-To"]


@dataclass(frozen=True)
class Key:
    selector: str
    domain: str
    private_pem: bytes
    record: str  # the TXT record text

    @property
    def name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


@cache
def key(domain: str, selector: str = "test") -> Key:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"
    return Key(selector, domain, pem, record)


def sign(
    raw: bytes, signer: Key, headers: list[str] | None = None, *, length: bool = False
) -> bytes:
    """*raw* with a DKIM-Signature by *signer* over *headers* prepended (with *length*, an
    ``l=`` tag: the body's length when signed)."""
    raw = raw.replace(b"\r\n", b"\n")
    signature = dkim.sign(
        raw,
        signer.selector.encode(),
        signer.domain.encode(),
        signer.private_pem,
        include_headers=[h.encode() for h in (headers or SIGNED_HEADERS)],
        length=length,
    )
    return signature.replace(b"\r\n", b"\n") + raw


def sign_without_from(raw: bytes, signer: Key, headers: list[str]) -> bytes:
    """A signature whose h= omits From: dkimpy refuses to make one (RFC 6376 requires
    From), so this repeats its signing steps without that check, as a sloppy or hostile
    signer would."""
    from dkim.canonicalization import CanonicalizationPolicy
    from dkim.crypto import parse_pem_private_key

    raw = raw.replace(b"\r\n", b"\n")
    signer_state = dkim.DKIM(raw)
    signer_state.hasher = hashlib.sha256
    policy = CanonicalizationPolicy.from_c_value(b"relaxed/simple")
    include = tuple(h.lower().encode() for h in headers)
    body_hash = base64.b64encode(
        hashlib.sha256(policy.canonicalize_body(signer_state.body)).digest()
    )
    fields = [
        (b"v", b"1"),
        (b"a", b"rsa-sha256"),
        (b"c", policy.to_c_value()),
        (b"d", signer.domain.encode()),
        (b"q", b"dns/txt"),
        (b"s", signer.selector.encode()),
        (b"h", b" : ".join(include)),
        (b"bh", body_hash),
        (b"b", b"0" * 60),
    ]
    value = signer_state.gen_header(
        fields, include, policy, b"DKIM-Signature", parse_pem_private_key(signer.private_pem)
    )
    return (b"DKIM-Signature: " + value).replace(b"\r\n", b"\n") + raw


def key_file(path: Path, *keys: Key) -> Path:
    """A ``dkim_keys`` file publishing *keys*."""
    lines = ["# the tests' own DKIM keys"] + [f"{k.name} {k.record}" for k in keys]
    path.write_text("\n".join(lines) + "\n")
    return path

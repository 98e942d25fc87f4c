"""Signed envelopes in fedmsg's X.509 scheme (``[bus.signing]``, opt-in).

fedmsg signs the JSON of a message (fedmsg's encoding: sorted keys, compact separators)
with ``"crypto": "x509"`` added, using RSA PKCS#1 v1.5 over SHA-1, and adds ``signature``
and ``certificate`` (base64, cut into 76-character lines, a newline after the last). A
consumer with ``validate_signatures = True`` checks the certificate against its CA and CRL
and the signature against the message it received, so an envelope altered on the way is
refused. The journal keeps envelopes unsigned; they are signed as they are sent.
"""

from __future__ import annotations

import base64
import functools
import json
from pathlib import Path

from bridge.errors import ConfigError
from bridge.events import dumps


class EnvelopeSigner:
    """Signs envelope JSON with one key and its certificate."""

    def __init__(self, key_path: str | Path, certificate_path: str | Path):
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        try:
            key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
            certificate = x509.load_pem_x509_certificate(Path(certificate_path).read_bytes())
        except (OSError, ValueError) as e:
            raise ConfigError(f"[bus.signing]: cannot load the key or certificate: {e}") from e
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigError("[bus.signing] key: fedmsg's X.509 scheme needs an RSA key")
        if certificate.public_key().public_numbers() != key.public_key().public_numbers():
            raise ConfigError("[bus.signing]: the certificate is not for this key")
        self._key = key
        self._certificate = _lines(
            base64.b64encode(certificate.public_bytes(serialization.Encoding.PEM)).decode()
        )

    def sign(self, envelope_json: str) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        message = json.loads(envelope_json)
        message["crypto"] = "x509"
        # SHA-1 because that is what fedmsg's scheme signs with; consumers verify the same.
        signature = self._key.sign(
            dumps(message).encode("utf-8"), padding.PKCS1v15(), hashes.SHA1()
        )
        message["signature"] = _lines(base64.b64encode(signature).decode())
        message["certificate"] = self._certificate
        return dumps(message)


def _lines(text: str, width: int = 76) -> str:
    """Base64 cut as fedmsg cuts it (M2Crypto's habit): lines of 76, a final newline."""
    return "\n".join(text[i : i + width] for i in range(0, len(text), width)) + "\n"


def signer_of(key: str, certificate: str) -> EnvelopeSigner | None:
    """The signer ``[bus.signing]`` asks for, or None when signing is off.

    The key and certificate are loaded once for as long as their files are unchanged: the
    check every command makes of its configuration and the sinks share one loading."""
    if not key and not certificate:
        return None
    if not (key and certificate):
        raise ConfigError("[bus.signing] needs both key and certificate, or neither")
    paths = [Path(key).expanduser(), Path(certificate).expanduser()]
    try:
        stamps = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths)
    except OSError:
        return EnvelopeSigner(*paths)  # which says what is missing, as a ConfigError
    return _loaded(stamps)


@functools.lru_cache(maxsize=4)
def _loaded(stamps: tuple[tuple[str, int, int], ...]) -> EnvelopeSigner:
    return EnvelopeSigner(*(Path(name) for name, _, _ in stamps))

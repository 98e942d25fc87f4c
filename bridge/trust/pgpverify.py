"""Checking a clearsigned ``.changes`` in this process: the signature's mathematics only.

gpgv costs a process per upload (about 5 ms of CPU, a quarter of a backfill). What gpgv
knows of a key (expired or revoked now, its primary user ID and fingerprint) does not change
from one signature to the next, while whether a signature holds does. So
:class:`~bridge.trust.openpgp.Gpgv` asks gpgv once per signing key and keeps its answer,
and for the next signature by that key only checks here that the signature is made by
that key over exactly the text the event was read from (RFC 4880 §5.2.4, §7.1), with the
``cryptography`` library.

Only the common case is checked here: one version 4 signature of canonical text, RSA,
DSA or Ed25519, a SHA-1 or SHA-2 digest, a key block holding the issuer once, armour whose
checksum holds and whose one header names the digest used. Anything else raises
:class:`Unsupported`, and gpgv decides.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

from bridge.mail import cleartext
from bridge.trust.keyring import (
    ARMOUR_END,
    ARMOUR_START,
    CREATED,
    PUBLIC_KEY,
    PUBLIC_SUBKEY,
    SIGNATURE,
    Unreadable,
    key_id_of,
    named_issuer,
    read_packets,
    subpackets,
    v4_fingerprint,
)

EXPIRES = 3  # a signature's own expiration time subpacket
CANONICAL_TEXT = 0x01
RSA, RSA_SIGN_ONLY, DSA, EDDSA = 1, 3, 17, 22
ED25519_OID = bytes.fromhex("2b06010401da470f01")
# OpenPGP's digest numbers, the name an armour header gives each, and the function
DIGESTS = {
    2: ("SHA1", hashes.SHA1, hashlib.sha1),
    8: ("SHA256", hashes.SHA256, hashlib.sha256),
    9: ("SHA384", hashes.SHA384, hashlib.sha384),
    10: ("SHA512", hashes.SHA512, hashlib.sha512),
    11: ("SHA224", hashes.SHA224, hashlib.sha224),
}


class Unsupported(ValueError):
    """Something this check does not decide: gpgv does."""


@dataclass(frozen=True)
class Signature:
    """The parts of a version 4 signature packet the check needs."""

    sig_type: int
    key_algorithm: int
    digest: int
    hashed: bytes  # version .. hashed subpackets: what the digest covers after the text
    left16: bytes
    values: tuple[int, ...]  # the signature's MPIs
    key_id: bytes
    fingerprint: bytes | None
    created: int


def signing_key(signed: bytes, key_blocks: bytes) -> tuple[Signature, bytes]:
    """The signature of *signed* and the body of the one key packet in *key_blocks* that
    can have made it; :class:`Unsupported` otherwise."""
    signature = read_signature(signed)
    try:
        candidates = [
            bytes(body)
            for tag, _, body in read_packets(key_blocks)
            if tag in (PUBLIC_KEY, PUBLIC_SUBKEY) and key_id_of(body) == signature.key_id
        ]
    except Unreadable as e:
        raise Unsupported(f"key blocks: {e}") from e
    if len(candidates) != 1:
        raise Unsupported(f"{len(candidates)} keys with the issuer's key ID")
    body = candidates[0]
    if signature.fingerprint is not None and signature.fingerprint != fingerprint_of(body):
        raise Unsupported("the issuer fingerprint names another key with that key ID")
    return signature, body


def fingerprint_of(key_body: bytes) -> bytes:
    if not key_body or key_body[0] != 4:
        raise Unsupported("not a version 4 key")
    return v4_fingerprint(key_body)


def holds(signed: bytes, signature: Signature, key_body: bytes) -> bool:
    """Whether *signature* by the key of *key_body* is good over exactly the text of
    *signed* that the events were read from."""
    _, hash_type, digest_of = DIGESTS[signature.digest]
    text = cleartext(signed).replace(b"\n", b"\r\n")
    trailer = signature.hashed + b"\x04\xff" + len(signature.hashed).to_bytes(4, "big")
    digest = digest_of(text + trailer).digest()
    if digest[:2] != signature.left16:
        return False
    algorithm, material = _public_material(key_body)
    if algorithm != signature.key_algorithm:
        return False
    try:
        if algorithm in (RSA, RSA_SIGN_ONLY):
            n, e = material
            (value,) = signature.values
            if value >= n:
                return False
            rsa_key = rsa.RSAPublicNumbers(e, n).public_key()
        elif algorithm == DSA:
            p, q, g, y = material
            dsa_key = dsa.DSAPublicNumbers(y, dsa.DSAParameterNumbers(p, q, g)).public_key()
        else:
            (point,) = material
            ed_key = ed25519.Ed25519PublicKey.from_public_bytes(point)
    except ValueError as e:  # a key this library will not take: gpgv may
        raise Unsupported(f"key: {e}") from e
    try:
        if algorithm in (RSA, RSA_SIGN_ONLY):
            size = (n.bit_length() + 7) // 8
            rsa_key.verify(value.to_bytes(size, "big"), digest, padding.PKCS1v15(),
                           Prehashed(hash_type()))  # fmt: skip
        elif algorithm == DSA:
            r, s = signature.values
            dsa_key.verify(encode_dss_signature(r, s), digest, Prehashed(hash_type()))
        else:  # Ed25519: the digest is the message signed
            r, s = signature.values
            if r.bit_length() > 256 or s.bit_length() > 256:
                return False
            ed_key.verify(r.to_bytes(32, "big") + s.to_bytes(32, "big"), digest)
    except InvalidSignature:
        return False
    return True


def key_created(key_body: bytes) -> int:
    """When a version 4 key says it was made (epoch seconds)."""
    return int.from_bytes(key_body[1:5], "big")


def read_signature(signed: bytes) -> Signature:
    """The one signature of a clearsigned block, if it is one this check follows."""
    body = _signature_packet(signed)
    if len(body) < 6 or body[0] != 4:
        raise Unsupported("not a version 4 signature")
    sig_type, key_algorithm, digest = body[1], body[2], body[3]
    if sig_type != CANONICAL_TEXT:
        raise Unsupported(f"signature type {sig_type:#x}")
    if digest not in DIGESTS:
        raise Unsupported(f"digest algorithm {digest}")
    if key_algorithm not in (RSA, RSA_SIGN_ONLY, DSA, EDDSA):
        raise Unsupported(f"public key algorithm {key_algorithm}")
    hashed_length = int.from_bytes(body[4:6], "big")
    at = 6 + hashed_length
    unhashed_length = int.from_bytes(body[at : at + 2], "big")
    left16 = body[at + 2 + unhashed_length : at + 4 + unhashed_length]
    try:
        hashed = list(subpackets(body[6:at]))
        unhashed = list(subpackets(body[at + 2 : at + 2 + unhashed_length]))
        values = tuple(_mpis(body[at + 4 + unhashed_length :], 1 if key_algorithm < 4 else 2))
    except (Unreadable, IndexError) as e:
        raise Unsupported(f"signature: {e}") from e
    kinds = [kind for kind, _, _ in hashed]
    if EXPIRES in kinds:  # gpgv says whether the signature has expired (EXPSIG)
        raise Unsupported("a signature with an expiration time")
    if any(critical and kind != CREATED for kind, critical, _ in hashed):
        raise Unsupported("a critical subpacket")  # gpgv knows which it honours
    if kinds.count(CREATED) != 1:
        raise Unsupported("not exactly one creation time")
    # the creation time only as signed; the issuer from either area, as gpgv looks it up
    created = next(value for kind, _, value in hashed if kind == CREATED)
    found = {kind: value for kind, _, value in unhashed}
    found.update((kind, value) for kind, _, value in hashed)
    key_id, fingerprint = named_issuer(found)
    if created is None or len(created) != 4 or key_id is None or len(key_id) != 8:
        raise Unsupported("a signature without its creation time or issuer")
    if len(left16) != 2:
        raise Unsupported("a signature cut short")
    return Signature(
        sig_type, key_algorithm, digest, bytes(body[:at]), bytes(left16), values, key_id,
        fingerprint, int.from_bytes(created, "big"),
    )  # fmt: skip


def _signature_packet(signed: bytes) -> bytes:
    """The signature packet under the armour, after the checks gpgv makes of the block."""
    lines = signed.split(b"\n")
    if not lines or lines[0].rstrip(b"\r") != b"-----BEGIN PGP SIGNED MESSAGE-----":
        raise Unsupported("not a clearsigned block")
    headers = []
    at = 1
    while at < len(lines) and lines[at].strip():
        headers.append(lines[at].rstrip(b"\r"))
        at += 1
    text, signature = [], None
    for number, line in enumerate(lines[at + 1 :], at + 1):
        plain = line.rstrip(b"\r")
        if plain == ARMOUR_START:
            signature = lines[number + 1 :]
            break
        if plain.startswith(b"-") and not plain.startswith(b"- "):
            raise Unsupported("a text line that starts with an unescaped dash")
        text.append(plain)
    if signature is None:
        raise Unsupported("no signature")
    armour = [line.rstrip(b"\r") for line in signature]
    try:
        end = armour.index(ARMOUR_END)
    except ValueError:
        raise Unsupported("an armoured signature without its end line") from None
    if any(line.strip() for line in armour[end + 1 :]):
        raise Unsupported("text after the signature")
    blank = next((n for n, line in enumerate(armour[:end]) if not line.strip()), None)
    if blank is None or any(not h.startswith(b"Version: ") for h in armour[:blank]):
        raise Unsupported("signature armour headers")
    data = [line.strip() for line in armour[blank + 1 : end] if line.strip()]
    if not data or not (data[-1].startswith(b"=") and len(data[-1]) == 5):
        raise Unsupported("armour without its checksum")
    try:
        packets_data = base64.b64decode(b"".join(data[:-1]), validate=True)
        checksum = base64.b64decode(data[-1][1:], validate=True)
    except ValueError as e:
        raise Unsupported(f"armour: {e}") from e
    if _crc24(packets_data) != int.from_bytes(checksum, "big"):
        raise Unsupported("the armour's checksum does not hold")
    try:
        packets = list(read_packets(packets_data))
    except Unreadable as e:
        raise Unsupported(f"signature: {e}") from e
    if [tag for tag, _, _ in packets] != [SIGNATURE]:
        raise Unsupported("not exactly one signature packet")
    body = bytes(packets[0][2])
    if len(body) > 3 and body[3] in DIGESTS:
        named = b"Hash: " + DIGESTS[body[3]][0].encode()
        if headers != [named]:
            raise Unsupported("armour headers other than the one naming the digest")
    return body


def _mpis(data: bytes, count: int) -> list[int]:
    values, at = [], 0
    for _ in range(count):
        bits = int.from_bytes(data[at : at + 2], "big")
        size = (bits + 7) // 8
        if at + 2 + size > len(data) or size == 0:
            raise Unreadable("an MPI cut short")
        values.append(int.from_bytes(data[at + 2 : at + 2 + size], "big"))
        at += 2 + size
    if at != len(data):
        raise Unreadable("bytes after the signature's values")
    return values


def _public_material(key_body: bytes) -> tuple[int, tuple]:
    """A version 4 key's algorithm and its public numbers (Ed25519: the 32-byte point)."""
    if len(key_body) < 6 or key_body[0] != 4:
        raise Unsupported("not a version 4 key")
    algorithm, rest = key_body[5], key_body[6:]
    try:
        if algorithm in (RSA, RSA_SIGN_ONLY):
            return algorithm, tuple(_mpis(rest, 2))
        if algorithm == DSA:
            return algorithm, tuple(_mpis(rest, 4))
        if algorithm == EDDSA:
            size = rest[0]
            if bytes(rest[1 : 1 + size]) != ED25519_OID:
                raise Unsupported("an EdDSA key on another curve")
            (point,) = _mpis(rest[1 + size :], 1)
            raw = point.to_bytes(33, "big")
            if raw[0] != 0x40:
                raise Unsupported("an Ed25519 point not in native form")
            return algorithm, (raw[1:],)
    except (Unreadable, IndexError) as e:
        raise Unsupported(f"key: {e}") from e
    raise Unsupported(f"public key algorithm {algorithm}")


def _crc24(data: bytes) -> int:
    """The armour checksum (RFC 4880 §6.1)."""
    crc = 0xB704CE
    for octet in data:
        crc = ((crc << 8) & 0xFFFFFF) ^ _CRC24_TABLE[((crc >> 16) ^ octet) & 0xFF]
    return crc


def _crc24_entry(index: int) -> int:
    crc = index << 16
    for _ in range(8):
        crc <<= 1
        if crc & 0x1000000:
            crc ^= 0x1864CFB
    return crc & 0xFFFFFF


_CRC24_TABLE = [_crc24_entry(n) for n in range(256)]

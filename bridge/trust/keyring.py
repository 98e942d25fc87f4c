"""Which keys the configured keyrings hold, read once, so gpgv reads kilobytes, not megabytes.

gpgv reads every keyring it is given from the start for each signature: with Debian's
developer keyrings (over 30 MB) that costs ~30 ms an upload, mostly spent learning that
an old upload's key is in none of them. This module walks the keyrings' OpenPGP packets
once and maps every key ID (primary keys and subkeys) to the key blocks that hold it.

A signature is read just far enough to name its issuer. When no keyring holds the issuer,
that is the verdict (unknown key), exactly what gpgv would have found; otherwise gpgv
checks the signature against a small keyring of the key blocks holding the issuer's key ID
(gpgv only ever uses those blocks). Anything this reader does not understand (a keybox
file, an odd signature) means gpgv is run on the full keyrings: the index only saves time,
it never decides that a signature is good.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

PUBLIC_KEY, PUBLIC_SUBKEY, SIGNATURE = 6, 14, 2
ISSUER, ISSUER_FINGERPRINT, CREATED = 16, 33, 2
ARMOUR_START = b"-----BEGIN PGP SIGNATURE-----"
ARMOUR_END = b"-----END PGP SIGNATURE-----"


class Unreadable(ValueError):
    """Not OpenPGP packets this reader follows: leave the question to gpgv."""


@dataclass(frozen=True)
class Issuer:
    """Who a signature says made it."""

    key_id: bytes  # 8 bytes
    fingerprint: bytes | None  # when the signature carries an issuer fingerprint
    created: int | None  # epoch seconds

    @property
    def name(self) -> str:
        """The key as gpgv names it: the fingerprint when known, else the key ID."""
        return (self.fingerprint or self.key_id).hex().upper()

    @property
    def signed_at(self) -> str | None:
        if self.created is None:
            return None
        return datetime.fromtimestamp(self.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class KeyringIndex:
    """Key ID → the key blocks holding it, over some keyring files as they were read."""

    files: list[str]
    stamps: list[tuple[int, int, int]] = field(default_factory=list)
    blocks: dict[bytes, list[tuple[int, int, int]]] = field(default_factory=dict)

    @classmethod
    def read(cls, files: list[str]) -> KeyringIndex:
        """Index *files*; :class:`Unreadable` if one is not a binary OpenPGP keyring."""
        index = cls(list(files))
        for number, path in enumerate(index.files):
            index.stamps.append(_stamp(path))
            with open(path, "rb") as fh:
                data = fh.read()
            try:
                for key_id, start, end in _key_ids(data):
                    index.blocks.setdefault(key_id, []).append((number, start, end))
            except IndexError as e:
                raise Unreadable(f"{path}: a packet cut short") from e
            except Unreadable as e:
                raise Unreadable(f"{path}: {e}") from e
        return index

    @classmethod
    def unread(cls, files: list[str]) -> KeyringIndex:
        """No keys, but the files' stamps: to tell when they change."""
        return cls(list(files), [_stamp(path) for path in files])

    def current(self) -> bool:
        """Whether the files are still those indexed (a package upgrade replaces them)."""
        try:
            return [_stamp(path) for path in self.files] == self.stamps
        except OSError:
            return False

    def holds(self, key_id: bytes) -> bool:
        return key_id in self.blocks

    def keyring_for(self, key_ids: list[bytes]) -> bytes:
        """The key blocks holding any of *key_ids*, as one small binary keyring."""
        wanted = sorted({block for key_id in key_ids for block in self.blocks.get(key_id, [])})
        parts = []
        for number, start, end in wanted:
            with open(self.files[number], "rb") as fh:
                fh.seek(start)
                parts.append(fh.read(end - start))
        return b"".join(parts)


def _stamp(path: str) -> tuple[int, int, int]:
    info = os.stat(path)
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def _key_ids(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(key ID, block start, block end) for every key and subkey of a binary keyring."""
    found: list[bytes] = []
    block_start = None
    for tag, start, body in read_packets(data):
        if tag == PUBLIC_KEY:
            if block_start is not None:
                yield from ((key_id, block_start, start) for key_id in found)
            block_start, found = start, []
        if tag in (PUBLIC_KEY, PUBLIC_SUBKEY):
            if block_start is None:
                raise Unreadable("a subkey before any primary key")
            found.append(key_id_of(body))
    if block_start is not None:
        yield from ((key_id, block_start, len(data)) for key_id in found)


def read_packets(data: bytes) -> Iterator[tuple[int, int, memoryview]]:
    """(tag, offset, body) of each packet; :class:`Unreadable` on what is not packets."""
    view = memoryview(data)
    position = 0
    while position < len(data):
        start = position
        first = data[position]
        if not first & 0x80:
            raise Unreadable(f"no OpenPGP packet at byte {position}")
        if first & 0x40:  # new format
            tag = first & 0x3F
            length, position = _new_length(data, position + 1)
        else:
            tag = (first >> 2) & 0x0F
            kind = first & 0x03
            if kind == 3:
                raise Unreadable("a packet of indeterminate length")
            size = (1, 2, 4)[kind]
            length = int.from_bytes(data[position + 1 : position + 1 + size], "big")
            position += 1 + size
        end = position + length
        if end > len(data):
            raise Unreadable(f"a packet at byte {start} runs past the end")
        yield tag, start, view[position:end]
        position = end


def _new_length(data: bytes, position: int) -> tuple[int, int]:
    if position >= len(data):
        raise Unreadable("a packet header cut short")
    octet = data[position]
    if octet < 192:
        return octet, position + 1
    if octet < 224:
        return ((octet - 192) << 8) + data[position + 1] + 192, position + 2
    if octet == 255:
        return int.from_bytes(data[position + 1 : position + 5], "big"), position + 5
    raise Unreadable("a packet of partial body lengths")


def v4_fingerprint(body: memoryview | bytes) -> bytes:
    """The fingerprint of a version 4 public key or subkey packet's body (RFC 4880 §12.2)."""
    return hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).digest()


def key_id_of(body: memoryview | bytes) -> bytes:
    """The key ID of a public key or subkey packet's body (RFC 4880 §12.2, RFC 9580 §5.5.4)."""
    version = body[0] if len(body) else 0
    if version == 4:
        return v4_fingerprint(body)[-8:]
    if version in (5, 6):
        prefix = b"\x9a" if version == 5 else b"\x9b"
        return hashlib.sha256(prefix + len(body).to_bytes(4, "big") + body).digest()[:8]
    if version in (2, 3) and len(body) > 10:
        bits = int.from_bytes(body[8:10], "big")  # the RSA modulus n follows the algorithm
        modulus = bytes(body[10 : 10 + (bits + 7) // 8])
        if len(modulus) >= 8:
            return modulus[-8:]
    raise Unreadable(f"a version {version} key packet")


def signature_issuer(signed: bytes) -> Issuer:
    """The issuer of the one signature of a clearsigned text; :class:`Unreadable` if it is not
    exactly one signature this reader follows."""
    try:
        return _issuer(signed)
    except IndexError as e:  # a length that points past the data
        raise Unreadable(f"a signature cut short: {e}") from e


def _issuer(signed: bytes) -> Issuer:
    packets = list(read_packets(_dearmour(signed)))
    if [tag for tag, _, _ in packets] != [SIGNATURE]:
        raise Unreadable("not exactly one signature packet")
    body = packets[0][2]
    version = body[0] if len(body) else 0
    if version == 3 and len(body) >= 15:
        return Issuer(bytes(body[7:15]), None, int.from_bytes(body[3:7], "big"))
    if version == 4 and len(body) >= 6:
        hashed_length = int.from_bytes(body[4:6], "big")
        hashed = body[6 : 6 + hashed_length]
        rest = 6 + hashed_length
        unhashed = body[rest + 2 : rest + 2 + int.from_bytes(body[rest : rest + 2], "big")]
        found = {kind: value for kind, _, value in subpackets(unhashed)}
        found.update((kind, value) for kind, _, value in subpackets(hashed))
        key_id, fingerprint = named_issuer(found)
        created = found.get(CREATED)
        if key_id is None or len(key_id) != 8:
            raise Unreadable("a signature that names no issuer")
        return Issuer(key_id, fingerprint, int.from_bytes(created, "big") if created else None)
    raise Unreadable(f"a version {version} signature")


def named_issuer(found: dict[int, bytes]) -> tuple[bytes | None, bytes | None]:
    """The key ID and (when given) the fingerprint of the issuer a signature's subpackets
    (type -> value, a hashed one outranking an unhashed one) name."""
    fingerprint = found.get(ISSUER_FINGERPRINT)
    fingerprint = fingerprint[1:] if fingerprint and fingerprint[:1] == b"\x04" else None
    return (fingerprint[-8:] if fingerprint else found.get(ISSUER)), fingerprint


def subpackets(area: memoryview | bytes) -> Iterator[tuple[int, bool, bytes]]:
    """Each subpacket of a signature's area: its type, whether it is marked critical, its
    value; :class:`Unreadable` past the area's end."""
    position = 0
    while position < len(area):
        octet = area[position]
        if octet < 192:
            length, position = octet, position + 1
        elif octet < 255:
            length = ((octet - 192) << 8) + area[position + 1] + 192
            position += 2
        else:
            length = int.from_bytes(area[position + 1 : position + 5], "big")
            position += 5
        if length == 0 or position + length > len(area):
            raise Unreadable("a signature subpacket runs past its area")
        kind = area[position]
        yield kind & 0x7F, bool(kind & 0x80), bytes(area[position + 1 : position + length])
        position += length


def _dearmour(signed: bytes) -> bytes:
    """The binary signature under a clearsigned text's one armoured signature block."""
    lines = signed.replace(b"\r\n", b"\n").split(b"\n")
    starts = [n for n, line in enumerate(lines) if line.rstrip() == ARMOUR_START]
    if len(starts) != 1:
        raise Unreadable("not exactly one armoured signature")
    body = lines[starts[0] + 1 :]
    try:
        end = next(n for n, line in enumerate(body) if line.rstrip() == ARMOUR_END)
    except StopIteration:
        raise Unreadable("an armoured signature without its end line") from None
    body = body[:end]
    blank = next((n for n, line in enumerate(body) if not line.strip()), None)
    if blank is None:
        raise Unreadable("armour without the blank line after its headers")
    data = [line.strip() for line in body[blank + 1 :] if line.strip()]
    if data and data[-1].startswith(b"=") and len(data[-1]) == 5:
        data = data[:-1]  # the CRC-24 line
    try:
        return base64.b64decode(b"".join(data), validate=True)
    except (binascii.Error, ValueError) as e:
        raise Unreadable(f"armour that is not base64: {e}") from e

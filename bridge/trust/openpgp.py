"""The OpenPGP signature on an upload's ``.changes``, checked with ``gpgv``.

The verdict comes from gpgv's machine-readable ``--status-fd`` lines, never from its exit
code alone: a valid signature by a key that has expired (``EXPKEYSIG``) is normal for
history and is told apart from a bad one (``BADSIG``) and from a key the keyrings do not
hold (``ERRSIG``/``NO_PUBKEY``). gpgv is handed only the key blocks that hold the
signature's issuer, found through an index of the keyrings (:mod:`bridge.trust.keyring`).

With the ``builtin`` engine (the default) gpgv is asked once per signing key and digest:
what it says of the key (expired, revoked, its user ID and fingerprint) is kept for ten
minutes, and the next signatures by that key are checked in this process
(:mod:`bridge.trust.pgpverify`), giving the verdict gpgv gives. A key's answer is kept only
when this process's check agreed with gpgv on that first signature; anything the check does
not follow goes to gpgv. ``[trust] openpgp = "gpgv"`` asks gpgv every time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bridge.mail import cleartext
from bridge.trust import pgpverify
from bridge.trust.keyring import KeyringIndex, Unreadable, signature_issuer

log = logging.getLogger(__name__)
GPGV_TIMEOUT = 20.0
KEY_FACTS_FOR = 600.0  # seconds gpgv's answer about a key is used (a key can expire)
# What each of gpgv's verdict keywords means, the same whichever engine decided
REASONS = {
    "GOODSIG": "a good signature by a key of the keyrings (GOODSIG)",
    "EXPKEYSIG": "a good signature by a key that has expired (EXPKEYSIG)",
    "REVKEYSIG": "a good signature by a key that has been revoked (REVKEYSIG)",
    "BADSIG": "the signature does not hold over the text (BADSIG)",
}


@dataclass(frozen=True)
class KeyFacts:
    """What gpgv said of a signing key, with a good signature by it."""

    status: str
    reason: str
    fingerprint: str | None
    uid: str | None
    learned_at: float


def verdict(
    status: str,
    reason: str,
    fingerprint: str | None = None,
    uid: str | None = None,
    signed_at: str | None = None,
) -> dict[str, Any]:
    """A ``signed_by`` value: ``status`` with ``fingerprint``, ``uid``, ``signed_at`` and
    why."""
    return {
        "status": status,
        "fingerprint": fingerprint,
        "uid": uid,
        "signed_at": signed_at,
        "reason": reason,
    }


class Gpgv:
    """Runs ``gpgv`` against fixed keyrings (with *indexed*, against just the key blocks
    that can have made the signature)."""

    def __init__(
        self,
        keyrings: Sequence[str],
        program: str = "gpgv",
        indexed: bool = True,
        engine: str = "builtin",
    ):
        self.keyrings = [os.path.abspath(k) for k in keyrings if k]
        self.program = program
        self.indexed = indexed
        self.engine = engine if indexed else "gpgv"  # the check needs the key blocks
        self.runs = 0  # how many times gpgv ran
        self._facts: dict[tuple[bytes, int], KeyFacts] = {}  # (key fingerprint, digest)
        self._blocks: dict[bytes, bytes] = {}  # issuer key ID -> its key blocks
        self._home: tempfile.TemporaryDirectory[str] | None = None
        self._lock = threading.RLock()  # mails may be checked on several threads
        self._index: KeyringIndex | None = None
        self._unindexable: KeyringIndex | None = None  # the stamps of files that failed
        self._small: dict[bytes, str] = {}  # issuer key ID -> its small keyring

    @property
    def home(self) -> str:
        """A private, empty home for gpgv (it must not touch ~/.gnupg), made on first use
        and removed with this object."""
        with self._lock:
            if self._home is None:
                self._home = tempfile.TemporaryDirectory(prefix="bridge-gpgv-")
            return self._home.name

    def check(self, signed: bytes | None) -> dict[str, Any]:
        """The verdict on the clearsigned block *signed* (None: the event was read from no
        signed text)."""
        if signed is None:
            return verdict(
                "unsigned", "the .changes was read from no clearsigned block in the mail's bytes"
            )
        if not self.keyrings:
            return verdict("unverified", "no keyring configured ([trust] keyrings)")
        keyrings = self.keyrings
        index = self._current_index() if self.indexed else None
        if index is not None:
            try:
                issuer = signature_issuer(signed)
            except Unreadable:  # gpgv reads it, against every keyring, and says why
                issuer = None
            if issuer is not None and not index.holds(issuer.key_id):
                return verdict(
                    "unknown-key",
                    f"no public key in the keyrings: none holds key {issuer.name}",
                    issuer.name,
                    None,
                    issuer.signed_at,
                )
            if issuer is not None:
                keyrings = [self._small_keyring(index, issuer.key_id)]
                if self.engine == "builtin":
                    decided = self._in_process(signed, issuer.key_id)
                    if decided is not None:
                        return decided
        found = self._run(signed, keyrings)
        if index is not None and issuer is not None and self.engine == "builtin":
            self._learn(signed, issuer.key_id, found)
        return found

    def _in_process(self, signed: bytes, key_id: bytes) -> dict[str, Any] | None:
        """gpgv's verdict, when gpgv has told what it knows of the signing key and the
        signature is one this process checks; None: ask gpgv."""
        try:
            blocks = self._blocks.get(key_id)
            if blocks is None:  # the keyrings were read again meanwhile
                return None
            signature, key = pgpverify.signing_key(signed, blocks)
            facts = self._facts.get((pgpverify.fingerprint_of(key), signature.digest))
            if facts is None or time.time() - facts.learned_at > KEY_FACTS_FOR:
                return None
            if not pgpverify.key_created(key) <= signature.created <= time.time() + 60:
                return None  # gpgv has words for a key newer than its signature, and clocks
            good = pgpverify.holds(signed, signature, key)
        except pgpverify.Unsupported:
            return None
        if good:
            signed_at = _time(str(signature.created))
            return verdict(facts.status, facts.reason, facts.fingerprint, facts.uid, signed_at)
        # as gpgv's BADSIG line says it: the signing key's ID and the key's user ID
        return verdict("bad", REASONS["BADSIG"], key_id.hex().upper(), facts.uid)

    def _learn(self, signed: bytes, key_id: bytes, found: dict[str, Any]) -> None:
        """Keep what gpgv said of the key of a good signature, if this process's check of
        that signature agrees with gpgv."""
        blocks = self._blocks.get(key_id)
        if found["status"] not in VALID or blocks is None:
            return
        try:
            signature, key = pgpverify.signing_key(signed, blocks)
            agrees = pgpverify.holds(signed, signature, key) and found["signed_at"] == _time(
                str(signature.created)
            )
        except pgpverify.Unsupported:
            return
        if not agrees:
            log.warning("openpgp: gpgv and the built-in check disagree on a signature by"
                        " key %s; gpgv decides for this key", key_id.hex().upper())  # fmt: skip
            return
        self._facts[(pgpverify.fingerprint_of(key), signature.digest)] = KeyFacts(
            found["status"], found["reason"], found["fingerprint"], found["uid"], time.time()
        )

    def _current_index(self) -> KeyringIndex | None:
        """The keyrings' index, read again when a keyring file has changed; None when they
        cannot be indexed (gpgv then reads them whole)."""
        with self._lock:
            if self._index is not None and self._index.current():
                return self._index
            if self._unindexable is not None and self._unindexable.current():
                return None
            try:
                self._index = KeyringIndex.read(self.keyrings)
                self._small, self._blocks, self._facts = {}, {}, {}
                return self._index
            except (OSError, Unreadable) as e:
                log.warning("keyrings not indexed, gpgv reads them whole: %s", e)
                self._index = None
                try:
                    self._unindexable = KeyringIndex.unread(self.keyrings)
                except OSError:
                    self._unindexable = None  # a missing file: gpgv will say so
                return None

    def _small_keyring(self, index: KeyringIndex, key_id: bytes) -> str:
        """A keyring file of the key blocks holding *key_id*, written once."""
        with self._lock:
            path = self._small.get(key_id)
            if path is None:
                data = index.keyring_for([key_id])
                self._blocks[key_id] = data
                path = os.path.join(self.home, f"ring-{hashlib.sha256(data).hexdigest()[:20]}")
                with open(path + ".new", "wb") as fh:
                    fh.write(data)
                os.replace(path + ".new", path)
                self._small[key_id] = path
            return path

    def _run(self, signed: bytes, keyrings: list[str]) -> dict[str, Any]:
        with (
            tempfile.NamedTemporaryFile(dir=self.home, suffix=".changes") as fh,
            tempfile.TemporaryDirectory(dir=self.home) as out,
        ):
            fh.write(signed)
            fh.flush()
            output = os.path.join(out, "signed")
            command = [self.program, "--homedir", self.home, "--status-fd", "1"]
            command += ["--output", output]
            for keyring in keyrings:
                command += ["--keyring", keyring]
            self.runs += 1
            try:
                run = subprocess.run(
                    [*command, fh.name], capture_output=True, timeout=GPGV_TIMEOUT, check=False
                )
            except FileNotFoundError:
                return verdict("unverified", f"{self.program} is not installed")
            except subprocess.TimeoutExpired:
                return verdict("unverified", f"{self.program} took over {GPGV_TIMEOUT:.0f}s")
            found = read_status(run.stdout.decode("utf-8", "replace"))
            if found["status"] in VALID and _verified_text(output) != cleartext(signed):
                # The event was read from cleartext(signed): it must be what gpgv verified.
                return verdict(
                    "bad",
                    "the text gpgv verified is not the text the event was read from",
                    found["fingerprint"],
                    found["uid"],
                    found["signed_at"],
                )
            return found


VALID = ("good", "expired-key", "revoked-key")  # a signature over the text that verifies


def _verified_text(path: str) -> bytes | None:
    """The text gpgv wrote as verified, normalised as :func:`cleartext` gives signed text."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    return b"\n".join(line.rstrip(b" \t\r") for line in lines)


def read_status(output: str) -> dict[str, Any]:
    """The verdict gpgv's status lines give."""
    lines = [line.split(" ", 2)[1:] for line in output.splitlines() if line.startswith("[GNUPG:] ")]
    by_keyword: dict[str, list[str]] = {}
    for keyword, *rest in lines:
        by_keyword.setdefault(keyword, rest[0].split(" ") if rest else [])
    valid = by_keyword.get("VALIDSIG")
    fingerprint = (valid[-1] if len(valid or []) >= 10 else valid[0]) if valid else None
    signed_at = _time(valid[2]) if valid and len(valid) > 2 else None
    for keyword, status in (
        ("BADSIG", "bad"),
        ("REVKEYSIG", "revoked-key"),
        ("EXPKEYSIG", "expired-key"),
        ("GOODSIG", "good"),
    ):
        if keyword in by_keyword:
            fields = by_keyword[keyword]
            uid = " ".join(fields[1:]) or None
            fingerprint = fingerprint or (fields[0] if fields else None)
            if status == "good" and not valid:
                return verdict("bad", "GOODSIG without VALIDSIG", fingerprint, uid)
            return verdict(status, REASONS[keyword], fingerprint, uid, signed_at)
    if "ERRSIG" in by_keyword or "NO_PUBKEY" in by_keyword:
        fields = by_keyword.get("ERRSIG") or by_keyword.get("NO_PUBKEY") or []
        key = fields[6] if len(fields) > 6 and fields[6] != "-" else (fields[0] if fields else None)
        when = _time(fields[4]) if len(fields) > 4 else None
        return verdict("unknown-key", "gpgv: no public key in the keyrings", key, None, when)
    if "NODATA" in by_keyword:
        return verdict("bad", "gpgv: the signature is unreadable (NODATA)")
    return verdict("bad", "gpgv found no valid signature")


def _time(value: str) -> str | None:
    """gpgv's times: epoch seconds, or ISO 8601 basic form."""
    try:
        if value.isdigit():
            moment = datetime.fromtimestamp(int(value), UTC)
        else:
            moment = datetime.strptime(value, "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

"""``signed_by``: the OpenPGP signature of an upload's ``.changes``, checked with gpgv against
keyrings the tests make with gpg (a good key, one expired since it signed, a revoked one,
and one the keyring does not hold), and the real corpus against Debian's keyrings. The
keyring index that hands gpgv only the issuer's key blocks must give the verdicts gpgv
gives on the whole keyrings."""

from __future__ import annotations

import base64
import collections
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.config import DEBIAN_KEYRINGS, TrustConfig
from bridge.pipeline import Pipeline
from bridge.trust import Trust
from bridge.trust.keyring import KeyringIndex, Unreadable, signature_issuer
from bridge.trust.openpgp import Gpgv
from parsers.dak import DakParser
from tests.helpers import require

CHANGES = """\
Format: 1.8
Date: Sat, 27 Aug 2022 20:10:26 +0100
Source: hello
Binary: hello
Architecture: source
Version: 2.10-3
Distribution: unstable
Urgency: medium
Maintainer: Santiago Vila <sanvila@debian.org>
Changed-By: {uid}
Changes:
 hello (2.10-3) unstable; urgency=medium
 .
   * A fix.
Checksums-Sha256:
 811db2256cc31e32d28966a98163c69d14e2b426b667fe0ef575d19db4149ea3 1914 hello_2.10-3.dsc
Files:
 fcb450cf81915f57e447f7ef1573b165 1914 devel optional hello_2.10-3.dsc
"""


def accepted_mail(signed: str) -> bytes:
    head = (
        "From: Debian FTP Masters <ftpmaster@ftp-master.debian.org>\n"
        "To: debian-devel-changes@lists.debian.org\n"
        "Subject: Accepted hello 2.10-3 (source) into unstable\n"
        "Message-Id: <E1oS1p0-00BEVf-FV@fasolo.debian.org>\n"
        "Date: Sat, 27 Aug 2022 19:49:38 +0000\n"
        "X-DAK: dak process-upload\n"
        "Content-Type: text/plain; charset=utf-8\n\n"
    )
    return (head + signed).encode()


class Keys:
    """A GnuPG home with signing keys, and a keyring of some of their public keys."""

    def __init__(self, home: Path):
        require(shutil.which("gpg") is not None, "gpg (package gnupg) is not installed")
        require(shutil.which("gpgv") is not None, "gpgv (package gpgv) is not installed")
        self.home = home
        home.mkdir(mode=0o700)

    def gpg(self, *args: str, data: bytes | None = None, when: str | None = None) -> bytes:
        faked = [f"--faked-system-time={when}!"] if when else []
        run = subprocess.run(
            [
                "gpg",
                "--homedir",
                str(self.home),
                "--batch",
                "--yes",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                *faked,
                *args,
            ],
            input=data,
            capture_output=True,
            timeout=120,
            check=True,
        )
        return run.stdout

    def new(self, uid: str, expires: str = "0", when: str | None = None) -> str:
        self.gpg("--quick-gen-key", uid, "ed25519", "sign", expires, when=when)
        listing = self.gpg("--with-colons", "--list-keys", uid).decode()
        return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))

    def clearsign(self, uid: str, text: str, when: str | None = None) -> str:
        return self.gpg("--local-user", uid, "--clearsign", data=text.encode(), when=when).decode()

    def revoke(self, fingerprint: str) -> None:
        # gpg writes a revocation certificate for every new key; its armour is guarded by a
        # leading ":" so it is not imported by accident
        cert = (self.home / "openpgp-revocs.d" / f"{fingerprint}.rev").read_text()
        self.gpg("--import", data=cert.replace(":-----BEGIN", "-----BEGIN").encode())

    def add_signing_subkey(self, fingerprint: str) -> str:
        """A new signing subkey of the key *fingerprint*: its key ID."""
        self.gpg("--quick-add-key", fingerprint, "ed25519", "sign")
        listing = self.gpg("--with-colons", "--list-keys", fingerprint).decode()
        return [line.split(":")[4] for line in listing.splitlines() if line.startswith("sub")][-1]

    def keyring(self, path: Path, *fingerprints: str) -> Path:
        path.write_bytes(self.gpg("--export", *fingerprints))
        return path


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Mails signed every way that matters, and the keyring that judges them."""
    keys = Keys(tmp_path_factory.mktemp("gnupg") / "home")
    good = keys.new("Good Uploader <good@example.org>")
    old = keys.new("Old Uploader <old@example.org>", "1d", when="20200101T000000")
    gone = keys.new("Gone Uploader <gone@example.org>")
    stranger = keys.new("Stranger <stranger@example.org>")
    texts = {
        "good": keys.clearsign(good, CHANGES.format(uid="Good Uploader <good@example.org>")),
        "expired-key": keys.clearsign(
            old, CHANGES.format(uid="Old Uploader <old@example.org>"), when="20200101T120000"
        ),
        "revoked-key": keys.clearsign(gone, CHANGES.format(uid="Gone Uploader <gone@example.org>")),
        "unknown-key": keys.clearsign(
            stranger, CHANGES.format(uid="Stranger <stranger@example.org>")
        ),
    }
    texts["bad"] = texts["good"].replace("   * A fix.", "   * A backdoor.")
    texts["unsigned"] = CHANGES.format(uid="Nobody <nobody@example.org>")
    keys.revoke(gone)
    ring = keys.keyring(tmp_path_factory.mktemp("ring") / "uploaders.gpg", good, old, gone)
    return {
        "texts": texts,
        "keyring": ring,
        "good": good,
        "old": old,
        "stranger": stranger,
        "keys": keys,
    }


def without_reason(verdict: dict) -> dict:
    return {k: v for k, v in verdict.items() if k != "reason"}


def signed_by(keyring: Path, raw: bytes) -> tuple[dict, dict]:
    pipe = Pipeline([DakParser()], Trust(TrustConfig(dns=False, keyrings=[str(keyring)])))
    (event,) = pipe.process(raw).events
    return event.body["signed_by"], event.body["origin"]["auth"]


@pytest.mark.parametrize(
    "status", ["good", "expired-key", "revoked-key", "unknown-key", "bad", "unsigned"]
)
def test_signed_by_reads_gpgvs_status_lines(signed, status):
    verdict, auth = signed_by(signed["keyring"], accepted_mail(signed["texts"][status]))
    assert verdict["status"] == status, verdict
    assert verdict["reason"]
    if status == "good":
        assert verdict["fingerprint"] == signed["good"]
        assert verdict["uid"] == "Good Uploader <good@example.org>"
        assert verdict["signed_at"].endswith("Z")
        # no DKIM signature, but the uploader's signature vouches for the upload
        assert (auth["verdict"], auth["method"]) == ("pass", "openpgp")
    else:
        assert auth["verdict"] == "none", auth
    if status == "expired-key":
        assert verdict["fingerprint"] == signed["old"]
        assert verdict["signed_at"].startswith("2020-01-01T12:00")


def test_a_sponsored_upload_names_its_sponsor_as_signer_and_among_the_people(signed):
    """Changed-By prepared the upload; the Good Uploader's key signed it (a sponsor)."""
    text = CHANGES.format(uid="Nadia Newcomer <nadia@example.org>")
    raw = accepted_mail(signed["keys"].clearsign(signed["good"], text))
    pipe = Pipeline([DakParser()], Trust(TrustConfig(dns=False, keyrings=[str(signed["keyring"])])))
    (event,) = pipe.process(raw).events
    assert event.body["changed_by"] == {"name": "Nadia Newcomer", "email": "nadia@example.org"}
    assert event.body["agent"] == event.body["changed_by"]
    assert event.body["signer"] == {"name": "Good Uploader", "email": "good@example.org"}
    assert event.people == (
        "Nadia Newcomer", "nadia@example.org", "Good Uploader", "good@example.org"
    )  # fmt: skip
    # the Maintainer (Santiago Vila) did not act
    assert "sanvila@debian.org" not in event.people


@pytest.mark.parametrize(
    ("status", "signer"),
    [
        ("good", "good@example.org"),
        ("expired-key", "old@example.org"),
        ("revoked-key", "gone@example.org"),
        ("unknown-key", None),
        ("bad", None),
        ("unsigned", None),
    ],
)
def test_the_signer_is_named_only_for_a_valid_signature(signed, status, signer):
    pipe = Pipeline([DakParser()], Trust(TrustConfig(dns=False, keyrings=[str(signed["keyring"])])))
    (event,) = pipe.process(accepted_mail(signed["texts"][status])).events
    assert (event.body["signer"] or {}).get("email") == signer
    assert (signer in event.people) if signer else len(event.people) == 2


@pytest.mark.parametrize(
    "status", ["good", "expired-key", "revoked-key", "unknown-key", "bad", "unsigned"]
)
def test_the_keyring_index_gives_gpgvs_verdict_on_the_whole_keyring(signed, status):
    text = signed["texts"][status].encode()
    start = text.find(b"-----BEGIN PGP SIGNED MESSAGE-----")
    block = text[start:] if start >= 0 else None
    indexed = Gpgv([str(signed["keyring"])]).check(block)
    whole = Gpgv([str(signed["keyring"])], indexed=False).check(block)
    assert without_reason(indexed) == without_reason(whole)
    assert indexed["status"] == status
    if status == "unknown-key":  # decided by the index: it still names the key and the time
        assert indexed["fingerprint"] == signed["stranger"]
        assert indexed["signed_at"].endswith("Z")
        assert signed["stranger"] in indexed["reason"]


def test_a_signature_by_a_subkey_is_checked_against_its_primary_keys_block(tmp_path):
    keys = Keys(tmp_path / "home")
    primary = keys.new("Sub Signer <sub@example.org>")
    subkey = keys.add_signing_subkey(primary)
    text = keys.clearsign(subkey + "!", CHANGES.format(uid="Sub Signer <sub@example.org>"))
    issuer = signature_issuer(text.encode())
    assert issuer.key_id.hex().upper() == subkey != primary[-16:]
    ring = keys.keyring(tmp_path / "ring.gpg", primary)
    assert KeyringIndex.read([str(ring)]).holds(issuer.key_id)
    verdict = Gpgv([str(ring)]).check(text.encode())
    assert verdict["status"] == "good", verdict


def test_a_replaced_keyring_is_indexed_again(signed, tmp_path):
    ring = tmp_path / "ring.gpg"
    ring.write_bytes(signed["keyring"].read_bytes())
    gpgv = Gpgv([str(ring)])
    stranger = signed["texts"]["unknown-key"].encode()
    assert gpgv.check(stranger)["status"] == "unknown-key"
    keys = signed["keys"]
    replacement = tmp_path / "new.gpg"
    keys.keyring(replacement, signed["good"], signed["stranger"])
    os.replace(replacement, ring)  # as a package upgrade does
    assert gpgv.check(stranger)["status"] == "good"


def test_a_keyring_the_index_cannot_read_is_left_to_gpgv(signed, tmp_path):
    keybox = signed["keys"].home / "pubring.kbx"  # gpg's own format: gpgv reads it, we do not
    require(keybox.exists(), "this gpg keeps no pubring.kbx")
    with pytest.raises(Unreadable):
        KeyringIndex.read([str(keybox)])
    verdict = Gpgv([str(keybox)]).check(signed["texts"]["good"].encode())
    assert verdict["status"] == "good", verdict


@pytest.mark.parametrize(
    "damage",
    [
        lambda t: t.replace("-----END PGP SIGNATURE-----", ""),
        lambda t: (
            t[: t.index("-----BEGIN PGP SIGNATURE-----") + 40] + "\n-----END PGP SIGNATURE-----"
        ),
        lambda t: t.replace(
            "-----BEGIN PGP SIGNATURE-----\n\n", "-----BEGIN PGP SIGNATURE-----\n\n!!\n"
        ),
        lambda t: t + t[t.index("-----BEGIN PGP SIGNATURE-----") :],
    ],
    ids=["no-end", "cut-short", "not-base64", "two-signatures"],
)
def test_a_signature_the_index_cannot_read_gets_gpgvs_own_verdict(signed, damage):
    text = damage(signed["texts"]["good"]).encode()
    with pytest.raises(Unreadable):
        signature_issuer(text)
    indexed = Gpgv([str(signed["keyring"])]).check(text)
    whole = Gpgv([str(signed["keyring"])], indexed=False).check(text)
    assert indexed == whole


def test_without_a_keyring_signed_by_is_unverified(signed):
    pipe = Pipeline([DakParser()], Trust(TrustConfig(dns=False, keyrings=[])))
    (event,) = pipe.process(accepted_mail(signed["texts"]["good"])).events
    assert event.body["signed_by"]["status"] == "unverified"
    assert "no keyring" in event.body["signed_by"]["reason"]


def gpgv_by_hand(path: Path, keyrings: list[str]) -> str:
    """The first verdict keyword gpgv prints for *path*, read without the bridge's code."""
    command = ["gpgv", "--status-fd", "1"]
    for keyring in keyrings:
        command += ["--keyring", keyring]
    out = subprocess.run([*command, str(path)], capture_output=True, text=True, timeout=60)
    keywords = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("[GNUPG:]")]
    wanted = ("GOODSIG", "EXPKEYSIG", "REVKEYSIG", "BADSIG", "ERRSIG", "NODATA")
    return next((k for k in keywords if k in wanted), "none")


def test_the_corpus_changes_files_against_debians_keyrings(corpus: Path, capsys):
    keyrings = [k for k in DEBIAN_KEYRINGS if os.path.exists(k)]
    require(bool(keyrings), "Debian's keyrings are not installed (package debian-keyring)")
    gpgv, whole = Gpgv(keyrings), Gpgv(keyrings, indexed=False)
    ours: collections.Counter[str] = collections.Counter()
    pairs: collections.Counter[tuple[str, str]] = collections.Counter()
    for path in sorted(corpus.glob("changes/*.changes")):
        data = path.read_bytes()
        start = data.find(b"-----BEGIN PGP SIGNED MESSAGE-----")
        block = data[start:] if start >= 0 else None
        verdict = gpgv.check(block)
        assert without_reason(verdict) == without_reason(whole.check(block)), path
        status = verdict["status"]
        ours[status] += 1
        pairs[(status, gpgv_by_hand(path, keyrings))] += 1
    with capsys.disabled():
        print(f"\nsigned_by over the corpus's .changes: {dict(ours)}; against gpgv: {dict(pairs)}")
    expected = {
        "good": "GOODSIG",
        "expired-key": "EXPKEYSIG",
        "revoked-key": "REVKEYSIG",
        "bad": "BADSIG",
        "unknown-key": "ERRSIG",
        "unsigned": "NODATA",
    }
    assert all(expected[ours_] == theirs for ours_, theirs in pairs), pairs
    assert sum(ours.values()) == 98


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_under_the_armour_give_an_issuer_or_unreadable(packet):
    armour = base64.b64encode(packet).decode()
    text = f"-----BEGIN PGP SIGNATURE-----\n\n{armour}\n-----END PGP SIGNATURE-----\n"
    try:
        issuer = signature_issuer(text.encode())
    except Unreadable:
        return
    assert len(issuer.key_id) == 8


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_as_a_keyring_give_an_index_or_unreadable(data):
    with tempfile.NamedTemporaryFile() as ring:
        ring.write(data)
        ring.flush()
        try:
            index = KeyringIndex.read([ring.name])
        except Unreadable:
            return
    assert all(len(key_id) == 8 for key_id in index.blocks)


def block_of(text: str | bytes) -> bytes | None:
    data = text.encode() if isinstance(text, str) else text
    start = data.find(b"-----BEGIN PGP SIGNED MESSAGE-----")
    return data[start:] if start >= 0 else None


@pytest.mark.parametrize(
    "status", ["good", "expired-key", "revoked-key", "unknown-key", "bad", "unsigned"]
)
def test_the_builtin_check_gives_gpgvs_verdict_without_running_it_again(signed, status):
    """gpgv is asked once per signing key; the next signature by that key is checked in
    this process, and the verdict is the one gpgv gives, reason included."""
    ring = [str(signed["keyring"])]
    texts = signed["texts"]
    reference = Gpgv(ring, engine="gpgv")
    builtin = Gpgv(ring)
    # a first signature by the same key teaches the built-in check what gpgv knows of it
    first = {"bad": "good"}.get(status, status)
    assert builtin.check(block_of(texts[first])) == reference.check(block_of(texts[first]))
    runs = builtin.runs
    verdict = builtin.check(block_of(texts[status]))
    assert verdict == reference.check(block_of(texts[status]))
    assert verdict["status"] == status
    if status in ("good", "expired-key", "revoked-key", "bad"):
        assert builtin.runs == runs  # decided in this process
        assert runs == 1


def test_a_subkeys_signatures_are_checked_in_process_after_the_first(tmp_path):
    keys = Keys(tmp_path / "home")
    primary = keys.new("Sub Signer <sub@example.org>")
    subkey = keys.add_signing_subkey(primary)
    ring = [str(keys.keyring(tmp_path / "ring.gpg", primary))]
    texts = [
        keys.clearsign(subkey + "!", CHANGES.format(uid=f"Sub Signer {n} <sub@example.org>"))
        for n in range(3)
    ]
    texts.append(texts[2].replace("   * A fix.", "   * A backdoor."))
    reference, builtin = Gpgv(ring, engine="gpgv"), Gpgv(ring)
    found = [builtin.check(block_of(t)) for t in texts]
    assert found == [reference.check(block_of(t)) for t in texts]
    assert [v["status"] for v in found] == ["good", "good", "good", "bad"]
    assert found[1]["fingerprint"] == primary and builtin.runs == 1


def test_the_builtin_check_gives_gpgvs_verdicts_on_the_corpus_and_altered_copies(corpus: Path):
    from bridge.trust import pgpverify

    keyrings = [k for k in DEBIAN_KEYRINGS if os.path.exists(k)]
    require(bool(keyrings), "Debian's keyrings are not installed (package debian-keyring)")
    reference, builtin = Gpgv(keyrings, engine="gpgv"), Gpgv(keyrings)
    blocks = [block_of(p.read_bytes()) for p in sorted(corpus.glob("changes/*.changes"))]
    # each copy altered in its text, as a forger would: the signature no longer holds
    altered = [
        b.replace(b"\nSource: ", b"\nSource: forged-", 1) if b is not None else None for b in blocks
    ]
    statuses: collections.Counter[str] = collections.Counter()
    for _ in range(2):  # the second time round, every known key has been asked once
        for block in blocks + altered:
            ours = builtin.check(block)
            assert ours == reference.check(block), block[:200] if block else block
            statuses[ours["status"]] += 1
    assert statuses["bad"] > 0 and statuses["expired-key"] > 0 and statuses["good"] > 0
    # gpgv ran once per signing key and digest of a valid signature, not once a signature
    valid = [b for b in blocks if reference.check(b)["status"] in ("good", "expired-key")]
    keys = {(signature_issuer(b).key_id, pgpverify.read_signature(b).digest) for b in valid}
    assert builtin.runs == len(keys) < len(valid)
    print(f"\nbuilt-in check: {dict(statuses)}; gpgv ran {builtin.runs} times, the reference"
          f" {reference.runs}")  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=300), st.integers(min_value=0, max_value=200))
def test_any_damage_to_a_signature_is_bad_or_left_to_gpgv_never_an_error(signed, junk, at):
    from bridge.trust import pgpverify

    block = block_of(signed["texts"]["good"])
    start = block.index(b"-----BEGIN PGP SIGNATURE-----\n") + 31
    armour_start = block.index(b"\n\n", start) + 2 if b"\n\n" in block[start:] else start
    body = base64.b64decode(b"".join(block[armour_start:].split(b"\n")[:-3]) + b"==")
    damaged = body[:at] + junk + body[at + len(junk) :]
    text = block[:armour_start] + base64.encodebytes(damaged) + b"-----END PGP SIGNATURE-----\n"
    key_blocks = signed["keyring"].read_bytes()
    try:
        signature, key = pgpverify.signing_key(text, key_blocks)
        assert pgpverify.holds(text, signature, key) in (True, False)
    except pgpverify.Unsupported:
        pass


@pytest.mark.parametrize(
    "options",
    [["--sig-notation", "!policy@example.org=strict"], ["--default-sig-expire", "2d"]],
    ids=["critical-notation", "expiring-signature"],
)
def test_a_signature_the_builtin_check_does_not_follow_goes_to_gpgv(signed, options):
    """A critical subpacket or a signature's own expiry: gpgv knows what they mean."""
    ring = [str(signed["keyring"])]
    builtin = Gpgv(ring)
    builtin.check(block_of(signed["texts"]["good"]))  # the key is known now
    keys, good = signed["keys"], signed["good"]
    changes = CHANGES.format(uid="Good Uploader <good@example.org>").encode()
    text = keys.gpg("--local-user", good, *options, "--clearsign", data=changes)
    runs = builtin.runs
    verdict = builtin.check(block_of(text))
    assert builtin.runs == runs + 1  # asked gpgv
    assert verdict == Gpgv(ring, engine="gpgv").check(block_of(text))


def test_the_corpus_events_are_the_same_mail_by_mail_with_either_engine(corpus: Path):
    """The built-in check changes nothing an event says: every corpus mail's events (topic,
    dedup key, index, body with signed_by) are those the gpgv-every-time pipeline makes."""
    keyrings = [k for k in DEBIAN_KEYRINGS if os.path.exists(k)]
    require(bool(keyrings), "Debian's keyrings are not installed (package debian-keyring)")

    def pipeline(engine: str) -> Pipeline:
        trust = Trust(TrustConfig(dns=False, keyrings=keyrings, openpgp=engine))
        return Pipeline([DakParser()], trust)

    reference, builtin = pipeline("gpgv"), pipeline("builtin")
    uploads = 0
    for path in sorted(corpus.glob("mails/dak-*/*.eml")) * 2:  # twice: keys known the 2nd time
        raw = path.read_bytes()
        ours, theirs = builtin.process(raw), reference.process(raw)
        assert [
            (e.topic, e.dedup_key, e.packages, e.bugs, e.people, e.occurred_at, e.body)
            for e in ours.events
        ] == [
            (e.topic, e.dedup_key, e.packages, e.bugs, e.people, e.occurred_at, e.body)
            for e in theirs.events
        ], path
        uploads += sum(1 for e in ours.events if "signed_by" in e.body)
    assert uploads > 100
    assert builtin.trust.gpgv.runs < reference.trust.gpgv.runs

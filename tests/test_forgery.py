"""One reading of each mail: the forgeries that once passed trust because the trust check
and the parsers read the same mail two ways (a bare CR in a header line, a ``.changes`` in a
charset no OpenPGP tool reads), and the forgery that pre-empted the real mail by arriving
first with its dedup key. Each is built here with the tests' own DKIM and GnuPG keys, and
none may ever be ``pass``."""

from __future__ import annotations

import base64
import mailbox
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.config import TrustConfig
from bridge.events import Event, Naming
from bridge.journal import JOURNAL_FILE, SqliteJournal
from bridge.pipeline import FAILED, Pipeline
from bridge.trust import Trust
from parsers.dak import DakParser
from parsers.debbugs import DebbugsParser
from tests import dkimkit
from tests.helpers import (
    Server,
    bridge,
    config_file,
    counters,
    journal_events,
    open_journal_at,
    postgres_schema,
    send,
    start_data,
    wait_until,
)
from tests.test_openpgp import CHANGES, Keys, accepted_mail
from tests.test_trust import BTS, CLOSURE, FOLLOWUP, STRANGER

GOOD_UID = "Good Uploader <good@example.org>"
# What a forger wants the bus to say: the same upload, closing a bug it does not close,
# made by someone else.
FORGED_CHANGES = CHANGES.format(uid="Mallory <mallory@example.org>").replace(
    "Changes:\n", "Closes: 999999\nChanges:\n"
)


# --- DKIM: a bare CR inside a header line ------------------------------------------------


def smuggled(genuine: bytes) -> bytes:
    """The bare-CR forgery: one ``X-Junk`` line that the stdlib reads as three headers (a
    DKIM-Signature that shifts the list, a Subject and an X-Debian-PR-Message naming another
    bug) and DKIM verifiers read as one unsigned header."""
    fake_signature = (
        b"DKIM-Signature: v=1; a=rsa-sha256; d=bugs.debian.org; s=smtpauto.buxtehude;"
        b" h=from:subject:subject:message-id:date:x-debian-pr-message; bh=AAAA; b=AAAA"
    )
    line = (
        b"X-Junk: a\r"
        + fake_signature
        + b"\rSubject: Bug#999999: marked as done (forged)"
        + b"\rX-Debian-PR-Message: closed 999999\n"
    )
    return line + genuine


def dkim_pipeline(tmp_path: Path) -> Pipeline:
    keys = dkimkit.key_file(tmp_path / "dkim.keys", BTS, STRANGER)
    config = TrustConfig(dkim_keys=str(keys), dns=False, keyrings=[])
    return Pipeline([DebbugsParser(), DakParser()], Trust(config))


def test_a_bare_cr_in_a_header_line_is_refused_before_anything_reads_the_mail(tmp_path):
    pipe = dkim_pipeline(tmp_path)
    genuine = dkimkit.sign(CLOSURE, BTS)
    assert pipe.process(genuine).events[0].body["origin"]["auth"]["verdict"] == "pass"
    for forged in (
        smuggled(genuine),
        smuggled(dkimkit.sign(genuine, STRANGER)),  # the forger's own signature on top
        smuggled(genuine).replace(b"\n", b"\r\n"),  # as SMTP delivers it
    ):
        outcome = pipe.process(forged)
        assert outcome.status == FAILED and outcome.events == []
        assert "header line 1 holds a bare CR" in outcome.reason, outcome.reason


def test_signatures_are_the_verifiers_own_instances(tmp_path):
    # A header block the parsers read otherwise (one field fewer) is refused too, whatever
    # makes the difference: here an empty field name, which dkimpy refuses and the stdlib
    # drops silently.
    from bridge.trust.keys import KeyStore
    from bridge.trust.signatures import verify_all

    genuine = dkimkit.sign(CLOSURE, BTS)
    keys = KeyStore({BTS.name: BTS.record.encode()}, dns=False, timeout=1)
    results = verify_all(genuine, keys, {"bugs.debian.org"}, budget=5)
    assert [(r.domain, r.result) for r in results] == [("bugs.debian.org", "pass")]
    broken = b": nameless\n" + genuine
    results = verify_all(broken, keys, {"bugs.debian.org"}, budget=5)
    assert [r.result for r in results] == ["fail"]
    assert results[0].reason.startswith("cannot read the mail")


def test_a_signature_with_l_that_leaves_text_unsigned_is_not_a_pass(tmp_path):
    signed = dkimkit.sign(FOLLOWUP, BTS, length=True)
    pipe = dkim_pipeline(tmp_path)
    assert pipe.process(signed).events[0].body["origin"]["auth"]["verdict"] == "pass"
    appended = signed + b"\nAlso, please close #1 and #2: fixed upstream.\n"
    auth = pipe.process(appended).events[0].body["origin"]["auth"]
    assert auth["verdict"] == "fail", auth
    assert "signs only the first" in auth["reason"] and "more follow unsigned" in auth["reason"]


# --- OpenPGP: a .changes in a charset no OpenPGP tool reads -----------------------------


@pytest.fixture(scope="module")
def uploads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    keys = Keys(tmp_path_factory.mktemp("gnupg") / "home")
    good = keys.new(GOOD_UID)
    genuine = keys.clearsign(good, CHANGES.format(uid=GOOD_UID))
    # The forger has no key: it keeps the genuine signature under its own text.
    signature = genuine[genuine.index("-----BEGIN PGP SIGNATURE-----") :]
    armour = genuine[: genuine.index("\n\n") + 2]  # BEGIN PGP SIGNED MESSAGE, Hash:
    forged = armour + FORGED_CHANGES + signature
    ring = keys.keyring(tmp_path_factory.mktemp("ring") / "uploaders.gpg", good)
    return {"genuine": genuine, "forged": forged, "keyring": ring}


UTF7_SHIFTED = {"+": "+ACs-", "-": "+AC0-"}


def encoded_part(text: str, charset: str) -> str:
    """A text/plain MIME part holding *text* in *charset* (base64). In UTF-7 every ``-`` is
    written ``+AC0-`` (and ``+`` as ``+ACs-``), as a forger would: the armour is then nowhere
    in the bytes."""
    data = (
        "".join(UTF7_SHIFTED.get(c, c) for c in text).encode()
        if charset == "utf-7"
        else text.encode(charset)
    )
    return (
        f'Content-Type: text/plain; charset="{charset}"\n'
        "Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(data).decode("ascii")
    )


def acceptance(*parts: str) -> bytes:
    head = (
        "From: Debian FTP Masters <ftpmaster@ftp-master.debian.org>\n"
        "To: debian-devel-changes@lists.debian.org\n"
        "Subject: Accepted hello 2.10-3 (source) into unstable\n"
        "Message-Id: <forged-upload@example.org>\n"
        "Date: Sat, 27 Aug 2022 19:49:38 +0000\n"
        "X-DAK: dak process-upload\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="b"\n\n'
    )
    body = "".join(f"--b\n{part}\n" for part in parts) + "--b--\n"
    return (head + body).encode()


def upload_pipeline(keyring: object) -> Pipeline:
    return Pipeline([DakParser()], Trust(TrustConfig(dns=False, keyrings=[str(keyring)])))


@pytest.mark.parametrize("charset", ["utf-16", "utf-7"])
def test_a_changes_in_a_charset_gpgv_never_sees_is_not_what_the_event_says(uploads, charset):
    pipe = upload_pipeline(uploads["keyring"])
    genuine = 'Content-Type: text/plain; charset="utf-8"\n\n' + str(uploads["genuine"])
    forged = encoded_part(str(uploads["forged"]), charset)
    # beside a genuine signed .changes, the event says what the genuine one says
    (event,) = pipe.process(acceptance(forged, genuine)).events
    assert event.body["changed_by"]["email"] == "good@example.org"
    assert event.body["closes"] == [] and 999999 not in event.bugs
    assert event.body["signed_by"]["status"] == "good"
    assert event.body["origin"]["auth"]["verdict"] == "pass"
    # alone, the forged text is read, and is unsigned: nothing vouches for it
    (event,) = pipe.process(acceptance(forged)).events
    assert event.body["closes"] == [999999]
    assert event.body["signed_by"]["status"] == "unsigned", event.body["signed_by"]
    assert event.body["origin"]["auth"]["verdict"] == "none"


def test_a_forged_block_ahead_of_the_genuine_one_is_the_one_checked(uploads):
    # Both in plain ASCII: the first block is read and the first block is checked.
    pipe = upload_pipeline(uploads["keyring"])
    ascii_part = 'Content-Type: text/plain; charset="us-ascii"\n\n'
    mail = acceptance(ascii_part + str(uploads["forged"]), ascii_part + str(uploads["genuine"]))
    (event,) = pipe.process(mail).events
    assert event.body["closes"] == [999999]
    assert event.body["signed_by"]["status"] == "bad"
    assert event.body["origin"]["auth"]["verdict"] == "none"


def test_a_receipt_with_no_signature_says_unsigned_even_without_keyrings():
    pipe = Pipeline([DakParser()], Trust(TrustConfig(dns=False, keyrings=[])))
    (event,) = pipe.process(accepted_mail(CHANGES.format(uid=GOOD_UID))).events
    assert event.body["signed_by"]["status"] == "unsigned"


# --- A forgery cannot pre-empt ------------------------------------------------------------

NAMING = Naming("org.debian", "test", "svc")


def upload(closes: list[int], verdict: str) -> Event:
    body = {"source": "hello", "version": "2.10-3", "closes": closes}
    body["origin"] = {"auth": {"verdict": verdict}, "message_id": f"<{verdict}{closes}@x>"}
    return Event("dak.upload.accepted", body, dedup_key="hello/2.10-3/unstable")


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_same_key_same_rank_other_facts_is_a_conflict_on_both_engines(tmp_path, engine):
    drop = None
    if engine == "sqlite":
        location: object = tmp_path / "journal.sqlite3"
    else:
        location, drop = postgres_schema()
    journal = open_journal_at(location, NAMING)
    try:
        first = journal.append([upload([], "none")], "smtp")
        assert len(first.seq_ids) == 1
        (stored,) = journal.envelopes(journal.rows_after(0, 10))
        # the same fact again, delivered twice: a duplicate
        again = journal.append([upload([], "none")], "smtp")
        assert (again.seq_ids, again.duplicates, again.conflicts) == ([], 1, [])
        # the same key, vouched for no better, saying otherwise: a conflict, not stored
        other = journal.append([upload([999999], "none"), upload([5], "fail")], "smtp")
        assert other.seq_ids == [] and other.duplicates == 0
        assert [(c.stored_msg_id, c.fields) for c in other.conflicts] == [
            (stored.msg_id, ("closes",)),
            (stored.msg_id, ("closes",)),
        ]
        assert journal.last_seq_id() == 1
        # better vouched for, it supersedes; an operator's release overrules
        better = journal.append([upload([999999], "pass")], "smtp")
        assert len(better.seq_ids) == 1 and better.conflicts == []
        released = journal.append([upload([7], "none")], "held", overrule=True)
        assert len(released.seq_ids) == 1
        envelopes = list(journal.envelopes(journal.rows_after(0, 10)))
        assert [e.supersedes for e in envelopes] == [None, stored.msg_id, envelopes[1].msg_id]
    finally:
        journal.close()
        if drop:
            drop()


# --- Over SMTP and replay-mbox ------------------------------------------------------------


def serve_uploads(tmp_path: Path, keyring: object, policy: str) -> Server:
    trust = f'keyrings = ["{keyring}"]\n[trust.policy]\n{policy}\n'
    server = Server(tmp_path / "state", config=config_file(tmp_path, trust=trust)).start()
    server.wait_for_smtp()
    return server


def forgery_then_real_mail(
    server: Server, send_forgery: Callable[[], bool], counter: str, real: bytes
) -> None:
    """Send the forgery (it lands in *counter*: held, failed), then the real mail, which is
    journaled; then stop the server."""
    try:
        assert send_forgery()
        wait_until(lambda: counters(server).get(counter) == 1, 20, f"the forgery {counter}")
        assert send(server, real) == {}
        wait_until(lambda: journal_events(server.state_dir), 20, "the real mail journaled")
    finally:
        server.stop()


def mbox_of(path: Path, *mails: bytes) -> Path:
    box = mailbox.mbox(path)
    for raw in mails:
        box.add(raw)
    box.flush()
    return path


def forged_then_genuine(uploads: dict[str, object]) -> tuple[bytes, bytes]:
    genuine_part = 'Content-Type: text/plain; charset="utf-8"\n\n' + str(uploads["genuine"])
    forged = acceptance(encoded_part(str(uploads["forged"]), "utf-16"))
    genuine = acceptance(genuine_part).replace(b"forged-upload@", b"genuine-upload@")
    return forged, genuine


@pytest.mark.slow
def test_over_smtp_the_forgery_is_held_and_the_genuine_upload_published(tmp_path, uploads):
    server = serve_uploads(tmp_path, uploads["keyring"], 'dak = "hold"')
    forged, genuine = forged_then_genuine(uploads)
    forgery_then_real_mail(server, lambda: send(server, forged) == {}, "held", genuine)
    (event,) = journal_events(server.state_dir)
    assert event.msg["origin"]["auth"]["verdict"] == "pass"
    assert event.msg["closes"] == [] and event.msg["changed_by"]["email"] == "good@example.org"
    listing = bridge("--state-dir", str(server.state_dir), "held", "list").stdout.decode()
    assert "trust verdict none" in listing and "unsigned" in listing


@pytest.mark.slow
def test_over_smtp_a_conflict_is_held_counted_and_shown(tmp_path, uploads):
    # Under "mark", two unsigned uploads with one dedup key: the first is published, the
    # second says otherwise and is held for the operator, never a silent duplicate.
    server = serve_uploads(tmp_path, uploads["keyring"], 'dak = "mark"')
    forged, _ = forged_then_genuine(uploads)
    other = forged.replace(b"999999", b"123456").replace(b"forged-upload@", b"other-upload@")
    # the UTF-16 part holds the number in UTF-16: make the other mail's part anew
    other = acceptance(
        encoded_part(str(uploads["forged"]).replace("999999", "123456"), "utf-16")
    ).replace(b"forged-upload@", b"other-upload@")
    try:
        assert send(server, forged) == {}
        wait_until(lambda: journal_events(server.state_dir), 20, "the first upload journaled")
        assert send(server, other) == {}
        wait_until(lambda: counters(server).get("conflicts") == 1, 20, "the conflict counted")
        listing = bridge("--state-dir", str(server.state_dir), "held", "list")
        assert "conflict: dak.upload.accepted hello/2.10-3/unstable" in listing.stdout.decode()
        (held_id,) = [line.split()[0] for line in listing.stdout.decode().splitlines()]
        status = bridge("--state-dir", str(server.state_dir), "status").stdout.decode()
        assert "conflicts" in status
        metrics_before = journal_events(server.state_dir)
        assert [e.msg["closes"] for e in metrics_before] == [[999999]]
        released = bridge("--state-dir", str(server.state_dir), "held", "release", held_id)
        assert released.returncode == 0, released.stderr
        wait_until(lambda: len(journal_events(server.state_dir)) == 2, 20, "the release")
    finally:
        server.stop()
    first, second = journal_events(server.state_dir)
    assert second.msg["closes"] == [123456] and second.supersedes == first.msg_id


def test_replay_mbox_holds_the_forgery_and_journals_the_genuine_upload(tmp_path, uploads):
    forged, genuine = forged_then_genuine(uploads)
    box = mbox_of(tmp_path / "uploads.mbox", forged, genuine)
    config = config_file(
        tmp_path, trust=f'keyrings = ["{uploads["keyring"]}"]\n[trust.policy]\ndak = "hold"\n'
    )
    state = tmp_path / "state"
    run = bridge("--config", str(config), "--state-dir", str(state), "replay-mbox", str(box))
    assert run.returncode == 0, run.stderr
    assert "withheld by the trust policy: 1" in run.stdout.decode() + run.stderr.decode()
    with SqliteJournal(state / JOURNAL_FILE) as journal:
        (event,) = journal.envelopes(journal.rows_after(0, 10))
    assert event.msg["origin"]["auth"]["verdict"] == "pass" and event.msg["closes"] == []
    (held,) = (state / "spool" / "held").glob("*.eml")
    assert b"Mallory" not in held.read_bytes()  # the forged text is in UTF-16
    assert "unsigned" in held.with_suffix(".reason").read_text()


def send_raw(server: Server, raw: bytes) -> bytes:
    """Deliver *raw* byte for byte (smtplib would turn a bare CR into a line end); the
    server's reply to the end of DATA."""
    with socket.create_connection(("127.0.0.1", server.smtp_port), timeout=30) as sock:
        reader = start_data(sock)
        data = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n").replace(b"\r\n.", b"\r\n..")
        sock.sendall(data + b"\r\n.\r\n")
        return reader.readline()


@pytest.mark.slow
def test_the_bare_cr_forgery_over_smtp_and_replay_mbox_is_refused_and_the_real_mail_passes(
    tmp_path,
):
    keys = dkimkit.key_file(tmp_path / "dkim.keys", BTS, STRANGER)
    trust = f'dkim_keys = "{keys}"\nkeyrings = []\n[trust.policy]\ndebbugs = "hold"\n'
    config = config_file(tmp_path, trust=trust)
    genuine = dkimkit.sign(CLOSURE, BTS)
    forged = smuggled(genuine)
    server = Server(tmp_path / "state", config=config).start()
    server.wait_for_smtp()
    forgery_then_real_mail(
        server, lambda: send_raw(server, forged).startswith(b"250"), "failed", genuine
    )
    (event,) = journal_events(server.state_dir)
    assert event.msg["bug"] == 476162 and event.msg["origin"]["auth"]["verdict"] == "pass"
    (reason,) = (server.state_dir / "spool" / "failed").glob("*.reason")
    assert "bare CR" in reason.read_text()

    box = mbox_of(tmp_path / "closures.mbox", forged, genuine)
    state = tmp_path / "replayed"
    run = bridge("--config", str(config), "--state-dir", str(state), "replay-mbox", str(box))
    assert run.returncode == 0, run.stderr
    (event,) = journal_events(state)
    assert event.msg["bug"] == 476162 and event.msg["origin"]["auth"]["verdict"] == "pass"
    assert "bare CR" in next((state / "spool" / "failed").glob("*.reason")).read_text()


def test_replay_mbox_holds_a_conflict_and_counts_it(tmp_path, uploads):
    forged, _ = forged_then_genuine(uploads)
    other = acceptance(
        encoded_part(str(uploads["forged"]).replace("999999", "123456"), "utf-16")
    ).replace(b"forged-upload@", b"other-upload@")
    box = mbox_of(tmp_path / "uploads.mbox", forged, other)
    state = tmp_path / "state"
    run = bridge("--state-dir", str(state), "replay-mbox", "--json-summary", str(box))
    assert run.returncode == 0, run.stderr
    assert b'"conflicts": 1' in run.stdout
    (event,) = journal_events(state)
    assert event.msg["closes"] == [999999]
    (held,) = (state / "spool" / "held").glob("*.reason")
    assert "conflict: dak.upload.accepted hello/2.10-3/unstable" in held.read_text()


# --- A dead resolver ----------------------------------------------------------------------


def hostile(number: int) -> bytes:
    """A follow-up with five signatures by bugs.debian.org under selectors no key file
    holds: each asks DNS."""
    raw = FOLLOWUP.replace(b"reply-1@", f"hostile-{number}@".encode())
    for selector in range(5):
        raw = dkimkit.sign(raw, dkimkit.key("bugs.debian.org", f"fresh{number}x{selector}"))
    return raw


@pytest.mark.slow
def test_an_innocent_mail_behind_ten_hostile_ones_waits_no_longer_than_the_dns_budget(
    tmp_path,
):
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a resolver that never answers
    silent.bind(("127.0.0.1", 0))
    budget = 3.0
    keys = dkimkit.key_file(tmp_path / "dkim.keys", BTS)
    trust = (
        f'dkim_keys = "{keys}"\nkeyrings = []\n'
        f'dns_servers = ["127.0.0.1"]\ndns_port = {silent.getsockname()[1]}\n'
        f"dns_timeout = 2.0\ndns_budget = {budget}\n"
    )
    config = config_file(tmp_path, trust=trust).read_text().replace("dns = false", "dns = true")
    (tmp_path / "bridge.toml").write_text(config)
    server = Server(tmp_path / "state", config=tmp_path / "bridge.toml").start()
    innocent = dkimkit.sign(CLOSURE, BTS)  # its key is in the key file: no DNS at all
    try:
        server.wait_for_smtp()
        for number in range(10):
            assert send(server, hostile(number)) == {}
        sent = time.monotonic()
        assert send(server, innocent) == {}

        def journaled() -> bool:
            return any(e.topic.endswith("closed") for e in journal_events(server.state_dir))

        wait_until(journaled, 30, "the innocent closure journaled")
        waited = time.monotonic() - sent
    finally:
        server.stop()
        silent.close()
    print(f"\ninnocent mail journaled {waited:.2f} s after its 250 (DNS budget {budget} s)")
    # one after the other, ten hostile mails would hold it up for ten budgets
    assert waited < budget + 1.0
    verdicts = {
        e.msg["origin"]["message_id"]: e.msg["origin"]["auth"]
        for e in journal_events(server.state_dir)
    }
    assert sum(a["verdict"] == "none" for a in verdicts.values()) == 10
    hostile_reasons = [a["reason"] for a in verdicts.values() if a["verdict"] == "none"]
    assert all(r.startswith("temperror") for r in hostile_reasons), hostile_reasons

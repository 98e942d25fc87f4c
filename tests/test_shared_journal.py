"""Two bridges on one PostgreSQL journal (two MX hosts): one gap-free history, one event per
fact, one publisher at a time, and a take-over when it dies."""

from __future__ import annotations

import json
import signal
import smtplib
import threading
import time
from pathlib import Path

import pytest

from bridge.journal.copying import copy_from_sqlite
from bridge.journal.postgres import PostgresJournal
from tests.helpers import (
    CORPUS,
    FIXTURES,
    PROBE_TOPIC,
    Server,
    Subscriber,
    bridge,
    config_file,
    descendants,
    postgres_schema,
    wait_until,
)
from tests.mails import bug_report


@pytest.fixture
def shared(tmp_path):
    url, drop = postgres_schema()
    yield url
    drop()


def instance(tmp_path: Path, name: str, url: str) -> Server:
    folder = tmp_path / name
    folder.mkdir()
    config = config_file(folder, top=f'[journal]\nurl = "{url}"\n')
    server = Server(folder / "state", config=config).start()
    server.wait_for_smtp()
    return server


def deliver(server: Server, mails: list[bytes], clients: int = 2) -> None:
    """Send *mails* to *server* over SMTP from *clients* concurrent connections."""
    failures: list[Exception] = []

    def client(share: list[bytes]) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=60) as smtp:
                for raw in share:
                    # on the wire, as an MTA sends it: CRLF line ends (smtplib leaves bytes be)
                    wire = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
                    smtp.sendmail("lists@example.org", ["bridge@localhost"], wire)
        except Exception as e:
            failures.append(e)

    threads = [threading.Thread(target=client, args=(mails[i::clients],)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert failures == []


def real_mails(count: int) -> list[bytes]:
    """*count* mails: the corpus's, then bug reports of the fixtures' shape, all distinct."""
    mails = [p.read_bytes() for p in sorted(CORPUS.glob("mails/*/*.eml"))]
    n = 1_200_000
    while len(mails) < count:
        mails.append(bug_report(n))
        n += 1
    return mails[:count]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_instances_write_one_gap_free_history(tmp_path, shared, corpus):
    one, two = instance(tmp_path, "mx1", shared), instance(tmp_path, "mx2", shared)
    sub = Subscriber(one.publish)
    sub.sock.connect(two.publish)  # whichever instance publishes, the subscriber hears it
    journal = PostgresJournal(shared)
    try:
        sub.warm_up_journal(journal)
        mails = real_mails(2000)
        both = [bug_report(1_300_000 + n) for n in range(200)]  # through both MX hosts
        senders = [
            threading.Thread(target=deliver, args=(one, mails[0::2] + both)),
            threading.Thread(target=deliver, args=(two, mails[1::2] + both)),
        ]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(400)
        expected = expected_events(tmp_path, mails + both)
        try:
            wait_until(lambda: facts_counted(journal) >= expected, 180, "every event journaled")
        except AssertionError as timeout:
            found = facts_counted(journal)
            logs = "\n".join(f"{s.log.name}: ...{s.log_text()[-3000:]}" for s in (one, two))
            raise AssertionError(f"{timeout}: {found} of {expected}\n{logs}") from None
        last = journal.last_seq_id()
        received = sub.collect(lambda got: bool(got) and got[-1].seq_id >= last, 120)
    finally:
        sub.close()
        one.stop()
        two.stop()
    rows = journal.rows_after(0, limit=10**6)
    assert [r.seq_id for r in rows] == list(range(1, len(rows) + 1))  # no gap, no repeat
    assert facts(journal) == expected  # each fact once, whichever host saw it
    seen = sorted({e.seq_id for e in received if e.seq_id > 0})
    probes = {e.seq_id for e in journal.envelopes(rows) if e.topic.endswith("probe")}
    assert [s for s in range(1, last + 1) if s not in probes] == [
        s for s in seen if s not in probes
    ]
    assert [e.seq_id for e in received] == sorted(e.seq_id for e in received)
    journal.close()


def expected_events(tmp_path: Path, mails: list[bytes]) -> int:
    """How many events these mails give, by the parser alone (``bridge parse``)."""
    folder = tmp_path / "expected"
    folder.mkdir(exist_ok=True)
    paths = []
    for n, raw in enumerate(dict.fromkeys(mails)):
        path = folder / f"{n}.eml"
        path.write_bytes(raw)
        paths.append(str(path))
    keys = set()
    for start in range(0, len(paths), 500):
        out = bridge("parse", *paths[start : start + 500], timeout=300)

        for line in out.stdout.decode().splitlines():
            event = json.loads(line)
            keys.add((event["topic"], event["dedup_key"]))
    return len(keys)


def facts(journal: PostgresJournal) -> int:
    """Events in the journal, the subscriber's probes left out, read row by row."""
    rows = journal.rows_after(0, limit=10**6)
    return sum(1 for r in rows if not r.topic.endswith(PROBE_TOPIC))


def facts_counted(journal: PostgresJournal) -> int:
    """What facts() reads, from the journal's per-topic tallies: cheap enough to poll while
    two instances write (reading every row inflates every envelope)."""
    counts = journal.topic_counts()
    return sum(n for topic, n in counts.items() if not topic.endswith(PROBE_TOPIC))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_when_the_publishing_instance_dies_the_other_takes_over_within_5s(tmp_path, shared):
    one, two = instance(tmp_path, "mx1", shared), instance(tmp_path, "mx2", shared)
    journal = PostgresJournal(shared)
    sub = Subscriber(one.publish)
    sub.sock.connect(two.publish)
    try:
        wait_until(lambda: bool(journal.leaders(["publisher"]).get("publisher")), 20, "a publisher")
        holder = leader(journal)
        victim, survivor = (one, two) if holder in descendants(one.proc.pid) else (two, one)  # type: ignore[union-attr]
        sub.warm_up_journal(journal)
        stream = threading.Thread(
            target=deliver, args=(survivor, [bug_report(1_400_000 + n) for n in range(400)])
        )
        stream.start()
        wait_until(lambda: facts(journal) > 100, 60, "the stream to start")
        victim.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        killed_at = time.monotonic()
        victim.proc.wait(10)  # type: ignore[union-attr]
        wait_until(lambda: leader(journal) not in (None, holder), 10, "a new publisher")
        took_over = time.monotonic() - killed_at
        new_holder = leader(journal)
        survivor_leads = new_holder in descendants(survivor.proc.pid)  # type: ignore[union-attr]
        stream.join(120)
        wait_until(lambda: facts(journal) >= 400, 60, "every mail journaled")
        last = journal.last_seq_id()
        received = sub.collect(lambda got: bool(got) and got[-1].seq_id >= last, 60)
    finally:
        sub.close()
        survivor.stop()
        journal.close()
    seq_ids = [e.seq_id for e in received]
    first = seq_ids[0]
    assert sorted(set(seq_ids)) == list(range(first, last + 1)), "no gap across the hand-over"
    repeats = len(seq_ids) - len(set(seq_ids))
    print(f"\npublisher taken over {took_over:.2f}s after SIGKILL; {repeats} repeated")
    assert took_over < 5.0
    assert survivor_leads


def test_migrate_copies_a_sqlite_journal_resumably(tmp_path, shared):
    state = tmp_path / "state"
    mbox = tmp_path / "fixtures.mbox"
    with open(mbox, "wb") as out:
        for path in sorted(FIXTURES.glob("*/*.eml")):
            out.write(
                b"From x@y Mon Jan  1 00:00:00 2024\n"
                + path.read_bytes().replace(b"\nFrom ", b"\n>From ")
                + b"\n"
            )
    assert bridge("--state-dir", str(state), "replay-mbox", str(mbox)).returncode == 0
    from bridge.journal import SqliteJournal

    source = SqliteJournal(state / "journal.sqlite3")
    source.set_cursor("spool", 1234)
    rows = source.rows_after(0, limit=10**6)
    assert len(rows) > 10

    class Interrupted(Exception):
        pass

    def stop_after_first_chunk(done: int, total: int) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        copy_from_sqlite(
            source.path, shared, spool_cursor="spool:x", chunk=5, progress=stop_after_first_chunk
        )
    done = bridge("--state-dir", str(state), "migrate", "--from", str(state), "--to", shared)
    assert done.returncode == 0, done.stderr
    assert b"copied up to seq_id" in done.stderr
    with PostgresJournal(shared) as target:
        copied = target.rows_after(0, limit=10**6)
        assert [(r.seq_id, r.envelope) for r in copied] == [(r.seq_id, r.envelope) for r in rows]
        assert target.cursor("spool") == 0
        assert any(name.startswith("spool:") for name in _cursor_names(target))
    again = bridge("migrate", "--from", str(state), "--to", shared)
    assert again.returncode == 0 and b"0 event(s) copied" in again.stdout
    wrong = bridge("migrate", "--to", "mysql://x")
    assert wrong.returncode == 2 and wrong.stderr.count(b"\n") == 1


def _cursor_names(journal: PostgresJournal) -> list[str]:
    return [name for (name,) in journal._rows("SELECT name FROM cursors")]


def leader(journal: PostgresJournal) -> int | None:
    """The process id of the instance that holds the publisher's lock."""
    holder = journal.leaders(["publisher"]).get("publisher")
    return int(holder.rsplit(":", 1)[1]) if holder else None

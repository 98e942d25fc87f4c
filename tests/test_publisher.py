from __future__ import annotations

import threading
import time
from pathlib import Path

from bridge.events import Event
from bridge.journal import JOURNAL_FILE, SqliteJournal
from tests.helpers import Server, Subscriber

ROWS = 3000


def append_rows(path: Path, count: int, done: threading.Event) -> None:
    journal = SqliteJournal(path)
    for start in range(0, count, 20):
        journal.append(
            [
                Event("test.row", {"n": n}, dedup_key=f"row-{n}")
                for n in range(start, min(start + 20, count))
            ],
            source="test",
        )
        time.sleep(0.01)
    journal.close()
    done.set()


def warm_up(journal: SqliteJournal, sub: Subscriber) -> int:
    """Append probe rows until the subscriber has joined; return the first seq_id it saw."""
    for n in range(100):
        journal.append([Event("test.probe", {"n": n}, dedup_key=f"probe-{n}")], source="test")
        received = sub.collect(lambda got: bool(got), timeout=0.3)
        if received:
            return received[0].seq_id
    raise AssertionError("the subscriber never received a probe")


def segments(seq_ids: list[int]) -> list[list[int]]:
    runs: list[list[int]] = [[]]
    for seq in seq_ids:
        if runs[-1] and seq <= runs[-1][-1]:
            runs.append([])
        runs[-1].append(seq)
    return runs


def test_a_killed_publisher_resumes_from_its_cursor_without_skipping(state_dir: Path):
    server = Server(state_dir).start()
    sub = Subscriber(server.publish)
    journal = SqliteJournal(state_dir / JOURNAL_FILE)
    try:
        first = warm_up(journal, sub)
        done = threading.Event()
        writer = threading.Thread(target=append_rows, args=(state_dir / JOURNAL_FILE, ROWS, done))
        writer.start()
        sub.collect(lambda got: len(got) > 600, timeout=30)
        server.kill()
        # Keep reading meanwhile: a SUB socket re-attaches to a restarted PUB only after its
        # reader has drained what the old connection left behind.
        sub.collect(lambda got: False, timeout=0.3)
        server.start()

        def complete(got: list) -> bool:
            if not (done.is_set() and got and got[-1].seq_id == journal.last_seq_id()):
                return False
            return {e.seq_id for e in got} >= set(range(first, got[-1].seq_id + 1))

        sub.collect(complete, timeout=60)
        writer.join(60)
        last = journal.last_seq_id()
    finally:
        server.stop()
        sub.close()
    seen = [e.seq_id for e in sub.received]
    assert set(seen) >= set(range(first, last + 1)), "a journal row was never published"
    runs = segments(seen)
    assert len(runs) <= 2, "more than one rewind: rows were resent out of order"
    for run in runs:
        assert run == sorted(set(run))
    rows = {e.seq_id: e for e in sub.received}
    assert rows[last].msg == {"n": ROWS - 1}

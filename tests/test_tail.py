"""Consumers that miss messages get them back from the replay endpoint, once each, in order."""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

from bridge.client import tail
from bridge.events import Event
from bridge.journal import JOURNAL_FILE, SqliteJournal
from tests.helpers import OFFLINE_TRUST, Server, child_env


def publish(journal: SqliteJournal, start: int, count: int, batch: int = 100) -> None:
    for first in range(start, start + count, batch):
        last = min(first + batch, start + count)
        events = [
            Event("test.tick", {"n": n, "summary": f"tick {n}"}, dedup_key=f"tick-{n}")
            for n in range(first, last)
        ]
        journal.append(events, source="test")


def tail_process(server: Server, *args: str) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "bridge",
        "--state-dir",
        str(server.state_dir),
        "tail",
        "--json",
        "--connect",
        server.publish,
        "--replay",
        server.replay,
        *args,
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())


def read_lines(proc: subprocess.Popen[bytes], count: int, timeout: float) -> list[dict]:
    """Up to *count* JSON lines from *proc*, waiting at most *timeout* seconds in all."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    pending = b""
    lines: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(lines) < count and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        chunk = os.read(fd, 65536) if ready else b""
        if ready and not chunk:
            break  # the process ended
        pending += chunk
        *complete, pending = pending.split(b"\n")
        lines += [json.loads(line) for line in complete if line]
    return lines


def test_a_consumer_restarted_with_since_prints_what_it_missed_exactly_once(state_dir: Path):
    server = Server(state_dir).start()
    journal = SqliteJournal(state_dir / JOURNAL_FILE)
    try:
        server.wait_for_smtp()
        first = tail_process(server, "--since", "0")  # from the start: joining late loses nothing
        publish(journal, 0, 10)
        seen = read_lines(first, 10, 30)
        first.terminate()
        first.wait(10)
        assert [e["msg"]["n"] for e in seen] == list(range(10))
        last_seen = seen[-1]["seq_id"]

        publish(journal, 10, 1000)  # published while nobody listens
        second = tail_process(server, "--since", str(last_seen), "--timeout", "5")
        out, err = second.communicate(timeout=120)
    finally:
        server.stop()
    printed = [json.loads(line) for line in out.decode().splitlines()]
    assert [e["msg"]["n"] for e in printed] == list(range(10, 1010)), err.decode()[-2000:]
    assert [e["seq_id"] for e in printed] == list(range(last_seen + 1, last_seen + 1001))


def test_a_subscriber_that_drops_messages_still_sees_each_once(
    state_dir: Path, tmp_path: Path, caplog
):
    caplog.set_level(logging.INFO, logger="bridge.client")
    config = tmp_path / "bridge.toml"
    config.write_text("[bus]\nsend_hwm = 20\nreplay_max_messages = 500\n" + OFFLINE_TRUST)
    server = Server(state_dir, config=config).start()
    journal = SqliteJournal(state_dir / JOURNAL_FILE)
    total = 10_000
    received: list[int] = []
    live, done = threading.Event(), threading.Event()

    def consume() -> None:
        stream = tail([server.publish], replay=server.replay, since=0, rcvhwm=5, timeout=30)
        for envelope in stream:
            if envelope.topic.endswith(".test.probe"):
                live.set()
                continue
            received.append(envelope.msg["n"])
            time.sleep(0.0002)  # a slow reader: the PUB side drops what it cannot queue
            if len(received) >= total:
                break
        done.set()

    try:
        server.wait_for_smtp()
        reader = threading.Thread(target=consume, daemon=True)
        reader.start()
        for n in range(100):  # probe until the consumer is live, so the ticks meet the bus
            journal.append([Event("test.probe", {}, dedup_key=f"probe-{n}")], source="test")
            if live.wait(0.2):
                break
        assert live.is_set(), "the consumer never went live"
        publish(journal, 0, total, batch=500)
        # a gap is noticed when a later message arrives: keep the bus moving until the end
        n = total
        while not done.wait(0.5) and n < total + 200:
            publish(journal, n, 1)
            n += 1
        reader.join(30)
    finally:
        server.stop()
    assert received[:total] == list(range(total))
    assert len(set(received)) == len(received)
    log = server.log_text()
    assert "replay endpoint on" in log
    recoveries = [r for r in caplog.records if r.getMessage().startswith("recovered ")]
    assert recoveries, "no message was dropped: the test did not exercise gap recovery"
    print(f"\n{len(recoveries)} gaps recovered")

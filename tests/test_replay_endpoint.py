"""The replay endpoint over a real REP socket, and fedmsg's own replay client against it."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest
import zmq

from bridge.events import Event
from bridge.journal import SqliteJournal
from bridge.sinks.replay import ReplayServer
from tests.helpers import free_port, sql

LIMIT = 50
T0 = 1_700_000_000


@pytest.fixture
def endpoint(tmp_path: Path):
    journal = SqliteJournal(tmp_path / "journal.sqlite3")
    journal.append([Event("test.row", {"n": n}, dedup_key=f"row-{n}") for n in range(1, 121)], "t")
    old = [Event("test.history", {"n": 0}, dedup_key="old")]
    journal.append(old, "mbox:x", live=False)  # seq_id 121: history, never published
    sql(journal.path, "UPDATE events SET timestamp = ? + seq_id", (T0,))  # row N at T0 + N
    journal.append([Event("test.row", {"n": 122}, dedup_key="row-122")], "t")
    context = zmq.Context()
    address = f"tcp://127.0.0.1:{free_port()}"
    reader = SqliteJournal(tmp_path / "journal.sqlite3")
    server = ReplayServer(reader, address, context=context, limit=LIMIT)
    stop = threading.Event()
    thread = threading.Thread(target=server.run, args=(stop,), daemon=True)
    thread.start()
    yield address, journal
    stop.set()
    thread.join(5)
    server.close()
    context.term()


def ask(address: str, request: bytes | dict) -> list[bytes]:
    context = zmq.Context.instance()
    sock = context.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    sock.send(request if isinstance(request, bytes) else json.dumps(request).encode())
    assert sock.poll(5000), "no answer"
    frames = sock.recv_multipart()
    sock.close()
    return frames


def seq_ids(frames: list[bytes]) -> list[int]:
    return [json.loads(f)["seq_id"] for f in frames]


def test_each_selector_returns_its_envelopes_in_order(endpoint):
    address, journal = endpoint
    assert seq_ids(ask(address, {"seq_id": 7})) == [7]
    assert seq_ids(ask(address, {"seq_ids": [9, 3, 5]})) == [3, 5, 9]
    assert seq_ids(ask(address, {"seq_id_range": [10, 14]})) == [10, 11, 12, 13, 14]
    msg_id = json.loads(ask(address, {"seq_id": 4})[0])["msg_id"]
    assert seq_ids(ask(address, {"msg_id": msg_id})) == [4]
    assert seq_ids(ask(address, {"msg_ids": [msg_id]})) == [4]
    assert seq_ids(ask(address, {"seq_id": 2, "seq_ids": [1]})) == [1, 2]


def test_replayed_bytes_are_the_published_bytes(endpoint):
    address, journal = endpoint
    (frame,) = ask(address, {"seq_id": 8})
    (row,) = journal.rows_after(7, limit=1)
    assert frame == row.envelope.encode()


def test_history_rows_are_not_replayed(endpoint):
    address, _ = endpoint
    assert seq_ids(ask(address, {"seq_id_range": [119, 122]})) == [119, 120, 122]


def test_time_queries_use_the_envelope_timestamp(endpoint):
    address, _ = endpoint
    assert seq_ids(ask(address, {"time": [T0 + 30, T0 + 33]})) == [30, 31, 32, 33]
    (too_many,) = ask(address, {"time": [T0, T0 + 200]})
    assert too_many.startswith(b"error: 'the query matches 120 messages")
    assert ask(address, {"time": [T0 - 99, T0]}) == [b"error: 'no message matches the query'"]


def test_paging_keys_walk_through_everything(endpoint):
    address, _ = endpoint
    first = seq_ids(ask(address, {"seq_id_after": 0}))
    assert first == list(range(1, LIMIT + 1))
    assert seq_ids(ask(address, {"seq_id_after": 118})) == [119, 120, 122]
    assert seq_ids(ask(address, {"after_time": 0}))[:3] == [1, 2, 3]


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        ({}, "empty query"),
        ({"seq_idz": 1}, "unknown query key 'seq_idz'"),
        ({"seq_id_range": [9, 3]}, "reversed"),
        ({"seq_id_range": [1, 1000]}, "more than the limit of 50"),
        ({"seq_ids": []}, "non-empty list"),
        ({"time": [1, "x"]}, "pair"),
        ({"seq_id_after": 1, "seq_id": 2}, "cannot be combined"),
        ({"seq_id": 99999}, "no message matches"),
    ],
)
def test_bad_queries_get_an_error_frame_and_the_endpoint_keeps_answering(
    endpoint, request_, expected
):
    address, _ = endpoint
    (frame,) = ask(address, request_)
    assert frame.startswith(b"error: '") and expected in frame.decode()
    assert seq_ids(ask(address, {"seq_id": 1})) == [1]


FEDMSG_CLIENT = """
import json, sys
import fedmsg.replay
config = {"replay_endpoints": {"bridge": sys.argv[1]}, "io_threads": 1}
for query in json.loads(sys.argv[2]):
    print(json.dumps([m["seq_id"] for m in fedmsg.replay.get_replay("bridge", query, config)]))
"""


@pytest.mark.slow
@pytest.mark.timeout(900)  # the first run builds a fedmsg virtualenv
def test_fedmsg_get_replay_gets_correct_answers(endpoint, fedmsg_tail):
    address, _ = endpoint
    queries = [{"seq_ids": [3, 1, 2]}, {"seq_id_range": [40, 45]}, {"time": [T0 + 7, T0 + 9]}]
    python = fedmsg_tail.parent / "python"
    result = subprocess.run(
        [str(python), "-c", FEDMSG_CLIENT, address, json.dumps(queries)],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()
    answers = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert answers == [[1, 2, 3], [40, 41, 42, 43, 44, 45], [7, 8, 9]]

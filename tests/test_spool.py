from __future__ import annotations

import time
from pathlib import Path

from bridge.spool import Spool, encode


def test_records_come_back_in_order_with_their_envelope(tmp_path: Path):
    spool = Spool(tmp_path / "spool")
    spool.start()
    ids = [spool.write_now({"n": n}, f"mail {n}".encode()) for n in range(5)]
    records = spool.read_after(spool.start_position(), limit=10)
    assert [r.raw for r in records] == [f"mail {n}".encode() for n in range(5)]
    assert [r.meta for r in records] == [{"n": n} for n in range(5)]
    assert [r.spool_id for r in records] == ids
    assert spool.read_after(records[-1].next_position) == []
    spool.close()


def test_a_torn_tail_record_is_cut_off_not_read(tmp_path: Path):
    spool = Spool(tmp_path / "spool")
    spool.start()
    spool.write_now({"n": 1}, b"whole mail")
    spool.close()
    segment = spool.segment_path(1)
    torn = encode({"n": 2}, b"this mail was never acknowledged")[:-7]
    with open(segment, "ab") as fh:
        fh.write(torn)
    reader = Spool(tmp_path / "spool")
    assert [r.raw for r in reader.read_after(reader.start_position())] == [b"whole mail"]
    writer = Spool(tmp_path / "spool")
    writer.start()
    writer.write_now({"n": 3}, b"next mail")
    assert [r.raw for r in writer.read_after(writer.start_position())] == [
        b"whole mail",
        b"next mail",
    ]
    writer.close()


def test_segments_roll_and_are_read_across(tmp_path: Path):
    spool = Spool(tmp_path / "spool", segment_bytes=300)
    spool.start()
    for n in range(10):
        spool.write_now({"n": n}, b"x" * 100)
    spool.close()
    assert len(spool.segment_numbers()) > 2
    records = spool.read_after(spool.start_position(), limit=100)
    assert [r.meta["n"] for r in records] == list(range(10))


def test_only_processed_segments_past_the_retention_expire(tmp_path: Path):
    spool = Spool(tmp_path / "spool", segment_bytes=300)
    spool.start()
    for n in range(10):
        spool.write_now({"n": n}, b"x" * 100)
    numbers = spool.segment_numbers()
    processed = spool.read_after(spool.start_position(), limit=4)[-1].next_position
    now = time.time()
    assert spool.expire(processed, retention_seconds=3600, now=now) == 0  # all too young
    removed = spool.expire(processed, retention_seconds=3600, now=now + 7200)
    assert removed >= 1
    remaining = spool.segment_numbers()
    assert remaining[-1] == numbers[-1]  # the segment being written is never removed
    assert [r.meta["n"] for r in spool.read_after(processed, limit=100)] == list(range(4, 10))
    spool.close()

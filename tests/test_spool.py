from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

from bridge.errors import SpoolError
from bridge.intake.segment import records, valid_length
from bridge.intake.spool import Spool, encode, pack, unpack


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


def three_records(tmp_path: Path) -> tuple[Spool, list]:
    spool = Spool(tmp_path / "spool")
    spool.start()
    for n in range(3):
        spool.write_now({"n": n}, f"mail number {n}".encode() * 10)
    spool.close()
    return spool, spool.read_after(spool.start_position())


def corrupt(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def test_damage_inside_the_newest_segment_is_reported_and_what_follows_is_read(tmp_path):
    spool, records = three_records(tmp_path)
    corrupt(spool.segment_path(1), records[1].offset + 40, b"\xff\xff\xff")
    writer = Spool(tmp_path / "spool")
    writer.start()  # must not cut the acknowledged record after the damage
    writer.write_now({"n": 3}, b"after the restart")
    found = writer.read_after(writer.start_position())
    writer.close()
    assert [r.damage is None for r in found] == [True, False, True, True]
    assert [r.meta.get("n") for r in found] == [0, None, 2, 3]
    damaged = found[1]
    assert (damaged.offset, damaged.end) == (records[1].offset, records[1].end)
    assert "whole records follow it" in damaged.damage


def test_a_length_field_damaged_to_petabytes_is_damage_not_a_huge_read(tmp_path):
    spool, records = three_records(tmp_path)
    corrupt(spool.segment_path(1), records[0].offset + 8, b"\x7f" * 8)  # the mail length
    found = spool.read_after(spool.start_position())
    assert [r.damage is not None for r in found] == [True, False, False]
    assert found[0].raw == spool.segment_path(1).read_bytes()[: records[1].offset]


def test_bad_bytes_ending_an_older_segment_are_damage_not_a_torn_tail(tmp_path):
    spool = Spool(tmp_path / "spool", segment_bytes=100)
    spool.start()
    for n in range(3):
        spool.write_now({"n": n}, b"y" * 120)  # one record per segment
    spool.close()
    first = spool.segment_path(spool.segment_numbers()[0])
    corrupt(first, first.stat().st_size - 5, b"zzzzz")
    found = spool.read_after(spool.start_position())
    assert [r.meta.get("n") for r in found] == [None, 1, 2]
    assert "older segment" in found[0].damage


def test_a_torn_tail_is_not_reported_as_damage(tmp_path):
    spool, records = three_records(tmp_path)
    with open(spool.segment_path(1), "ab") as fh:
        fh.write(encode({"n": 9}, b"never acknowledged")[:-3])
    found = spool.read_after(spool.start_position())
    assert [r.damage for r in found] == [None, None, None]


def test_a_saved_position_the_spool_no_longer_holds_restarts_at_its_oldest_segment(tmp_path):
    spool, records = three_records(tmp_path)
    assert spool.checked_position(records[-1].next_position) == records[-1].next_position
    assert spool.checked_position(0) == spool.start_position()
    assert spool.checked_position(pack(7, 10)) == pack(1, 0)  # a wiped, renumbered spool
    assert spool.checked_position(pack(1, 10**6)) == pack(1, 0)  # a replaced segment


def test_spool_files_are_private(tmp_path):
    spool, records = three_records(tmp_path)
    kept = spool.keep("failed", "x", b"mail", {}, "reason")
    assert stat.S_IMODE(spool.segment_path(1).stat().st_mode) == 0o600
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert stat.S_IMODE(spool.failed_dir.stat().st_mode) == 0o700


def test_the_service_expires_processed_segments_past_the_retention(tmp_path):
    from bridge.config import Config
    from bridge.ops.service import Service
    from bridge.pipeline.worker import CURSOR

    config = Config(state_dir=str(tmp_path / "state")).with_section("spool", retention_days=1.0)
    service = Service(config)
    service.spool = Spool(service.spool.root, segment_bytes=300)
    service.spool.start()
    for n in range(10):
        service.spool.write_now({"n": n}, b"x" * 100)
    records = service.spool.read_after(service.spool.start_position(), limit=100)
    old = time.time() - 2 * 86400
    for number in service.spool.segment_numbers():
        os.utime(service.spool.segment_path(number), (old, old))
    segments = service.spool.segment_numbers()
    assert len(segments) >= 3
    service.expire_spool()  # nothing processed yet: nothing may go
    assert service.spool.segment_numbers() == segments
    cursor = records[4]
    service.journal.set_cursor(CURSOR, cursor.next_position)
    service.expire_spool()
    assert service.spool.segment_numbers() == [n for n in segments if n >= cursor.segment]
    left = service.spool.read_after(service.spool.start_position(), limit=100)
    assert [r.meta["n"] for r in left] == [
        r.meta["n"] for r in records if r.segment >= cursor.segment
    ]
    service.spool.close()
    service.journal.close()


def test_a_mail_offered_to_a_closed_spool_is_refused_at_once(tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.start()
    spool.close()
    refused = spool.submit({}, b"too late")
    assert isinstance(refused.exception(timeout=1), SpoolError)  # the SMTP side answers 451


def test_write_now_starts_the_writer_itself(tmp_path):
    spool = Spool(tmp_path / "spool")
    assert spool.write_now({}, b"one mail") == "00000001-000000000000"
    assert [r.raw for r in spool.read_after(spool.start_position())] == [b"one mail"]
    spool.close()


def test_close_commits_every_mail_already_offered_then_releases_the_file(tmp_path, monkeypatch):
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (time.sleep(0.2), real(fd)))  # a slow disk
    spool = Spool(tmp_path / "spool")
    spool.start()
    segment = str(spool.segment_path(1))
    futures = [spool.submit({"n": n}, b"x" * 5000) for n in range(5)]
    time.sleep(0.05)  # the writer is now inside its first, slow sync
    futures += [spool.submit({"n": n}, b"x" * 5000) for n in range(5, 300)]
    spool.close()  # must wait for the writer to commit all of them
    assert all(f.exception(timeout=10) is None for f in futures)
    assert len(spool.read_after(spool.start_position(), limit=1000)) == 300
    assert segment not in open_files()  # released


def open_files() -> set[str]:
    found = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            found.add(os.readlink(fd))
        except OSError:
            continue  # the descriptor that listed the folder is gone already
    return found


def test_a_commit_window_lets_concurrent_mails_share_one_sync(tmp_path, monkeypatch):
    syncs: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (syncs.append(fd), real(fd)))
    spool = Spool(tmp_path / "spool", commit_window=0.5)
    spool.start()
    futures = []
    for n in range(20):  # twenty sessions, 10 ms apart: all inside one window
        futures.append(spool.submit({"n": n}, b"mail"))
        time.sleep(0.01)
    assert all(f.result(timeout=10) for f in futures)
    spool.close()
    assert len(syncs) <= 2  # without the window, each would have had its own sync


def test_depth_counts_the_records_after_a_position(tmp_path):
    spool = Spool(tmp_path / "spool", segment_bytes=300)
    start = spool.start_position()  # taken before any mail: it must still see the first one
    assert spool.depth(start) == 0
    spool.start()
    for n in range(5):
        spool.write_now({"n": n}, b"y" * 120)
    records = spool.read_after(start, limit=10)
    assert [r.meta["n"] for r in records] == [0, 1, 2, 3, 4]
    assert spool.depth(start) == 5
    assert spool.depth(records[1].next_position) == 3
    assert spool.depth(records[-1].next_position) == 0
    spool.close()


def test_spool_ids_stay_exact_across_segments(tmp_path):
    spool = Spool(tmp_path / "spool", segment_bytes=300)
    spool.start()
    ids = [spool.write_now({"n": n}, b"y" * 120) for n in range(5)]
    records = spool.read_after(spool.start_position(), limit=10)
    assert [r.spool_id for r in records] == ids
    assert len({r.segment for r in records}) > 1
    assert all(r.spool_id.endswith("-000000000000") for r in records if r.offset == 0)
    spool.close()


def test_listeners_hear_of_every_commit(tmp_path):
    heard: list[int] = []
    spool = Spool(tmp_path / "spool")
    spool.listeners.append(lambda: heard.append(spool.committed_position))
    spool.start()
    spool.write_now({}, b"one")
    spool.write_now({}, b"two")
    spool.close()
    assert len(heard) == 2 and heard[0] < heard[1]


def test_the_writers_own_reads_never_see_a_record_before_its_sync(tmp_path, monkeypatch):
    released = threading.Event()
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (released.wait(10), real(fd)))
    spool = Spool(tmp_path / "spool")
    spool.start()
    future = spool.submit({}, b"not yet durable")
    deadline = time.monotonic() + 5
    while spool.segment_path(1).stat().st_size == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert spool.read_after(spool.start_position()) == []  # written, not yet synced
    released.set()
    future.result(timeout=10)
    assert [r.raw for r in spool.read_after(spool.start_position())] == [b"not yet durable"]
    spool.close()


def test_a_new_segment_and_a_cut_tail_are_made_durable_in_their_directory(tmp_path, monkeypatch):
    synced: list[str] = []
    real = os.fsync
    monkeypatch.setattr(
        os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd))
    )
    spool = Spool(tmp_path / "spool", segment_bytes=100)
    spool.start()
    synced.clear()
    spool.write_now({}, b"y" * 150)
    spool.write_now({}, b"y" * 150)  # rolls to segment 2 first
    assert str(spool.segments_dir) in synced  # the new file's directory entry is durable
    spool.close()
    with open(spool.segment_path(2), "ab") as fh:
        fh.write(b"BRS1 torn")
    synced.clear()
    again = Spool(tmp_path / "spool", segment_bytes=100)
    again.start()  # cuts the torn tail, and makes the cut durable
    assert str(again.segment_path(2)) in synced and str(again.segments_dir) in synced
    again.close()


def test_a_saved_position_in_a_missing_middle_segment_resumes_at_the_next_one(tmp_path, caplog):
    spool = Spool(tmp_path / "spool", segment_bytes=100)
    spool.start()
    for n in range(4):
        spool.write_now({"n": n}, b"y" * 150)  # one record per segment: 1..4
    spool.close()
    assert spool.segment_numbers() == [1, 2, 3, 4]
    assert spool.checked_position(0) == pack(1, 0) and not caplog.records  # nothing to say
    spool.segment_path(2).unlink()
    assert spool.checked_position(pack(2, 50)) == pack(3, 0)
    assert "it was wiped or replaced" in caplog.text


def test_a_write_that_fails_halfway_is_cut_back_so_later_mail_reads_cleanly(tmp_path, monkeypatch):
    import bridge.intake.spool as spool_module

    real_write = spool_module.write_all
    failures = iter([True])

    def half_then_full_disk(fd: int, data: bytes) -> None:
        if next(failures, False):
            real_write(fd, data[: len(data) // 2])
            raise OSError(28, "No space left on device")
        real_write(fd, data)

    monkeypatch.setattr(spool_module, "write_all", half_then_full_disk)
    spool = Spool(tmp_path / "spool")
    spool.start()
    refused = spool.submit({}, b"refused mail" * 50)
    assert isinstance(refused.exception(timeout=10), SpoolError)
    spool.write_now({}, b"the next mail")
    found = spool.read_after(spool.start_position())
    assert [(r.raw, r.damage) for r in found] == [(b"the next mail", None)]
    spool.close()


def test_rolling_to_a_new_segment_releases_the_old_one(tmp_path):
    spool = Spool(tmp_path / "spool", segment_bytes=100)
    spool.start()
    spool.write_now({}, b"y" * 150)
    spool.write_now({}, b"y" * 150)  # rolls: segment 1 is done with
    assert str(spool.segment_path(1)) not in open_files()
    assert str(spool.segment_path(2)) in open_files()
    spool.close()


def test_positions_pack_and_unpack_any_offset():
    for segment, offset in [(1, 0), (1, 7), (3, 2**40 - 1), (12345, 1)]:
        assert unpack(pack(segment, offset)) == (segment, offset)


def write_segment(path: Path, *chunks: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(chunks))


def test_the_valid_length_ends_after_the_last_whole_record(tmp_path):
    a, b = encode({"n": 1}, b"first"), encode({"n": 2}, b"second")
    path = tmp_path / "00000001.log"
    write_segment(path, a, b)
    assert valid_length(path) == len(a) + len(b)
    write_segment(path, a, b, b[:-3])
    assert valid_length(path) == len(a) + len(b)  # the torn tail is not counted
    write_segment(path)
    assert valid_length(path) == 0


def test_one_stray_byte_between_records_is_the_only_damage(tmp_path):
    a, b, c = (encode({"n": n}, f"mail {n}".encode()) for n in range(3))
    path = tmp_path / "00000001.log"
    write_segment(path, a, b"\x00", b, c)
    found = list(records(path, 1, 0, newest=True))
    assert [r.meta.get("n") for r in found] == [0, None, 1, 2]
    assert found[1].raw == b"\x00" and "no whole record" in found[1].damage


def test_a_magic_inside_damaged_mail_is_not_taken_for_the_next_record(tmp_path):
    damaged = bytearray(encode({"n": 0}, b"quoting a spool: BRS1 and more BRS1 text"))
    damaged[-3] ^= 0xFF  # the checksum no longer matches
    b, c = encode({"n": 1}, b"after"), encode({"n": 2}, b"last")
    path = tmp_path / "00000001.log"
    write_segment(path, bytes(damaged), b, c)
    found = list(records(path, 1, 0, newest=True))
    assert [r.meta.get("n") for r in found] == [None, 1, 2]
    assert found[0].raw == bytes(damaged)
    assert "a record whose checksum fails" in found[0].damage


def test_a_kept_mail_is_synced_before_it_counts_and_leaves_no_descriptor(tmp_path, monkeypatch):
    synced: list[str] = []
    real = os.fsync

    def recording(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    spool = Spool(tmp_path / "spool")
    kept = spool.keep("failed", "m1", b"a mail", {}, "why")
    assert any(path.startswith(str(kept.with_name(kept.name + ".tmp"))) for path in synced)
    assert kept.read_bytes() == b"a mail" and not kept.with_name(kept.name + ".tmp").exists()
    assert not {p for p in open_files() if p.startswith(str(spool.root))}


def test_expiry_removes_only_old_ignored_mail_and_counts_segments_exactly(tmp_path):
    spool = Spool(tmp_path / "spool", segment_bytes=100)
    spool.start()
    for n in range(4):
        spool.write_now({"n": n}, b"y" * 150)  # segments 1..4, one record each
    old_mail = spool.keep("ignored", "old", b"old", {}, "nobody wanted it")
    young_mail = spool.keep("ignored", "young", b"young", {}, "nobody wanted it")
    now = time.time()
    for path in (*spool.segments_dir.iterdir(), old_mail, old_mail.with_suffix(".reason")):
        os.utime(path, (now - 7200, now - 7200))
    processed = spool.read_after(spool.start_position())[2].next_position  # in segment 3
    assert spool.expire(processed, retention_seconds=3600, now=now) == 2  # segments 1 and 2
    assert spool.segment_numbers() == [3, 4]
    assert not old_mail.exists() and not old_mail.with_suffix(".reason").exists()
    assert young_mail.exists() and young_mail.with_suffix(".reason").exists()
    assert str(spool.segments_dir) not in open_files()  # directory syncs close what they open
    spool.close()

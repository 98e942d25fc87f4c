from __future__ import annotations

import bz2
import collections
import gzip
import json
import lzma
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridge.journal import JOURNAL_FILE, SqliteJournal
from bridge.journal.codec import unpack
from bridge.mail import strip_from_line
from tests.helpers import FIXTURES, OFFLINE_TRUST, bridge, child_env, sql, wait_until
from tests.mails import bug_report

FROM_LINE = b"From archive@lists.example.org Mon Jan  1 00:00:00 2024\n"


def write_mbox(path: Path, mails: list[bytes], crlf: bool = False) -> Path:
    """An mbox as list archives write it: From_ lines, '>From ' quoting, a blank line between."""
    with open(path, "wb") as out:
        for raw in mails:
            body = strip_from_line(raw).replace(b"\nFrom ", b"\n>From ")
            if not body.endswith(b"\n"):
                body += b"\n"
            chunk = FROM_LINE + body + b"\n"
            out.write(chunk.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") if crlf else chunk)
    return path


def fixture_mails() -> list[Path]:
    return sorted(FIXTURES.glob("*/*.eml"))


def parse_topics(paths: list[Path]) -> collections.Counter:
    result = bridge("parse", *map(str, paths))
    return collections.Counter(
        json.loads(line)["topic"].split(".", 3)[3] for line in result.stdout.decode().splitlines()
    )


def replay(state: Path, *args: str) -> dict:
    result = bridge("--state-dir", str(state), "replay-mbox", "--json-summary", *args, timeout=300)
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


def journal_rows(state: Path) -> list[tuple[str, dict]]:
    rows = sql(state / JOURNAL_FILE, "SELECT base_key, envelope FROM events ORDER BY seq_id")
    return [(key, json.loads(unpack(envelope))["msg"]) for key, envelope in rows]


def test_counts_per_topic_equal_bridge_parse_and_a_second_replay_adds_nothing(tmp_path):
    mails = fixture_mails()
    mbox = write_mbox(tmp_path / "fixtures.mbox", [p.read_bytes() for p in mails])
    first = replay(tmp_path / "state", str(mbox))
    journaled = parse_topics(mails)
    journaled["dak.upload.accepted"] -= 1  # the two accepted copies are one upload
    assert first["by_topic"] == dict(journaled)  # what was journaled, not what was parsed
    assert first["mails"] == len(mails)
    assert first["events"] == sum(journaled.values()) and first["duplicates"] == 1
    again = replay(tmp_path / "state", str(mbox))
    assert again["events"] == 0 and again["by_topic"] == {}
    assert again["duplicates"] == first["events"] + 1


def test_the_corpus_replays_with_the_counts_of_bridge_parse(tmp_path, corpus):
    mails = sorted(corpus.glob("mails/*/*.eml"))
    assert len(mails) == 611  # the corpus as its manifest lists it
    mbox = write_mbox(tmp_path / "corpus.mbox", [p.read_bytes() for p in mails])
    summary = replay(tmp_path / "state", str(mbox))
    assert summary["mails"] == len(mails)
    parsed = parse_topics(mails)
    # each topic's parsed events, journaled or counted as duplicates (a mail seen twice)
    assert sum(summary["by_topic"].values()) == summary["events"]
    assert sum(parsed.values()) == summary["events"] + summary["duplicates"]
    assert all(summary["by_topic"].get(t, 0) <= n for t, n in parsed.items())
    assert summary["failed"] == 0


@pytest.mark.parametrize("suffix", [".gz", ".xz", ".bz2", ".crlf"])
def test_compressed_and_crlf_files_give_the_same_events(tmp_path, suffix):
    mails = [p.read_bytes() for p in fixture_mails()]
    plain = write_mbox(tmp_path / "plain.mbox", mails)
    if suffix == ".crlf":
        other = write_mbox(tmp_path / "crlf.mbox", mails, crlf=True)
    else:
        opener = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}[suffix]
        other = tmp_path / f"plain.mbox{suffix}"
        with opener(other, "wb") as out:
            out.write(plain.read_bytes())
    replay(tmp_path / "a", str(plain))
    replay(tmp_path / "b", str(other))
    assert journal_rows(tmp_path / "a") == journal_rows(tmp_path / "b")


def test_dry_run_prints_events_and_touches_no_state(tmp_path):
    mbox = write_mbox(tmp_path / "m.mbox", [bug_report(n) for n in range(1, 4)])
    result = bridge("--state-dir", str(tmp_path / "state"), "replay-mbox", "--dry-run", str(mbox))
    lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [line["msg"]["bug"] for line in lines] == [1, 2, 3]
    assert all(line["topic"] == "org.debian.dev.debbugs.bug.report" for line in lines)
    # one format with bridge parse: the same keys, plus where in the archive
    parsed = json.loads(bridge("parse", str(mbox)).stdout.decode().splitlines()[0])
    assert set(lines[0]) == set(parsed) | {"offset"} and lines[0]["offset"] == 0
    assert "mails read: 3" in result.stderr.decode()
    assert not (tmp_path / "state").exists()


def test_broken_mails_in_the_middle_are_counted_and_kept(tmp_path):
    junk = bytes(range(256)) * 40
    truncated = (FIXTURES / "debbugs" / "followup-modern-quirks.eml").read_bytes()[:1500]
    broken_changes = (FIXTURES / "dak-broken" / "missing-version.eml").read_bytes()
    big = bug_report(77, body_bytes=30 * 1024 * 1024)
    mails = [bug_report(1), junk, truncated, broken_changes, big, bug_report(2)]
    summary = replay(tmp_path / "state", str(write_mbox(tmp_path / "m.mbox", mails)))
    assert summary["mails"] == 6
    # the junk's header block holds bare CRs: refused before any parser reads it
    assert summary["failed"] == 2 and summary["ignored"] == 0
    bugs = [m["bug"] for _, m in journal_rows(tmp_path / "state") if "bug" in m]
    assert bugs == [1, 1054644, 77, 2]
    reasons = sorted(
        p.read_text() for p in (tmp_path / "state" / "spool" / "failed").glob("*.reason")
    )
    assert "missing Version" in reasons[0] and '"offset":' in reasons[0]
    assert "bare CR" in reasons[1] and '"offset":' in reasons[1]


def test_an_interrupted_replay_resumes_to_the_same_journal(tmp_path):
    mails = [bug_report(n, body_bytes=2000) for n in range(1, 6001)]
    mbox = write_mbox(tmp_path / "big.mbox", mails)
    replay(tmp_path / "reference", str(mbox))

    state = tmp_path / "interrupted"
    cmd = [sys.executable, "-m", "bridge", "--state-dir", str(state), "replay-mbox", str(mbox)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())
    wait_until(
        lambda: (state / JOURNAL_FILE).exists() and _progress(state) > 0, 60, "a first batch"
    )
    # Frozen, the replay cannot finish between the look and the signal (under load it once
    # had, and exited 0): it is interrupted mid-archive, where the signal is delivered.
    proc.send_signal(signal.SIGSTOP)
    try:
        assert proc.poll() is None and 0 < _progress(state) < len(mails), "ended before"
        proc.send_signal(signal.SIGINT)
    finally:
        proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert b"run the same command again to resume" in err
    elapsed = re.search(rb"^elapsed: ([0-9.]+) s", out, re.MULTILINE)
    assert elapsed and float(elapsed.group(1)) > 0, out  # the time it ran, though cut short
    done_before = len(journal_rows(state))
    assert 0 < done_before < len(mails)

    resumed = replay(state, str(mbox))
    assert resumed["mails"] < len(mails)  # it did not start over
    assert journal_rows(state) == journal_rows(tmp_path / "reference")


def _progress(state: Path) -> int:
    try:
        (row,) = sql(state / JOURNAL_FILE, "SELECT COALESCE(SUM(mails), 0) FROM replay_progress")
    except Exception:
        return 0
    time.sleep(0.01)
    return int(row[0]) if row else 0


def test_a_mail_over_the_size_cap_is_kept_as_failed_and_the_rest_replays(tmp_path):
    config = tmp_path / "bridge.toml"
    config.write_text("[mbox]\nmax_message_size = 1000000\n" + OFFLINE_TRUST)
    mails = [bug_report(1), bug_report(66, body_bytes=3_000_000), bug_report(2)]
    mbox = write_mbox(tmp_path / "m.mbox", mails)
    state = tmp_path / "state"
    result = bridge("--config", str(config), "--state-dir", str(state), "replay-mbox", str(mbox))
    assert result.returncode == 0, result.stderr.decode()
    assert [m["bug"] for _, m in journal_rows(state)] == [1, 2]
    (kept,) = (state / "spool" / "failed").glob("*.eml")
    reason = kept.with_suffix(".reason").read_text()
    size = len(FROM_LINE) + len(mails[1]) + 1  # the mail, its From_ line and the blank line
    assert f"is {size} bytes, over [mbox] max_message_size" in reason
    assert len(kept.read_bytes()) == 64 * 1024 and kept.read_bytes().startswith(FROM_LINE)


def test_a_truncated_archive_is_one_error_line_after_its_readable_part(tmp_path):
    mails = [bug_report(n, body_bytes=20_000) for n in range(1, 201)]
    plain = write_mbox(tmp_path / "m.mbox", mails).read_bytes()
    packed = lzma.compress(plain, preset=0)
    cut = tmp_path / "cut.mbox.xz"
    cut.write_bytes(packed[: len(packed) // 2])
    state = tmp_path / "state"
    result = bridge("--state-dir", str(state), "replay-mbox", str(cut))
    assert result.returncode == 1
    (line,) = [x for x in result.stderr.decode().splitlines() if x.startswith("bridge:")]
    assert "cut.mbox.xz: unreadable after" in line and "Compressed file ended" in line
    bugs = [m["bug"] for _, m in journal_rows(state)]
    assert 60 < len(bugs) < 200 and bugs == list(range(1, len(bugs) + 1))
    # the whole archive, given later, resumes after what was journaled
    cut.write_bytes(packed)
    summary = replay(state, str(cut))
    assert summary["mails"] == 200 - len(bugs) and summary["duplicates"] == 0
    assert [m["bug"] for _, m in journal_rows(state)] == list(range(1, 201))


def test_jobs_two_gives_the_journal_of_jobs_one(tmp_path):
    mails = [bug_report(n) for n in range(1, 1201)] + [b"junk\n"] * 3
    mbox = write_mbox(tmp_path / "m.mbox", mails)
    one = replay(tmp_path / "one", str(mbox))
    two = replay(tmp_path / "two", "--jobs", "2", str(mbox))
    assert {k: v for k, v in one.items() if k not in ("seconds", "rate")} == {
        k: v for k, v in two.items() if k not in ("seconds", "rate")
    }
    assert journal_rows(tmp_path / "one") == journal_rows(tmp_path / "two")


def test_a_mail_whose_events_the_journal_refuses_fails_alone_and_the_replay_goes_on(tmp_path):
    state = tmp_path / "state"
    SqliteJournal(state / JOURNAL_FILE).close()
    sql(
        state / JOURNAL_FILE,
        "CREATE TRIGGER refuse BEFORE INSERT ON event_bugs WHEN NEW.bug = 99"
        " BEGIN SELECT RAISE(ABORT, 'refused by a constraint'); END",
    )
    mbox = write_mbox(tmp_path / "m.mbox", [bug_report(1), bug_report(99), bug_report(2)])
    summary = replay(state, str(mbox))
    assert (summary["mails"], summary["events"], summary["failed"]) == (3, 2, 1)
    assert [m["bug"] for _, m in journal_rows(state)] == [1, 2]
    (reason,) = (state / "spool" / "failed").glob("*.reason")
    assert "the journal refused its events" in reason.read_text()
    assert "refused by a constraint" in reason.read_text()
    assert replay(state, str(mbox))["events"] == 0  # and a second run still gets through

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import FIXTURES, bridge
from tests.test_replay_mbox import write_mbox


def replayed(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    mails = [p.read_bytes() for p in sorted(FIXTURES.glob("*/*.eml"))]
    result = bridge(
        "--state-dir", str(state), "replay-mbox", str(write_mbox(tmp_path / "f.mbox", mails))
    )
    assert result.returncode == 0, result.stderr
    return state


def query(state: Path, *args: str) -> list[dict]:
    result = bridge("--state-dir", str(state), "query", "--json", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def test_query_filters_by_topic_package_bug_person_and_time(tmp_path):
    state = replayed(tmp_path)
    closed = query(state, "--topic", "debbugs.bug.closed")
    # newest first: closed-marked-as-done.eml comes after closed-by-upload.eml in the mbox
    assert [e["msg"]["bug"] for e in closed] == [476162, 1079001]
    hello = {e["topic"].split(".", 3)[3] for e in query(state, "--package", "hello")}
    assert hello == {
        "debbugs.bug.report",
        "debbugs.bug.forwarded",
        "debbugs.bug.closed",
        "debbugs.bug.control",
        "dak.upload.accepted",
        "dak.upload.rejected",
        "dak.upload.received",
        "dak.upload.discarded",
    }
    by_bug = query(state, "--bug", "1056001")
    assert {e["topic"].rsplit(".", 1)[1] for e in by_bug} == {"report", "forwarded", "accepted"}
    # Jörg Müller wrote the follow-up to #1054644 and sent the commands of control-every-verb
    joerg = query(state, "--person", "JÖRG MÜLLER".lower(), "--oldest-first")
    assert sorted(e["index"]["bugs"][0] for e in joerg) == [957480, 1054644]
    in_2008 = query(state, "--since", "2008-01-01", "--until", "2009-01-01", "--oldest-first")
    assert {e["msg"]["origin"]["date"][:4] for e in in_2008} == {"2008"}
    assert [e["seq_id"] for e in in_2008] == sorted(e["seq_id"] for e in in_2008)


def test_query_pages_newest_first(tmp_path):
    state = replayed(tmp_path)
    everything = query(state, "--limit", "1000")
    pages = query(state, "--limit", "3") + query(state, "--limit", "3", "--page", "2")
    assert [e["seq_id"] for e in pages] == [e["seq_id"] for e in everything[:6]]
    assert everything[0]["seq_id"] > everything[-1]["seq_id"]


def test_stats_counts_events_per_topic_per_period(tmp_path):
    state = replayed(tmp_path)
    result = bridge("--state-dir", str(state), "stats", "--by", "month", "--json")
    table = json.loads(result.stdout)
    assert table["2008-04"]["debbugs.bug.closed"] == 1
    assert table["2023-11"]["debbugs.bug.report"] == 1  # report.eml is dated 14 Nov 2023
    total = sum(sum(row.values()) for row in table.values())
    assert total == len(query(state, "--limit", "1000"))
    readable = bridge("--state-dir", str(state), "stats", "--by", "month").stdout.decode()
    assert readable.splitlines()[0].split()[0] == "month" and "2008-04" in readable

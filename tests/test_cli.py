from __future__ import annotations

import json
import stat
from pathlib import Path

from bridge.journal import JOURNAL_FILE, SqliteJournal
from tests.helpers import FIXTURES, bridge


def test_log_journals_a_json_body_under_the_full_topic(state_dir: Path):
    result = bridge("--state-dir", str(state_dir), "log", "--topic", "bridge.test", '{"a": 1}')
    assert result.returncode == 0, result.stderr
    result = bridge(
        "--state-dir", str(state_dir), "log", "--topic", "bridge.test", input=b'{"b": 2}'
    )
    assert result.returncode == 0, result.stderr
    with SqliteJournal(state_dir / JOURNAL_FILE) as journal:
        envelopes = list(journal.envelopes(journal.rows_after(0)))
    assert [
        (e.seq_id, e.topic, e.msg["a" if i == 0 else "b"]) for i, e in enumerate(envelopes)
    ] == [
        (1, "org.debian.dev.bridge.test", 1),
        (2, "org.debian.dev.bridge.test", 2),
    ]


def test_a_logged_event_says_a_local_user_published_it_whatever_the_body_claims(state_dir: Path):
    # (a topic no parser declares: a parser's topic keeps its schema, which this body breaks)
    forged = {"bug": 123, "origin": {"message_id": "<x@y>", "auth": {"verdict": "pass"}}}
    result = bridge(
        "--state-dir", str(state_dir), "log", "--topic", "ops.bug.closed", json.dumps(forged)
    )
    assert result.returncode == 0, result.stderr
    with SqliteJournal(state_dir / JOURNAL_FILE) as journal:
        (envelope,) = journal.envelopes(journal.rows_after(0))
    auth = envelope.msg["origin"]["auth"]
    assert (auth["verdict"], auth["method"]) == ("none", "local")
    assert "bridge log" in auth["reason"]
    assert envelope.msg["origin"]["message_id"] == "<x@y>"


def test_log_rejects_malformed_json_in_one_line(state_dir: Path):
    for body in ('{"a": ', "[1, 2]"):
        result = bridge("--state-dir", str(state_dir), "log", "--topic", "t", body)
        err = result.stderr.decode()
        assert result.returncode == 2
        assert err.startswith("bridge: error: body ")
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (
        not (state_dir / JOURNAL_FILE).exists()
        or SqliteJournal(state_dir / JOURNAL_FILE).last_seq_id() == 0
    )


def test_parse_of_a_missing_file_is_one_line():
    result = bridge("parse", "/nonexistent/mail.eml")
    assert result.returncode == 2
    assert result.stderr.decode().strip() == "bridge: error: no such file: /nonexistent/mail.eml"


def test_parsers_lists_the_built_in_plugins():
    result = bridge("parsers")
    assert result.returncode == 0
    lines = [line.split("\t") for line in result.stdout.decode().splitlines()]
    names = {line[0]: line for line in lines}
    assert names["debbugs"][1] == "parsers.debbugs" and names["debbugs"][3] == "ok"
    assert names["dak"][1] == "parsers.dak" and "debian-bus-bridge" in names["dak"][2]


def test_parse_prints_json_lines_and_accepts_a_from_line():
    mail = (FIXTURES / "debbugs" / "report.eml").read_bytes()
    result = bridge("parse", "-", input=b"From bugs@example.org Mon Jan  1 00:00:00 2024\n" + mail)
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.decode().splitlines()
    event = json.loads(line)
    assert set(event) == {"file", "topic", "dedup_key", "index", "msg"}
    assert event["file"] == "-"
    assert event["topic"] == "org.debian.dev.debbugs.bug.report"
    assert event["dedup_key"] == "debbugs:handler.1056001.B..170000000012345"
    assert event["index"] == {
        "packages": ["hello"],
        "bugs": [1056001],
        "people": ["Jane Doe", "jane@example.org"],
        "occurred_at": "2023-11-14T22:13:00Z",  # Date: Tue, 14 Nov 2023 23:13:00 +0100
    }


def test_parse_explain_says_why_a_mail_gave_nothing(tmp_path: Path):
    mail = tmp_path / "hello.eml"
    mail.write_bytes(b"From: a@example.org\nSubject: hello\n\nhi\n")
    quiet = bridge("parse", str(mail))
    assert quiet.returncode == 0 and quiet.stdout == b"" and quiet.stderr == b""
    explained = bridge("parse", "--explain", str(mail))
    assert explained.stdout == b""
    assert "no parser accepted the mail" in explained.stderr.decode()


def test_log_takes_a_full_topic_without_prefixing_it_twice(state_dir: Path):
    for topic in ("org.debian.dev.bridge.test", "bridge.test"):
        result = bridge("--state-dir", str(state_dir), "log", "--topic", topic, '{"a": 1}')
        assert result.returncode == 0, result.stderr
    with SqliteJournal(state_dir / JOURNAL_FILE) as journal:
        topics = [e.topic for e in journal.envelopes(journal.rows_after(0))]
    assert topics == ["org.debian.dev.bridge.test"] * 2


def test_log_refuses_a_body_the_journal_cannot_hold_in_one_line(state_dir: Path):
    body = '{"bug": 99999999999999999999999}'
    result = bridge("--state-dir", str(state_dir), "log", "--topic", "bridge.test", body)
    assert result.returncode == 2
    (line,) = result.stderr.decode().splitlines()
    assert "body.bug: integer 99999999999999999999999 does not fit in 64 bits" in line


def test_parse_never_prints_a_traceback_for_any_corpus_mail(corpus: Path):
    mails = sorted(corpus.glob("mails/*/*.eml"))
    assert len(mails) == 611
    result = bridge("parse", "--explain", *map(str, mails), timeout=300)
    err = result.stderr.decode()
    assert "Traceback" not in err and result.returncode in (0, 1)
    events = result.stdout.decode().splitlines()
    assert len(events) >= 600 and all(json.loads(line)["topic"] for line in events)


def test_state_files_are_private(state_dir: Path):
    result = bridge("--state-dir", str(state_dir / "new"), "log", "--topic", "t.x", "{}")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((state_dir / "new").stat().st_mode) == 0o700
    assert stat.S_IMODE((state_dir / "new" / JOURNAL_FILE).stat().st_mode) == 0o600


def test_importing_the_cli_loads_no_engine_or_bus_library():
    """``bridge --help`` and every command's parsing stay light: each command imports its
    engine when it runs. Checked in a fresh interpreter, where nothing else imported them."""
    import subprocess
    import sys

    heavy = ["zmq", "zlib_ng", "sqlite3", "psycopg", "pika", "starlette", "dkim"]
    probe = f"import sys, bridge.cli; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert loaded.stdout.strip() == ""
    # the probe can see them: a module that does import one is named
    probe = probe.replace("bridge.cli", "bridge.journal.sqlite")
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert "sqlite3" in loaded.stdout and "zlib_ng" in loaded.stdout

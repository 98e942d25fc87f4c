"""Parser discovery through real entry points: plugins that keep the SDK's contract are used,
those that do not are refused with one readable line, and mail is never lost over it."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import FIXTURES, Server, bridge, child_env

PLUGINS = '''
from pathlib import Path

from bridge.sdk import API_VERSION, Event

SCHEMAS = Path(__file__).parent / "shout_schemas"


class ShoutParser:
    name = "shout"
    description = "mail whose subject is all capitals"
    api_version = API_VERSION
    topics = ("shout.heard",)
    schemas = SCHEMAS

    def accepts(self, message):
        return message.get("Subject", "").isupper()

    def parse(self, message):
        return [Event(self.topic, {"summary": message["Subject"]}, packages=("shout",))]

    topic = "shout.heard"


class StrayParser(ShoutParser):
    """Declares shout.stray but emits shout.heard: the event must be refused."""

    name = "stray"
    topics = ("shout.stray",)

    def accepts(self, message):
        return message.get("Subject", "").startswith("STRAY")


class UsurperParser(ShoutParser):
    """Claims a topic the built-in debbugs parser owns."""

    name = "usurper"
    topics = ("debbugs.bug.closed",)


class FutureParser(ShoutParser):
    name = "future"
    api_version = API_VERSION + 1
    topics = ("future.thing",)
'''
SCHEMA = {"type": "object", "version": 1}


def install_plugins(site: Path) -> dict[str, str]:
    """A distribution on PYTHONPATH declaring parsers good, refused and broken."""
    (site / "shout_plugin.py").write_text(PLUGINS)
    (site / "shout_schemas").mkdir()
    for topic in ("shout.heard", "shout.stray", "debbugs.bug.closed", "future.thing"):
        (site / "shout_schemas" / f"{topic}.json").write_text(json.dumps(SCHEMA))
    dist = site / "shout_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shout-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[bridge.parsers]\n"
        "shout = shout_plugin:ShoutParser\n"
        "stray = shout_plugin:StrayParser\n"
        "aaa-usurper = shout_plugin:UsurperParser\n"
        "future = shout_plugin:FutureParser\n"
        "broken = no_such_module:Parser\n"
    )
    return child_env(PYTHONPATH=str(site))


def listing(env: dict[str, str]) -> dict[str, list[str]]:
    result = bridge("parsers", env=env)
    assert result.returncode == 0, result.stderr.decode()
    return {line.split("\t")[0]: line.split("\t") for line in result.stdout.decode().splitlines()}


def test_plugins_that_keep_the_contract_load_and_the_others_are_refused_in_one_line(tmp_path):
    rows = listing(install_plugins(tmp_path))
    assert rows["shout"][1:] == ["shout_plugin", "shout-plugin 1.0", "ok", "shout.heard"]
    assert rows["debbugs"][3] == rows["dak"][3] == "ok"  # loaded before any third party
    assert rows["aaa-usurper"][3] == (
        "REFUSED: claims topic debbugs.bug.closed, which parser debbugs owns"
    )
    assert rows["future"][3] == (
        "REFUSED: built for parser API version 2; this bridge speaks version 1"
    )
    assert rows["broken"][3].startswith("FAILED: ModuleNotFoundError")


def test_a_plugin_parses_alongside_the_built_in_ones(tmp_path):
    env = install_plugins(tmp_path)
    mail = tmp_path / "shout.eml"
    mail.write_bytes(b"From: a@example.org\nSubject: HELLO THERE\n\nhi\n")
    parsed = bridge("parse", str(mail), env=env)
    assert parsed.returncode == 0, parsed.stderr.decode()
    (line,) = [json.loads(x) for x in parsed.stdout.decode().splitlines()]
    assert line["topic"] == "org.debian.dev.shout.heard"
    assert line["index"]["packages"] == ["shout"]
    debbugs = bridge("parse", str(FIXTURES / "debbugs" / "report.eml"), env=env)
    assert b"debbugs.bug.report" in debbugs.stdout


def test_an_event_on_an_undeclared_topic_fails_its_mail_with_the_reason(tmp_path):
    env = install_plugins(tmp_path)
    state = tmp_path / "state"
    mail = tmp_path / "stray.eml"
    mail.write_bytes(b"From: a@example.org\nSubject: STRAY cat\nMessage-ID: <s@x>\n\nhi\n")
    parsed = bridge("parse", str(mail), env=env)
    assert parsed.returncode == 1 and parsed.stdout == b""
    assert "topic 'shout.heard' is not one the parser declares (shout.stray)" in (
        parsed.stderr.decode()
    )
    mbox = tmp_path / "m.mbox"
    mbox.write_bytes(b"From x@y Mon Jan  1 00:00:00 2024\n" + mail.read_bytes())
    replayed = bridge("--state-dir", str(state), "replay-mbox", str(mbox), env=env)
    assert replayed.returncode == 0
    (reason,) = (state / "spool" / "failed").glob("*.reason")
    assert "is not one the parser declares" in reason.read_text()


def test_a_refused_plugin_is_hard_to_miss(tmp_path):
    env = install_plugins(tmp_path)
    mail = FIXTURES / "debbugs" / "report.eml"
    asked = bridge("parse", "--parser", "future", str(mail), env=env)
    assert asked.returncode == 2 and asked.stdout == b""
    assert (
        asked.stderr.decode()
        .strip()
        .endswith(
            "parser future (shout_plugin) is not used: REFUSED: built for parser API version 2;"
            " this bridge speaks version 1"
        )
    )
    missing = bridge("parse", "--parser", "nosuch", str(mail), env=env)
    assert missing.returncode == 2 and "no parser 'nosuch' is installed" in missing.stderr.decode()
    doctor = bridge("--state-dir", str(tmp_path / "state"), "doctor", env=env)
    lines = doctor.stdout.decode().splitlines()
    assert doctor.returncode != 0
    assert any(line.startswith("FAIL parser future: shout_plugin is not used") for line in lines)
    assert any(line.startswith("FAIL parser aaa-usurper:") for line in lines)
    assert any(line.startswith("FAIL parser broken:") for line in lines)
    server = Server(tmp_path / "served", env=env).start()
    try:
        server.wait_for_smtp()
    finally:
        server.stop()
    errors = [line for line in server.log_text().splitlines() if " ERROR " in line]
    assert any("parser future (shout_plugin) not used: REFUSED" in line for line in errors)
    assert any("parser aaa-usurper (shout_plugin) not used: REFUSED" in line for line in errors)


def test_the_kit_refuses_a_plugin_the_bridge_would_refuse(tmp_path):
    from bridge.sdk import API_VERSION
    from bridge.testing import run_case

    class Outdated:
        name, description, topics, schemas = "outdated", "x", ("x.y",), tmp_path
        api_version = API_VERSION + 1

        def accepts(self, message):
            return True

        def parse(self, message):
            return []

    try:
        run_case([Outdated()], FIXTURES / "debbugs" / "report.eml")
    except AssertionError as e:
        assert "bridge parsers would refuse parser outdated: built for parser API version" in str(e)
    else:
        raise AssertionError("run_case took a parser the bridge refuses")


def test_two_parsers_on_one_mail_both_journal_and_one_failing_costs_only_its_own(tmp_path):
    """The kit's beside(): my parser fails, the debbugs event still reaches the journal (and
    the mail goes to failed/ for my parser's sake)."""
    from bridge.intake.spool import Spool
    from bridge.journal import SqliteJournal
    from bridge.pipeline import Pipeline
    from bridge.pipeline.plugins import discover
    from bridge.pipeline.worker import Worker
    from bridge.sdk import API_VERSION, ParseError
    from bridge.testing import beside

    class Failing:
        name, description, topics = "failing", "fails on every bug report", ("failing.x",)
        api_version, schemas = API_VERSION, tmp_path

        def accepts(self, message):
            return message.get("X-Debian-PR-Message") is not None

        def parse(self, message):
            raise ParseError("cannot read this")

    (tmp_path / "failing.x.json").write_text(json.dumps(SCHEMA))
    mail = FIXTURES / "debbugs" / "report.eml"
    outcome = beside(Failing(), mail)
    assert [e.topic for e in outcome.journaled] == ["debbugs.bug.report"]
    assert outcome.failures == ["failing: cannot read this"]
    assert outcome.parsers == ["debbugs", "failing"]  # those that accepted the mail

    spool = Spool(tmp_path / "spool")
    spool.start()
    try:
        spool.write_now({"n": 1}, mail.read_bytes())
        journal = SqliteJournal(tmp_path / "journal.sqlite3")
        worker = Worker(spool, journal, Pipeline([*discover().parsers, Failing()]))
        assert worker.step() is True
        assert journal.topic_counts() == {"debbugs.bug.report": 1}
        (reason,) = spool.failed_dir.glob("*.reason")
        assert "failing: cannot read this" in reason.read_text()
    finally:
        spool.close()

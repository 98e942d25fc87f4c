"""Parser discovery through real entry points: plugins that keep the SDK's contract are used,
those that do not are refused with one readable line, and mail is never lost over it."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import FIXTURES, bridge, child_env

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

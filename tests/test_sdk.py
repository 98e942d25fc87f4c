"""The SDK seen from outside: a third source, installed only through its entry point."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import FIXTURES, ROOT, bridge, require
from tests.test_replay_mbox import write_mbox

EXAMPLE = ROOT / "examples" / "bridge-parser-security"


def plugin_installed() -> None:
    try:
        importlib.metadata.distribution("bridge-parser-security")
    except importlib.metadata.PackageNotFoundError:
        require(False, "the example plugin is not installed (pip install -e " + str(EXAMPLE) + ")")


def query(state: Path, *args: str) -> list[dict]:
    result = bridge("--state-dir", str(state), "query", "--json", *args)
    assert result.returncode == 0, result.stderr.decode()
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def test_an_mbox_of_three_sources_gives_events_from_all_three_and_queries_find_them(tmp_path):
    plugin_installed()
    mails = [
        (FIXTURES / "debbugs" / "report.eml").read_bytes(),
        (FIXTURES / "dak" / "accepted-2022-pgp-mime.eml").read_bytes(),
        (EXAMPLE / "tests" / "fixtures" / "dsa-exim4.eml").read_bytes(),
        (EXAMPLE / "tests" / "fixtures" / "dla-libxml2.eml").read_bytes(),
    ]
    state = tmp_path / "state"
    mbox = write_mbox(tmp_path / "three.mbox", mails)
    result = bridge("--state-dir", str(state), "replay-mbox", "--json-summary", str(mbox))
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["by_topic"] == {
        "debbugs.bug.report": 1,
        "dak.upload.accepted": 1,
        "security.advisory": 2,
    }
    (by_package,) = query(state, "--package", "exim4")
    assert by_package["msg"]["advisory"] == "DSA-5512-1"
    assert [e["msg"]["advisory"] for e in query(state, "--bug", "1053310")] == ["DSA-5512-1"]
    assert [e["msg"]["advisory"] for e in query(state, "--person", "lee@debian.org")] == [
        "DLA-3405-1"
    ]
    assert [e["msg"]["advisory"] for e in query(state, "--topic", "security")] == [
        "DLA-3405-1",
        "DSA-5512-1",
    ]


def test_the_bridge_and_the_built_in_parsers_never_name_the_plugin():
    for path in [*(ROOT / "bridge").rglob("*.py"), *(ROOT / "parsers").rglob("*.py")]:
        text = path.read_text()
        assert "bridge_parser_security" not in text and "security.advisory" not in text, path


def test_the_built_in_parsers_import_nothing_from_the_bridge_but_the_sdk():
    for path in (ROOT / "parsers").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bridge"):
                assert node.module == "bridge.sdk", f"{path.name} imports {node.module}"


def test_help_and_parse_import_neither_zmq_nor_aiosmtpd(tmp_path):
    mail = FIXTURES / "debbugs" / "report.eml"
    for args in (["--help"], ["parse", str(mail)]):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "bridge", *args],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines()}
        assert not {m for m in imported if m.split(".")[0] in ("zmq", "aiosmtpd")}, args


def test_every_command_validates_the_config_it_is_given(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("colour = 'blue'\n")
    for args in (["parsers"], ["parse", str(FIXTURES / "debbugs" / "report.eml")], ["status"]):
        done = bridge("--config", str(bad), *args)
        assert done.returncode == 2, args
        (line,) = done.stderr.decode().splitlines()
        assert "unknown config key 'colour'" in line


def test_strip_pgp_removes_the_armour_and_undoes_dash_escaping():
    from bridge.sdk import strip_pgp

    signed = (
        "intro\n-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nline one\n- -- dashed\n"
        "-----BEGIN PGP SIGNATURE-----\n\niQEz\n-----END PGP SIGNATURE-----\n"
    )
    assert strip_pgp(signed) == "intro\nline one\n-- dashed"
    assert strip_pgp("- not signed, left alone\n") == "- not signed, left alone"


def test_cap_cuts_at_the_limit_and_not_before():
    from bridge.sdk import cap

    assert (cap("abc", 2), cap("ab", 2), cap("", 2)) == ("ab", "ab", "")


def test_a_plugin_must_declare_its_topics_as_a_tuple():
    import pytest

    from bridge.pipeline.plugins import PluginRefused, checked_topics
    from parsers.debbugs import DebbugsParser

    class OneString(DebbugsParser):
        topics = "debbugs.bug.report"

    class NoTopics(DebbugsParser):
        topics = ()

    assert checked_topics(DebbugsParser())[0] == "debbugs.bug.report"
    with pytest.raises(PluginRefused, match="not the string 'debbugs.bug.report'"):
        checked_topics(OneString())
    with pytest.raises(PluginRefused, match="declares no topics"):
        checked_topics(NoTopics())

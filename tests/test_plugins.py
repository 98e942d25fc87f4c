"""Parser discovery through real entry points, including a plugin that fails to load."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import FIXTURES, bridge, child_env

PLUGIN = """
from bridge.events import Event


class ShoutParser:
    name = "shout"

    def accepts(self, message):
        return message.get("Subject", "").isupper()

    def parse(self, message):
        return [Event("shout.heard", {"summary": message["Subject"]})]
"""


def install_plugins(site: Path) -> dict[str, str]:
    """A distribution on PYTHONPATH declaring one working and one broken parser."""
    (site / "shout_plugin.py").write_text(PLUGIN)
    dist = site / "shout_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shout-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[bridge.parsers]\nshout = shout_plugin:ShoutParser\nbroken = no_such_module:Parser\n"
    )
    return child_env(PYTHONPATH=str(site))


def test_third_party_parsers_load_and_a_broken_one_is_reported_not_fatal(tmp_path):
    env = install_plugins(tmp_path)
    listing = bridge("parsers", env=env)
    assert listing.returncode == 0
    rows = {line.split("\t")[0]: line.split("\t") for line in listing.stdout.decode().splitlines()}
    assert rows["shout"][1:] == ["shout_plugin", "shout-plugin 1.0", "ok"]
    assert rows["broken"][3].startswith("FAILED: ModuleNotFoundError")
    assert rows["debbugs"][3] == rows["dak"][3] == "ok"

    mail = tmp_path / "shout.eml"
    mail.write_bytes(b"From: a@example.org\nSubject: HELLO THERE\n\nhi\n")
    parsed = bridge("parse", str(mail), env=env)
    assert parsed.returncode == 0
    assert b'"topic": "org.debian.dev.shout.heard"' in parsed.stdout
    debbugs = bridge("parse", str(FIXTURES / "debbugs" / "report.eml"), env=env)
    assert b"debbugs.bug.report" in debbugs.stdout

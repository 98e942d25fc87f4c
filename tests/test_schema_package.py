"""contrib/debian-bus-messages: fedora-messaging's classes for the bridge's topics, a
distribution of their own, built from the bridge's schema files and versioned with them."""

from __future__ import annotations

import json
import subprocess
import tomllib
import venv

import pytest

from tests.helpers import ROOT

PACKAGE = ROOT / "contrib" / "debian-bus-messages"
SCHEMAS = ROOT / "parsers" / "schemas"


def test_the_package_is_versioned_with_the_schemas_and_names_each_topic():
    project = tomllib.loads((PACKAGE / "pyproject.toml").read_text())["project"]
    shipped = {p.stem: json.loads(p.read_text("utf-8")) for p in SCHEMAS.glob("*.json")}
    major = int(project["version"].split(".")[0])
    assert {schema["version"] for schema in shipped.values()} == {major}
    entry_points = project["entry-points"]["fedora.messages"]
    assert sorted(entry_points) == sorted(f"debian_bus.{topic}" for topic in shipped)
    # the package reads the bridge's own files, through the link, not copies of them
    link = PACKAGE / "debian_bus_messages" / "schemas"
    assert link.is_symlink() and link.resolve() == SCHEMAS.resolve()


@pytest.mark.slow
@pytest.mark.timeout(900)  # builds a virtualenv
def test_a_venv_with_only_the_package_and_fedora_messaging_has_the_bridges_classes(tmp_path):
    # a fresh one each time: nothing else of this checkout may be in it
    target = tmp_path / "venv"
    venv.create(target, with_pip=True)
    python = target / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(PACKAGE), "fedora-messaging>=3,<4"],
        capture_output=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr.decode()[-2000:]
    probe = """
import json
from fedora_messaging.message import get_class
cls = get_class("debian_bus.debbugs.bug.report")
try:
    import bridge
    bridge_found = bridge.__file__
except ImportError:
    bridge_found = None
print(json.dumps({"module": cls.__module__, "name": cls.__name__, "topic": cls.topic,
                  "schema": cls.body_schema, "bridge": bridge_found}))
"""
    ran = subprocess.run([str(python), "-c", probe], capture_output=True, cwd=tmp_path, timeout=60)
    assert ran.returncode == 0, ran.stderr.decode()
    found = json.loads(ran.stdout)
    assert (found["module"], found["name"]) == ("debian_bus_messages.fedora", "DebbugsBugReport")
    assert found["topic"] == "debbugs.bug.report"
    assert found["schema"] == json.loads((SCHEMAS / "debbugs.bug.report.json").read_text("utf-8"))
    assert found["bridge"] is None

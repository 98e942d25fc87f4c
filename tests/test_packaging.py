"""What a wheel of the bridge holds: every package of the source tree (an editable install,
as the tests use, would find a forgotten one anyway; ``pip install .`` would not)."""

from __future__ import annotations

import tomllib

from tests.helpers import ROOT


def test_every_package_of_the_tree_is_listed_for_the_wheel():
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("bridge", "parsers")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found <= listed, f"not in [tool.setuptools] packages: {sorted(found - listed)}"

"""docs/writing-a-parser.md works as written: every file it shows is written out and run."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.helpers import ROOT, child_env

GUIDE = ROOT / "docs" / "writing-a-parser.md"
_FILE = re.compile(r"^File `(?P<path>[^`]+)`:\n\n```\w*\n(?P<body>.*?)^```$", re.M | re.S)


def guide_files() -> dict[str, str]:
    return {m["path"]: m["body"] for m in _FILE.finditer(GUIDE.read_text())}


def test_the_guide_shows_a_whole_plugin():
    assert set(guide_files()) == {
        "news_parser/__init__.py",
        "news_parser/schemas/news.release.json",
        "fixtures/point-release.eml",
        "fixtures/point-release.json",
        "test_news.py",
        "pyproject.toml",
    }


def test_the_guides_plugin_passes_its_own_tests_and_installs_by_its_entry_point(tmp_path):
    for name, body in guide_files().items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)
    env = child_env(PYTHONPATH=str(tmp_path))
    tested = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_news.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "1 passed" in tested.stdout
    # installed the way the guide says, the bridge finds it through its entry point
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), "."],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=300,
    )
    listed = subprocess.run(
        [sys.executable, "-m", "bridge", "parsers"],
        capture_output=True,
        text=True,
        env=child_env(PYTHONPATH=str(target)),
        timeout=60,
    )
    assert "news\tnews_parser\tbridge-parser-news 1.0.0\tok\tnews.release" in listed.stdout


def test_every_public_name_of_the_sdk_and_the_test_kit_is_in_the_guide():
    import bridge.sdk
    import bridge.testing

    guide = GUIDE.read_text()
    reference = guide[guide.index("## Reference") :]
    for module in (bridge.sdk, bridge.testing):
        missing = [
            name for name in module.__all__ if not re.search(rf"`{re.escape(name)}[`(]", reference)
        ]
        assert missing == [], f"{module.__name__} names the guide does not document"

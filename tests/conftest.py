from __future__ import annotations

import os
import subprocess
import venv
from pathlib import Path

import pytest

from tests.helpers import CORPUS, postgres_schema, require, strict


def pytest_configure(config: pytest.Config) -> None:
    if strict() and not CORPUS.is_dir():  # one line, before any test runs
        raise pytest.UsageError(f"the shared corpus of real Debian mail is missing ({CORPUS})")


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def corpus() -> Path:
    require(CORPUS.is_dir(), f"the shared corpus of real Debian mail is not at {CORPUS}")
    return CORPUS


FEDMSG = "fedmsg[commands]==1.1.7"


@pytest.fixture(scope="session")
def fedmsg_tail(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with fedmsg 1.1.7 (cached between runs, outside the repository)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    home = cache / "debian-bus-bridge-tests" / "fedmsg-1.1.7"
    tail = home / "bin" / "fedmsg-tail"
    if not tail.exists():
        venv.create(home, with_pip=True, clear=True)
        result = subprocess.run(
            [str(home / "bin" / "python"), "-m", "pip", "install", "-q", FEDMSG],
            capture_output=True,
            timeout=600,
        )
        if result.returncode != 0:
            pytest.fail(f"could not install {FEDMSG}: {result.stderr.decode()[-2000:]}")
    return tail


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_location(request: pytest.FixtureRequest, tmp_path: Path):
    """Where a test's journal lives, once for each engine: a SQLite file, or a PostgreSQL
    schema of the test's own."""
    if request.param == "sqlite":
        yield str(tmp_path / "journal.sqlite3")
        return
    url, drop = postgres_schema()
    yield url
    drop()

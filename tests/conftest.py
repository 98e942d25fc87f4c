from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import CORPUS, cached_venv, postgres_schema, require, strict


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


@pytest.fixture(scope="session")
def corpus_state(tmp_path_factory, corpus) -> Path:
    """A state directory whose journal is the whole corpus, replayed by ``bridge
    replay-mbox``: read it, never write it (the tests that use it share it)."""
    from tests.helpers import bridge
    from tests.test_replay_mbox import write_mbox

    tmp = tmp_path_factory.mktemp("corpus-journal")
    mails = sorted(corpus.glob("mails/*/*.eml"))
    mbox = write_mbox(tmp / "corpus.mbox", [p.read_bytes() for p in mails])
    state = tmp / "state"
    replayed = bridge("--state-dir", str(state), "replay-mbox", str(mbox), timeout=300)
    assert replayed.returncode == 0, replayed.stderr.decode()
    return state


CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def browser():
    """Debian's headless Chromium, driven by Selenium through Debian's chromium-driver."""
    try:
        from selenium import webdriver
    except ImportError:
        require(False, "selenium is not installed (pip install -e '.[test]')")
    require(
        shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER),
        "Debian's chromium and chromium-driver packages are not installed",
    )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # tests run as root in CI
        "--disable-dev-shm-usage",
        "--window-size=1280,1400",
        # nothing of the browser's own talks to the network either
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    yield driver
    driver.quit()


FEDMSG = "fedmsg[commands]==1.1.7"


@pytest.fixture(scope="session")
def fedmsg_tail() -> Path:
    """fedmsg 1.1.7's ``fedmsg-tail``, in a cached virtualenv."""
    return cached_venv("fedmsg-1.1.7", FEDMSG) / "fedmsg-tail"


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

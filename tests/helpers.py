"""Helpers the tests share: free ports, running the real CLI, subscribing to the bus."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq

from bridge.client import decode
from bridge.events import Envelope, Event, Naming
from bridge.journal import JOURNAL_FILE, Journal, SqliteJournal

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus"
FIXTURES = ROOT / "fixtures"


def strict() -> bool:
    """In CI (or when asked) a missing prerequisite is a failure, never a silent skip."""
    return os.environ.get("CI") == "true" or os.environ.get("BRIDGE_REQUIRE_SERVICES") == "1"


def require(condition: object, reason: str) -> None:
    """Skip the test saying why, unless :func:`strict`, where the same reason fails it."""
    if not condition:
        if strict():
            pytest.fail(f"{reason} (required here: CI=true or BRIDGE_REQUIRE_SERVICES=1)")
        pytest.skip(reason)


def _first_ephemeral_port() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, for a child to bind. Not one the kernel would pick (port 0):
    those are the ephemeral ports, and any outgoing connection (a browser's, a client's) may
    take one as its source port between this check and the child's bind, as a serve once
    found its publish port taken. The ports below the ephemeral range are drawn at random,
    each handed out once per test run."""
    low = _first_ephemeral_port()
    if low > 11000:
        for _ in range(200):
            port = random.randrange(10000, low)
            if port in _HANDED_OUT:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _HANDED_OUT.add(port)
            return port
    with socket.socket() as s:  # a machine whose ephemeral range leaves nothing below it
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bridge(
    *args: str, input: bytes | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    """Run the real ``bridge`` command line in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        input=input,
        capture_output=True,
        timeout=timeout,
        env=env or child_env(),
    )


OFFLINE_CONFIG = Path(__file__).parent / "offline.toml"
OFFLINE_TRUST = "[trust]\ndns = false\n"  # what every test config holds: no real DNS


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, BRIDGE_CONFIG=str(OFFLINE_CONFIG))
    env.update(extra)
    return env


class BridgeChild:
    """A bridge command run as a child process by a test, its output in :attr:`log`; a
    stop waits :attr:`grace` seconds for it to end by itself."""

    grace = 20.0
    proc: subprocess.Popen[bytes] | None
    log: Path

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        assert self.proc is not None
        return stop_child(self.proc, grace=self.grace)

    def log_text(self) -> str:
        return read_log(self.log)


class Server(BridgeChild):
    """A real ``bridge serve`` child process."""

    def __init__(
        self,
        state_dir: Path,
        *args: str,
        config: Path | None = None,
        preexec: Callable[[], None] | None = None,
        env: dict[str, str] | None = None,
    ):
        self.state_dir = state_dir
        self.env = env or child_env()
        self.publish = f"tcp://127.0.0.1:{free_port()}"
        self.replay = f"tcp://127.0.0.1:{free_port()}"
        self.smtp_port = free_port()
        self.args = list(args)
        self.config = config
        self.preexec = preexec
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = state_dir.parent / f"{state_dir.name}-serve.log"

    def start(self) -> Server:
        base = [sys.executable, "-m", "bridge", "-v", "--state-dir", str(self.state_dir)]
        if self.config:
            base += ["--config", str(self.config)]
        cmd = base + [
            "serve",
            "--publish",
            self.publish,
            "--replay",
            self.replay,
            "--smtp",
            f"127.0.0.1:{self.smtp_port}",
            *self.args,
        ]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, preexec_fn=self.preexec
            )
        return self

    def wait_for_smtp(self, timeout: float = 20) -> None:
        wait_until(
            lambda: _port_open(self.smtp_port), timeout, f"SMTP port; log: {self.log_text()}"
        )


def stop_child(proc: subprocess.Popen[bytes], grace: float) -> int:
    """SIGTERM a child process, SIGKILL it if it is not gone within *grace* seconds; its
    exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def read_log(path: Path) -> str:
    """A child's log file so far ("" before it wrote one)."""
    return path.read_text(errors="replace") if path.exists() else ""


RCPT = "bridge@localhost"
PROBE_TOPIC = "bridge.probe"


def config_file(tmp_path: Path, smtp: str = "", top: str = "", trust: str = "") -> Path:
    """A bridge.toml with *top* keys, an ``[smtp]`` section holding *smtp* and a
    ``[trust]`` section (DNS off) holding *trust*."""
    path = tmp_path / "bridge.toml"
    path.write_text(f"{top}\n[smtp]\n{smtp}\n{OFFLINE_TRUST}{trust}\n")
    return path


def send(server: Server, raw: bytes, rcpt: str = RCPT) -> dict:
    """Deliver *raw* to the server with a real SMTP client; the refused recipients."""
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client:
        return client.sendmail("lists@example.org", [rcpt], raw)


def sql(journal_file: Path, statement: str, params: tuple = ()) -> list[tuple]:
    """Run SQL on a journal file from outside the bridge (to inspect it, or to break it)."""
    db = sqlite3.connect(journal_file, isolation_level=None)
    try:
        return db.execute(statement, params).fetchall()
    finally:
        db.close()


def counters(server: Server) -> dict[str, int]:
    """The running server's counters, as ``bridge status`` reports them."""
    status = bridge("--state-dir", str(server.state_dir), "status", "--json")
    return json.loads(status.stdout)["counters"]


def start_data(raw: socket.socket):
    """Speak SMTP by hand up to the DATA prompt; return the reader for the replies."""
    reader = raw.makefile("rb")
    assert reader.readline().startswith(b"220 ")
    for command in (
        b"HELO raw.example.org",
        b"MAIL FROM:<l@example.org>",
        f"RCPT TO:<{RCPT}>".encode(),
        b"DATA",
    ):
        raw.sendall(command + b"\r\n")
        reply = reader.readline()
        assert reply[:1] in (b"2", b"3"), reply
    return reader


def journal_events(state_dir: Path) -> list[Envelope]:
    with SqliteJournal(state_dir / JOURNAL_FILE) as journal:
        return list(journal.envelopes(journal.rows_after(0, limit=100_000)))


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(predicate: Callable[[], object], timeout: float, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Subscriber:
    """A real SUB socket collecting envelopes."""

    def __init__(self, endpoint: str, topic: str = "", rcvhwm: int = 1_000_000):
        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RECONNECT_IVL, 50)
        self.sock.setsockopt_string(zmq.SUBSCRIBE, topic)
        self.sock.connect(endpoint)
        self.received: list[Envelope] = []
        self.raw: list[list[bytes]] = []

    def collect(self, until: Callable[[list[Envelope]], bool], timeout: float) -> list[Envelope]:
        deadline = time.monotonic() + timeout
        while not until(self.received) and time.monotonic() < deadline:
            if self.sock.poll(100):
                frames = self.sock.recv_multipart()
                envelope = decode(frames)
                if envelope is not None and not envelope.topic.endswith(PROBE_TOPIC):
                    self.raw.append(frames)
                    self.received.append(envelope)
        return self.received

    def warm_up(self, state_dir: Path, timeout: float = 20) -> None:
        """Journal probe events until one arrives: from then on nothing is missed for joining.

        A SUB socket silently misses what is published before it has joined; probing is
        how a test knows it has, rather than sleeping and hoping.
        """
        with SqliteJournal(state_dir / JOURNAL_FILE) as journal:
            self.warm_up_journal(journal, timeout)

    def warm_up_journal(self, journal: Journal, timeout: float = 20) -> None:
        """:meth:`warm_up` on a journal the test has open (a shared one, say)."""
        deadline = time.monotonic() + timeout
        for n in itertools.count():
            probe = Event(PROBE_TOPIC, {"probe": n}, dedup_key=f"probe-{time.time_ns()}")
            journal.append([probe], "test")
            if self.sock.poll(200):
                break
            assert time.monotonic() < deadline, "the subscriber never received a probe"
        while self.sock.poll(300):  # drain the probes still on their way
            self.sock.recv_multipart()

    def close(self) -> None:
        self.sock.close()
        self.context.term()


POSTGRES = os.environ.get("BRIDGE_TEST_POSTGRES", "postgresql://127.0.0.1:5432/test")


def postgres_schema() -> tuple[str, Callable[[], None]]:
    """A journal URL on the test PostgreSQL in a schema of its own, and how to drop it.
    Skips (fails where services are required) when PostgreSQL is unreachable."""
    try:
        import psycopg

        admin = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=5)
    except Exception as e:  # not installed, not running
        require(False, f"PostgreSQL is not reachable at {POSTGRES}: {e}")
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in POSTGRES else "?"
    url = f"{POSTGRES}{separator}options=-csearch_path%3D{schema}"

    def drop() -> None:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()

    return url, drop


def open_journal_at(location: str | Path, naming: Naming | None = None) -> Journal:
    """The journal at *location*: a SQLite file, or a postgresql:// URL."""
    if str(location).startswith("postgresql://"):
        from bridge.journal.postgres import PostgresJournal

        return PostgresJournal(str(location), naming)
    return SqliteJournal(location, naming)


def descendants(pid: int) -> set[int]:
    """The processes below *pid* (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def cached_venv(name: str, *requirements: str, timeout: float = 900) -> Path:
    """The ``bin`` folder of a virtualenv holding *requirements*, built on first use and
    cached between runs outside the repository (``$XDG_CACHE_HOME``)."""
    import venv

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    home = cache / "debian-bus-bridge-tests" / name
    python = home / "bin" / "python"
    if not python.exists():
        venv.create(home, with_pip=True, clear=True)
        result = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *requirements],
            capture_output=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            pytest.fail(f"could not install {requirements}: {result.stderr.decode()[-2000:]}")
    return home / "bin"

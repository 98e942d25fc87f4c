"""``Type=notify``: READY=1 only once SMTP accepts connections, STOPPING=1 on SIGTERM,
through a real notification socket."""

from __future__ import annotations

import signal
import socket

import pytest

from tests.helpers import Server, child_env
from tests.web import WebServer


@pytest.fixture
def notifications(tmp_path, monkeypatch):
    """A notification socket as systemd's, named in the environment of every child the
    tests start; what arrives on it."""
    path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(60)
    for module in ("tests.helpers", "tests.web"):
        monkeypatch.setattr(f"{module}.child_env", lambda **_: child_env(NOTIFY_SOCKET=path))
    yield listener
    listener.close()


def test_ready_after_smtp_listens_and_stopping_on_sigterm(tmp_path, notifications):
    server = Server(tmp_path / "state").start()
    try:
        ready = notifications.recv(4096).decode()
        # at the moment systemd hears READY, a client can connect
        with socket.create_connection(("127.0.0.1", server.smtp_port), timeout=2) as client:
            assert client.recv(100).startswith(b"220")
        assert ready.startswith("READY=1\nSTATUS=SMTP on")
        server.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        stopping = notifications.recv(4096).decode()
        assert stopping == "STOPPING=1"
        assert server.proc.wait(30) == 0  # type: ignore[union-attr]
    finally:
        if server.proc.poll() is None:  # type: ignore[union-attr]
            server.stop()


def test_bridge_web_is_ready_when_it_answers_and_says_when_it_stops(tmp_path, notifications):
    web = WebServer(tmp_path / "state").start()
    try:
        assert notifications.recv(4096).decode() == "READY=1"
        web.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        assert notifications.recv(4096).decode() == "STOPPING=1"
        assert web.proc.wait(30) == 0  # type: ignore[union-attr]
    finally:
        web.stop()


def test_without_systemd_nothing_is_sent(monkeypatch):
    from bridge.systemd import notify, watchdog_interval

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")  # another process's watchdog
    assert notify("READY=1") is False
    assert watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    assert watchdog_interval() == 2.0


@pytest.mark.parametrize(
    "name", ["debian-bus-bridge", "debian-bus-bridge-web", "debian-bus-bridge-notify"]
)
def test_the_units_pass_systemd_analyze_verify(tmp_path, name):
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from tests.helpers import ROOT, require

    analyze = shutil.which("systemd-analyze")
    require(analyze is not None, "systemd-analyze is not installed (package systemd)")
    unit = (ROOT / "contrib" / "systemd" / f"{name}.service").read_text()
    assert "Type=notify" in unit and "DynamicUser=yes" in unit and "ProtectSystem=strict" in unit
    # verify checks that ExecStart's program exists: point it at this checkout's
    program = Path(sys.executable).with_name("bridge")
    local = tmp_path / f"{name}.service"
    local.write_text(unit.replace("/usr/bin/bridge", str(program)))
    result = subprocess.run([analyze, "verify", str(local)], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr.decode().strip() == "", result.stderr.decode()  # no unknown key, no typo

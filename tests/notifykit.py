"""What the notification tests run against: a webhook endpoint of their own that checks
signatures as the Standard Webhooks specification says (computed here, not with the
bridge's code), ``bridge notify`` as a child process, and an ngircd of their own."""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.helpers import (
    BridgeChild,
    child_env,
    free_port,
    require,
    wait_until,
)

SECRET = "whsec_" + base64.b64encode(b"the tests' own webhook secret 32").decode()
TOLERANCE = 300  # seconds a webhook's timestamp may be off, as the specification's libraries


def expected_signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, msg_id.encode() + b"." + timestamp.encode() + b"." + body, "sha256")
    return base64.b64encode(mac.digest()).decode()


class WebhookReceiver:
    """A webhook endpoint on a free port. Each POST whose signature and timestamp verify is
    recorded as (path, webhook-id, payload) and answered 204; any other is recorded in
    :attr:`refused` and answered 401. *delay* slows each answer; *failing* answers 500."""

    def __init__(self, secret: str = SECRET, delay: float = 0.0):
        self.secret = secret
        self.delay = delay
        self.failing = False
        self.received: list[tuple[str, str, dict[str, Any]]] = []
        self.refused: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                time.sleep(receiver.delay)
                status = receiver.take(self.path, self.headers, body)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def take(self, path: str, headers: Any, body: bytes) -> int:
        msg_id = headers.get("webhook-id", "")
        timestamp = headers.get("webhook-timestamp", "")
        signatures = headers.get("webhook-signature", "").split()
        wanted = "v1," + expected_signature(self.secret, msg_id, timestamp, body)
        with self.lock:
            if self.failing:
                return 500
            if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > TOLERANCE:
                self.refused.append(f"{path}: timestamp {timestamp!r}")
                return 401
            if not any(hmac.compare_digest(s, wanted) for s in signatures):
                self.refused.append(f"{path}: signature {signatures!r}")
                return 401
            self.received.append((path, msg_id, json.loads(body)))
        return 204

    def at(self, path: str) -> list[tuple[str, dict[str, Any]]]:
        """(webhook-id, payload) of each delivery to *path*, repeats included."""
        with self.lock:
            return [(i, p) for where, i, p in self.received if where == path]

    def events_at(self, path: str) -> dict[str, dict[str, Any]]:
        """The single-event deliveries to *path*: ``{event msg_id: envelope}`` once each."""
        return {
            p["data"]["event"]["msg_id"]: p["data"]["event"]
            for _, p in self.at(path)
            if p["data"]["kind"] == "event"
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Notifier(BridgeChild):
    """``bridge notify`` in a child process, its log in a file beside the state."""

    grace = 30.0

    def __init__(
        self, state_dir: Path, config: Path, *args: str, env: dict[str, str] | None = None
    ):
        self.state_dir, self.config, self.args = state_dir, config, list(args)
        self.env = env or child_env()
        self.log = state_dir.parent / f"{state_dir.name}-notify.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.prefix: list[str] = []

    def start(self, *prefix: str) -> Notifier:
        started = self.log_text().count("bridge notify:")
        cmd = [
            *prefix,
            sys.executable,
            "-m",
            "bridge",
            "-v",
            "--config",
            str(self.config),
            "--state-dir",
            str(self.state_dir),
            "notify",
            *self.args,
        ]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        wait_until(
            lambda: (
                self.log_text().count("bridge notify:") > started or self.proc.poll() is not None
            ),
            30,
            f"bridge notify to start; log: {self.log_text()}",
        )
        assert self.proc.poll() is None, self.log_text()
        return self


class Ngircd:
    """Debian's ngircd on a free loopback port, with a configuration of the test's own."""

    def __init__(self, port: int | None = None) -> None:
        require(shutil.which("ngircd") is not None, "ngircd is not installed (package ngircd)")
        self.root = Path(tempfile.mkdtemp(prefix="bridge-ngircd-"))
        self.port = port or free_port()
        self.conf = self.root / "ngircd.conf"
        motd = self.root / "motd"
        motd.write_text("test server\n")
        self.conf.write_text(
            "[Global]\n"
            "Name = irc.bridge-test.example\n"
            "Info = the tests' own IRC server\n"
            f"Ports = {self.port}\n"
            "Listen = 127.0.0.1\n"
            f"MotdFile = {motd}\n"
            f"PidFile = {self.root / 'ngircd.pid'}\n"
            "[Limits]\n"
            "PingTimeout = 120\n"
            "PongTimeout = 20\n"
            # no penalties: what arrives when shows the client's own pacing
            "MaxPenaltyTime = 0\n"
            "MaxConnectionsIP = 20\n"
            "[Options]\n"
            "DNS = no\n"
            "Ident = no\n"
            "PAM = no\n"
            "[SSL]\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Ngircd:
        self.proc = subprocess.Popen(
            ["ngircd", "--nodaemon", "--config", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def listening() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                return False

        wait_until(listening, 20, f"ngircd on port {self.port}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


class IrcListener:
    """A client in a channel that records each PRIVMSG it sees with when it arrived."""

    def __init__(self, port: int, channel: str, nick: str = "listener"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.channel = channel
        self.lines: list[tuple[float, str, str]] = []  # (arrival, sender nick, text)
        self.joined = threading.Event()
        self._send(f"NICK {nick}")
        self._send(f"USER {nick} 0 * :test listener")
        self._buffer = b""
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        assert self.joined.wait(20), "the listener could not join"

    def _send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r\n")

    def _read(self) -> None:
        self.sock.settimeout(None)
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            self._buffer += chunk
            *lines, self._buffer = self._buffer.split(b"\r\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace")
                parts = line.split(" ", 3)
                if line.startswith("PING"):
                    self._send("PONG" + line[4:])
                elif len(parts) > 1 and parts[1] == "001":
                    self._send(f"JOIN {self.channel}")
                elif len(parts) > 1 and parts[1] == "366":  # end of the names: joined
                    self.joined.set()
                elif len(parts) == 4 and parts[1] == "PRIVMSG":
                    nick = parts[0].lstrip(":").split("!", 1)[0]
                    self.lines.append((time.monotonic(), nick, parts[3].removeprefix(":")))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send("QUIT")
        self.sock.close()


def faketime_env(offset: float) -> dict[str, str]:
    """The environment that runs a child *offset* seconds ahead of the real clock,
    with Debian's libfaketime: how a test lets an hour pass without waiting for it."""
    library = next(
        (
            p
            for p in (
                "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
            )
            if os.path.exists(p)
        ),
        None,
    )
    require(library is not None, "libfaketime is not installed (package faketime)")
    return child_env(
        LD_PRELOAD=str(library), FAKETIME=f"{round(offset):+d}", FAKETIME_DONT_FAKE_MONOTONIC="1"
    )


def offset_to_minute(minute: int) -> float:
    """The clock offset, in seconds, that puts a child at *minute* past the current hour
    (backwards if need be): a test whose hour must not end while it runs starts there,
    wherever in the hour the real clock is."""
    now = time.time()
    return minute * 60 - now % 3600

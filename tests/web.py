"""A real ``bridge web`` child process on a free port, and a plain HTTP client for it (the
standard library's, so the tests share no code with the server)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers import BridgeChild, child_env, free_port, wait_until


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class WebServer(BridgeChild):
    """``bridge web`` reading the journal in *state_dir* (with *config*, if given)."""

    grace = 15.0

    def __init__(self, state_dir: Path, config: Path | None = None):
        self.state_dir = state_dir
        self.config = config
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = state_dir.parent / f"{state_dir.name}-web.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WebServer:
        cmd = [sys.executable, "-m", "bridge", "-v", "--state-dir", str(self.state_dir)]
        if self.config:
            cmd += ["--config", str(self.config)]
        cmd += ["web", "--listen", f"127.0.0.1:{self.port}"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env())
        wait_until(self._ready, 20, f"bridge web on {self.base}; log: {self.log_text()}")
        return self

    def _ready(self) -> bool:
        try:
            return self.get("/healthz").status == 200
        except OSError:
            return False

    def get(self, path: str, headers: dict[str, str] | None = None) -> Reply:
        return self.request("GET", path, headers=headers)

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> Reply:
        return self.request("POST", path, body, headers)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        request = urllib.request.Request(
            self.base + path, data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return Reply(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as e:
            return Reply(e.code, dict(e.headers), e.read())

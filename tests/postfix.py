"""A postfix instance of the test's own: its own configuration directory, queue, log and
mailboxes, listening on a free port, routing the bridge's address to the bridge."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.helpers import free_port, require

BRIDGE_ADDRESS = "bridge@lists.example.org"

MASTER = """\
{port}    inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix:
    """Start with :meth:`start`, submit with SMTP to :attr:`port`, stop with :meth:`stop`."""

    def __init__(self, bridge_port: int):
        require(shutil.which("postfix") is not None, "postfix is not installed (package postfix)")
        # postfix's daemons run as the postfix user, which must reach the queue: not under a
        # test's private temporary directory
        root = Path(tempfile.mkdtemp(prefix="bridge-postfix-"))
        root.chmod(0o755)
        self.root = root
        self.port = free_port()
        self.config_dir = root / "etc"
        self.queue = root / "queue"
        self.log = root / "maillog"
        self.mail = root / "mail"
        for folder in (self.config_dir, self.queue, root / "data", self.mail):
            folder.mkdir(parents=True, exist_ok=True)
        self.mail.chmod(0o1777)
        (root / "data").chmod(0o755)
        shutil.chown(root / "data", "postfix")
        (self.config_dir / "transport").write_text(
            f"{BRIDGE_ADDRESS} smtp:[127.0.0.1]:{bridge_port}\n"
        )
        (self.config_dir / "main.cf").write_text(
            "compatibility_level = 3.6\n"
            f"queue_directory = {self.queue}\n"
            f"data_directory = {root / 'data'}\n"
            "mail_owner = postfix\nsetgid_group = postdrop\n"
            "inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\n"
            "myhostname = mx.bridge-test.example\nmydomain = bridge-test.example\n"
            "mydestination = localhost\nmynetworks = 127.0.0.0/8\nrelayhost =\n"
            "alias_maps =\nalias_database =\n"
            f"mail_spool_directory = {self.mail}\n"
            f"transport_maps = texthash:{self.config_dir / 'transport'}\n"
            "relay_domains = lists.example.org\n"
            "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n"
            # a bridge that is down must cost a retry soon, not a bounce
            "queue_run_delay = 1s\nminimal_backoff_time = 1s\nmaximal_backoff_time = 2s\n"
            "maximal_queue_lifetime = 1d\nbounce_queue_lifetime = 1d\n"
            "smtp_connect_timeout = 5s\n"
            f"maillog_file = {self.log}\nmaillog_file_prefixes = {root}\n"
            "smtputf8_enable = no\n"
        )
        (self.config_dir / "master.cf").write_text(MASTER.format(port=f"127.0.0.1:{self.port}"))

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["postfix", "-c", str(self.config_dir), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def start(self) -> Postfix:
        self.run("set-permissions")
        started = self.run("start")
        assert started.returncode == 0, started.stderr
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"postfix did not listen; log: {self.log_text()[-2000:]}")

    def flush(self) -> None:
        subprocess.run(
            ["postqueue", "-c", str(self.config_dir), "-f"], capture_output=True, timeout=60
        )

    def queue_size(self) -> int:
        out = subprocess.run(
            ["postqueue", "-c", str(self.config_dir), "-j"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        return sum(1 for line in out.splitlines() if line.strip())

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        self.run("stop")
        shutil.rmtree(self.root, ignore_errors=True)

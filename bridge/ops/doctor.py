"""``bridge doctor``: is this host ready to run the bridge? One line per check.

Each check says ``ok``, ``warn`` (works, but not as a deployment should) or ``FAIL`` and
why; the command exits non-zero when any check fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bridge.config import Config, parse_hostport

OK, WARN, FAIL = "ok", "warn", "FAIL"
VOLATILE = {"tmpfs", "ramfs"}  # fsync returns at once and the data is gone on reboot


@dataclass(frozen=True)
class Check:
    status: str
    name: str
    detail: str

    def line(self) -> str:
        return f"{self.status:4} {self.name}: {self.detail}"


def run_checks(config: Config, source: str, postfix_dir: str | None = None) -> Iterator[Check]:
    yield Check(OK, "config", f"valid ({source})")
    smtp = _guard("smtp port", lambda: _listener(config.smtp.listen))
    yield smtp
    running = smtp.detail.startswith("held by")
    for name, endpoint in (("publish", config.bus.publish), ("replay", config.bus.replay)):
        yield _guard(
            f"{name} endpoint", lambda e=endpoint, n=name: _zmq_port(n, e, bridge_running=running)
        )
    yield _guard("state dir", lambda: _state_dir(config.state_path))
    yield from _parsers()
    yield from _keyrings(config)
    yield _guard("dkim keys", lambda: _dkim_keys(config))
    yield _guard("journal", lambda: _journal(config))
    if config.amqp.url:
        yield _guard("amqp", lambda: _amqp(config))
    yield _guard("mta route", lambda: _mta_route(config, postfix_dir))


def _parsers() -> Iterator[Check]:
    """Each installed parser plugin that is not used is a failure: its mail would go
    unread."""
    from bridge.pipeline.plugins import discover

    registry = discover()
    for info in registry.failures:
        yield Check(FAIL, f"parser {info.name}", f"{info.module} is not used: {info.error}")
    used = ", ".join(p.name for p in registry.plugins if p.parser is not None) or "none"
    yield Check(OK if registry.parsers else FAIL, "parsers", f"in use: {used}")


def _guard(name: str, check: Callable[[], Check]) -> Check:
    try:
        return check()
    except Exception as e:  # a check that breaks is a failed check, with the reason
        return Check(FAIL, name, f"{type(e).__name__}: {e}")


def _listener(listen: str) -> Check:
    host, port = parse_hostport(listen)
    if _free(host, port):
        return Check(OK, "smtp port", f"{host}:{port} is free")
    try:
        with socket.create_connection((host, port), timeout=3) as raw:
            first = raw.recv(200)  # an SMTP server speaks first: its banner
    except OSError:
        first = b""
    if b"debian-bus-bridge" in first:
        return Check(OK, "smtp port", f"held by a running bridge ({first.decode().strip()})")
    return Check(FAIL, "smtp port", f"{host}:{port} is taken by another program ({first[:60]!r})")


def _free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _zmq_port(name: str, endpoint: str, *, bridge_running: bool) -> Check:
    if not endpoint.startswith("tcp://"):
        return Check(OK, f"{name} endpoint", f"{endpoint} (not TCP: not checked)")
    host, port = parse_hostport(endpoint.removeprefix("tcp://").replace("*", "0.0.0.0"))
    if _free(host, port):
        return Check(OK, f"{name} endpoint", f"{endpoint} is free")
    if bridge_running:
        return Check(OK, f"{name} endpoint", f"{endpoint} is held by the running bridge")
    return Check(FAIL, f"{name} endpoint", f"{endpoint} is taken by another program")


def _state_dir(path: Path) -> Check:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-") as probe:
            probe.write(b"x")
            probe.flush()
            os.fsync(probe.fileno())
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        return Check(FAIL, "state dir", f"{path} is not writable: {e.strerror or e}")
    fstype = filesystem_type(path)
    if fstype in VOLATILE:
        return Check(
            FAIL, "state dir", f"{path} is on {fstype}: fsync keeps nothing across a reboot"
        )
    return Check(OK, "state dir", f"{path} is writable and fsyncs ({fstype or 'unknown fs'})")


def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding *path* (the longest mount point above it)."""
    best, kind = "", ""
    target = str(path.resolve())
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return ""
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) >= len(
            best
        ):
            best, kind = point, fields[2]
    return kind


def _keyrings(config: Config) -> Iterator[Check]:
    trust = config.trust
    if not trust.verify:
        yield Check(WARN, "trust", "verification is off ([trust] verify = false)")
        return
    if not trust.keyrings:
        yield Check(WARN, "keyrings", "none: every upload's signed_by will be 'unverified'"
                    " (apt install debian-keyring)")  # fmt: skip
    for keyring in trust.keyrings:
        if Path(keyring).is_file() and os.access(keyring, os.R_OK):
            yield Check(OK, "keyring", keyring)
        else:
            yield Check(FAIL, "keyring", f"{keyring} is missing or unreadable")
    if trust.keyrings and shutil.which(trust.gpgv) is None:
        yield Check(FAIL, "gpgv", f"{trust.gpgv} is not installed (apt install gpgv)")


def _dkim_keys(config: Config) -> Check:
    trust = config.trust
    from bridge.trust.keys import KeyStore, read_key_file

    records = read_key_file(Path(trust.dkim_keys).expanduser()) if trust.dkim_keys else {}
    if not trust.dns:
        if records:
            return Check(OK, "dkim keys", f"DNS off; {len(records)} key(s) from {trust.dkim_keys}")
        return Check(
            WARN, "dkim keys", "DNS off and no [trust] dkim_keys: no DKIM key to check with"
        )
    keys = KeyStore({}, dns=True, timeout=min(trust.dns_timeout, 5.0),
                    servers=trust.dns_servers, port=trust.dns_port)  # fmt: skip
    lookup = keys.lookup("smtpauto.buxtehude._domainkey.bugs.debian.org")
    if lookup.record is not None:
        return Check(OK, "dkim keys", "DNS answers (bugs.debian.org's key found)")
    if lookup.temporary:
        return Check(FAIL, "dkim keys", f"DNS does not answer: {lookup.reason}")
    return Check(WARN, "dkim keys", f"DNS answers, but: {lookup.reason}")


def _journal(config: Config) -> Check:
    from bridge.journal import open_journal

    with open_journal(config) as journal:
        problems = journal.check()
        where = journal.location
        last = journal.last_seq_id()
    if problems:
        return Check(FAIL, "journal", f"{where}: {problems[0]} (bridge fsck)")
    return Check(OK, "journal", f"{where}: sound, {last} event(s)")


def _amqp(config: Config) -> Check:
    import pika

    from bridge.sinks.amqp import connection_parameters

    connection = pika.BlockingConnection(
        connection_parameters(
            config.amqp.url, config.amqp.ca_certificate, config.amqp.certificate, config.amqp.key
        )
    )
    connection.close()
    return Check(OK, "amqp", "the broker accepts a connection")


def _mta_route(config: Config, postfix_dir: str | None) -> Check:
    """Does the host's postfix (or the instance in *postfix_dir*) route the bridge's
    address to the bridge's SMTP listener?"""
    postconf = shutil.which("postconf")
    if postconf is None:
        return Check(WARN, "mta route", "no postfix here (postconf not found): route mail yourself")
    instance = ["-c", postfix_dir] if postfix_dir else []
    maps = subprocess.run([postconf, *instance, "-h", "transport_maps"], capture_output=True,
                          text=True, timeout=10).stdout.strip()  # fmt: skip
    address = next((r for r in config.smtp.recipients if "@" in r and not r.startswith("@")), "")
    if not maps or not address:
        return Check(FAIL, "mta route", "postfix has no transport_maps entry for the bridge")
    host, port = parse_hostport(config.smtp.listen)
    for table in maps.replace(",", " ").split():
        found = subprocess.run(["postmap", *instance, "-q", address, table], capture_output=True,
                               text=True, timeout=10).stdout.strip()  # fmt: skip
        if found and f":{port}" in found:
            return Check(OK, "mta route", f"postfix sends {address} to {found} ({table})")
    return Check(
        FAIL, "mta route", f"postfix's transport_maps do not send {address} to port {port}"
    )

"""``bridge web`` under hostile load: the CPU of never-matching live streams, and /healthz
while a thousand streams and hundreds of half-sent requests hold connections.

    python bench/web_hostile.py [--events 100000] [--reuse JOURNAL] [--checkout DIR --old]

Builds a journal as bench/history.py does (or reuses one), starts a real ``bridge web`` on
it, then:

1. opens *--streams* streams whose filter never matches (``category=debbugs&contains=…``)
   and reads the web process's CPU time over *--seconds*; the baseline in the same run is
   the same process with no stream open;
2. opens *--open-streams* streams and *--slowloris* connections that never finish their
   request head, and times ``/healthz`` (p50, p95); the baseline is ``/healthz`` before any
   of them. Streams and connections over what the server allows are counted, not retried.

``--checkout DIR`` runs ``bridge web`` from another checkout (an older one, for a before
figure); ``--old`` leaves out the config keys such a checkout does not know.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import history  # noqa: E402

from bridge.journal import JOURNAL_FILE, SqliteJournal  # noqa: E402

NEVER = "/v1/stream?category=debbugs&contains=zq-never-matches-qz"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User and system CPU of process *pid* so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_stream(port: int, path: str) -> socket.socket | None:
    """A stream left open (None when the server refused it)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    head = sock.recv(4096)
    if not head.startswith(b"HTTP/1.1 200"):
        sock.close()
        return None
    return sock


def healthz_ms(port: int, requests: int) -> list[float]:
    times = []
    for _ in range(requests):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        started = time.perf_counter()
        try:
            connection.request("GET", "/healthz")
            connection.getresponse().read()
            times.append((time.perf_counter() - started) * 1000)
        except OSError:
            times.append(float("inf"))  # no answer: counted as such
        finally:
            connection.close()
    return sorted(times)


def describe(times: list[float]) -> str:
    p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
    answered = sum(t != float("inf") for t in times)
    return f"p50 {statistics.median(times):8.2f} ms  p95 {p95:8.2f} ms  ({answered}/{len(times)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--reuse", type=Path)
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--checkout", type=Path, default=ROOT)
    parser.add_argument("--old", action="store_true")
    parser.add_argument("--streams", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--open-streams", type=int, default=1000)
    parser.add_argument("--slowloris", type=int, default=300)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-web-hostile-", dir=args.dir))
    state = workdir / "state"
    state.mkdir()
    journal_path = state / JOURNAL_FILE
    if args.reuse:
        shutil.copy(args.reuse, journal_path)
    else:
        print(f"building {args.events:,} events into {journal_path}")
        with SqliteJournal(journal_path, history.NAMING, durable=False) as journal:
            history.build(journal, args.events)
    config = workdir / "bridge.toml"
    limits = "" if args.old else "[web]\nmax_streams = 5000\nmax_streams_per_client = 5000\n"
    config.write_text(
        f'topic_prefix = "org.debian"\nenvironment = "prod"\n[trust]\ndns = false\n{limits}'
    )
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(args.checkout.resolve()))
    server = subprocess.Popen(
        [sys.executable, "-m", "bridge", "--config", str(config), "--state-dir", str(state),
         "web", "--listen", f"127.0.0.1:{port}"],
        env=env, cwd=args.checkout,
    )  # fmt: skip
    held: list[socket.socket] = []
    try:
        for _ in range(200):
            if healthz_ms(port, 1)[0] != float("inf"):
                break
            time.sleep(0.1)
        print(f"bridge web from {args.checkout} on {args.events:,} events")
        before = cpu_seconds(server.pid)
        time.sleep(args.seconds)
        idle = (cpu_seconds(server.pid) - before) / args.seconds
        print(f"CPU, no stream open (baseline):        {idle * 100:6.1f} %")
        streams = [s for s in (open_stream(port, NEVER) for _ in range(args.streams)) if s]
        time.sleep(1.0)
        before = cpu_seconds(server.pid)
        time.sleep(args.seconds)
        busy = (cpu_seconds(server.pid) - before) / args.seconds
        print(f"CPU, {len(streams)} never-matching streams:         {busy * 100:6.1f} %")
        held += streams

        print(
            f"/healthz, nothing else open (baseline): {describe(healthz_ms(port, args.requests))}"
        )
        refused = 0
        for _ in range(args.open_streams):
            sock = open_stream(port, "/v1/stream")
            if sock is None:
                refused += 1
            else:
                held.append(sock)
        for _ in range(args.slowloris):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=30)
                sock.sendall(b"GET /raw HTTP/1.1\r\nHost: bench\r\n")  # never finished
                held.append(sock)
            except OSError:
                refused += 1
        print(
            f"/healthz, {args.open_streams} streams and {args.slowloris} half-sent requests"
            f" ({refused} refused): {describe(healthz_ms(port, args.requests))}"
        )
    finally:
        for sock in held:
            sock.close()
        server.terminate()
        server.wait(30)
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()

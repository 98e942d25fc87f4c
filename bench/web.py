"""``bridge web`` on a large journal: latency of the common /raw queries and of /v1/stats.

    python bench/web.py --events 1000000 [--dir /var/tmp] [--requests 50]
    python bench/web.py --reuse /var/tmp/bench-history-…/journal-1000000.sqlite3

Builds the journal as bench/history.py does (real bodies, Zipf packages and people, twenty
years), or reuses one it kept; starts a real ``bridge web`` (uvicorn) on it; then sends each
query *requests* times, one at a time, over HTTP from this process, and prints p50 and p95.
The baseline in the same run is ``/healthz`` (one trivial journal read): what HTTP, the
server and the client cost by themselves.
"""

from __future__ import annotations

import argparse
import http.client
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

YEAR = 365 * 86400
QUERIES = {
    "/healthz (baseline)": "/healthz",
    "/raw (newest 25)": "/raw",
    "/raw?rows_per_page=100&page=20": "/raw?rows_per_page=100&page=20",
    "/raw?category=debbugs": "/raw?category=debbugs",
    "/raw?topic=…dak.upload.accepted, last month": "/raw?start={month_ago}&end={end}"
    "&topic=org.debian.prod.dak.upload.accepted",
    "/raw?package=pkg0 (most common)": "/raw?package=pkg0",
    "/raw?package=pkg12345": "/raw?package=pkg12345",
    "/raw?user=person5 (Debian login)": "/raw?user=person5",
    "/raw?not_category=debbugs": "/raw?not_category=debbugs",
    "/raw?start=…&end=… (one year)": "/raw?start={year_ago}&end={end}",
    "/id": "/id?id={msg_id}",
    "/v1/stats?by=month (all time)": "/v1/stats?by=month",
    "/v1/stats?by=day (last month)": "/v1/stats?by=day&start={month_ago}&end={end}",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(connection: http.client.HTTPConnection, path: str) -> float:
    started = time.perf_counter()
    connection.request("GET", path)
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        raise SystemExit(f"{path}: HTTP {response.status}")
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--reuse", type=Path)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-web-", dir=args.dir))
    state = workdir / "state"
    state.mkdir()
    journal_path = state / JOURNAL_FILE
    if args.reuse:
        journal_path.symlink_to(args.reuse.resolve())
    else:
        print(f"building {args.events:,} events into {journal_path}")
        with SqliteJournal(journal_path, history.NAMING, durable=False) as journal:
            history.build(journal, args.events)
    with SqliteJournal(journal_path, history.NAMING) as journal:
        total = journal.count()
        newest = journal.find(history.Criteria(), limit=1)[0]
    end = history.START + history.YEARS * 365.25 * 86400
    values = {
        "end": int(end),
        "month_ago": int(end - 30 * 86400),
        "year_ago": int(end - YEAR),
        "msg_id": newest.msg_id,
    }
    config = workdir / "bridge.toml"
    config.write_text('topic_prefix = "org.debian"\nenvironment = "prod"\n[trust]\ndns = false\n')
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bridge", "--config", str(config), "--state-dir", str(state),
         "web", "--listen", f"127.0.0.1:{port}"],
    )  # fmt: skip
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        for _ in range(100):
            try:
                get(connection, "/healthz")
                break
            except (ConnectionError, OSError):
                connection.close()
                time.sleep(0.1)
        print(f"\n/raw and /v1/stats on {total:,} events, {args.requests} requests each")
        print(f"{'query':50} {'first ms':>9} {'p50 ms':>9} {'p95 ms':>9}")
        for name, template in QUERIES.items():
            path = template.format(**values)
            first = get(connection, path)
            times = sorted(get(connection, path) for _ in range(args.requests))
            p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
            print(f"{name:50} {first:9.1f} {statistics.median(times):9.2f} {p95:9.2f}")
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()

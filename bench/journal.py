"""Journal engines: PostgreSQL against SQLite, one run.

    python bench/journal.py [--mails 10000] [--events 20000]
                            [--postgres postgresql://127.0.0.1:5432/test]

Prints (1) mails/s of `replay-mbox --jobs 2` over the mixed mbox of bench/replay.py into a
fresh SQLite journal and into a fresh PostgreSQL one (a schema of its own, dropped after),
and (2) events/s appended by two concurrent writer processes, batches of 50, into each;
PostgreSQL as a ratio to SQLite.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import psycopg  # noqa: E402
import replay  # noqa: E402

from bridge.events import Event  # noqa: E402
from bridge.journal import SqliteJournal  # noqa: E402
from bridge.journal.postgres import PostgresJournal  # noqa: E402


def fresh_schema(base: str) -> tuple[str, str]:
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}options=-csearch_path%3D{schema}", schema


def drop_schema(base: str, schema: str) -> None:
    with psycopg.connect(base, autocommit=True) as db:
        db.execute(f"DROP SCHEMA {schema} CASCADE")


def replay_rate(tmp: Path, mbox: Path, label: str, journal_url: str = "") -> float:
    config = tmp / f"{label}.toml"
    config.write_text(f'[journal]\nurl = "{journal_url}"\n' if journal_url else "")
    cmd = [
        sys.executable, "-m", "bridge", "--config", str(config), "--state-dir", str(tmp / label),
        "replay-mbox", "--json-summary", "--no-publish", "--jobs", "2", str(mbox),
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, check=True).stdout.decode()
    return json.loads([line for line in out.splitlines() if line.startswith('{"by_topic"')][-1])[
        "rate"
    ]


def writer(location: str, number: int, count: int) -> None:
    journal = (
        PostgresJournal(location)
        if location.startswith("postgresql://")
        else SqliteJournal(location)
    )
    for start in range(0, count, 50):
        batch = [
            Event("bench.thing", {"writer": number, "n": n}, dedup_key=f"{number}-{n}")
            for n in range(start, min(start + 50, count))
        ]
        journal.append(batch, "bench")
    journal.close()


def append_rate(location: str, events: int) -> float:
    ctx = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    writers = [ctx.Process(target=writer, args=(location, w, events // 2)) for w in (1, 2)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    return events / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mails", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--postgres", default="postgresql://127.0.0.1:5432/test")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bridge-journal-bench-"))
    schemas = []
    try:
        mbox = tmp / "mixed.mbox"
        replay.build_mbox(mbox, args.mails)
        sqlite_replay = replay_rate(tmp, mbox, "sqlite")
        url, schema = fresh_schema(args.postgres)
        schemas.append(schema)
        pg_replay = replay_rate(tmp, mbox, "postgres", url)
        PostgresJournal(url).close()
        sqlite_append = append_rate(str(tmp / "append.sqlite3"), args.events)
        url, schema = fresh_schema(args.postgres)
        schemas.append(schema)
        PostgresJournal(url).close()  # create the schema before the writers race for it
        pg_append = append_rate(url, args.events)
    finally:
        for schema in schemas:
            drop_schema(args.postgres, schema)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'':44} {'SQLite':>8} {'PostgreSQL':>11} {'ratio':>6}")
    print(
        f"{f'replay-mbox --jobs 2, {args.mails} mails (mails/s)':44}"
        f" {sqlite_replay:8.0f} {pg_replay:11.0f} {pg_replay / sqlite_replay:6.2f}"
    )
    print(
        f"{f'two writers, {args.events} events (events/s)':44}"
        f" {sqlite_append:8.0f} {pg_append:11.0f} {pg_append / sqlite_append:6.2f}"
    )


if __name__ == "__main__":
    main()

"""History at archive scale: build a journal of N realistic events, then time every query.

    python bench/history.py --events 1000000 [--dir /var/tmp/bench] [--keep] [--runs 20]
    python bench/history.py --reuse /var/tmp/bench/journal-1000000.sqlite3
    python bench/history.py --postgres postgresql://127.0.0.1/test [--keep | --reuse SCHEMA]
        [--cold-command 'pg_ctlcluster 15 main restart && echo 3 > /proc/sys/vm/drop_caches']

The events are real bodies: the corpus's (../shared/corpus, else the project's fixtures)
parsed by the bridge's own parsers, each copy with its own bug number, a package and people
drawn from Zipf distributions over 30,000 packages and 20,000 people, and dates spread over
twenty years. They go in through the public Journal API, in batches of 1,000, as published
rows (so the replay endpoint's queries find them).

Printed: insert rate over the build (per tenth, the journal's appends alone), bytes per
event, then for each query of ``bridge query``, ``bridge stats``, the replay endpoint and
the web API: the median and p95 of warm runs, and one cold run (the journal files' pages
dropped from the page cache with posix_fadvise first, so the first read comes from disk).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.events import Event, Naming  # noqa: E402
from bridge.journal import Criteria, Journal, ReplaySelection, SqliteJournal  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus"
NAMING = Naming("org.debian", "prod", "bridge")
PACKAGES = 30_000
PEOPLE = 20_000
YEARS = 20
START = datetime(2006, 1, 1, tzinfo=UTC).timestamp()
BATCH = 1000


def templates() -> list[Event]:
    """Real events: the corpus's mails (or the fixtures') through the bridge's parsers."""
    from bridge.config import TrustConfig
    from bridge.pipeline import build_pipeline

    pipeline = build_pipeline(None, TrustConfig(verify=False))
    folder = CORPUS / "mails" if CORPUS.is_dir() else ROOT / "fixtures"
    found = []
    for path in sorted(folder.glob("*/*.eml")):
        found += pipeline.process(path.read_bytes()).events
    return found


def zipf_table(count: int, rng: random.Random, s: float = 1.1) -> Callable[[], int]:
    """A draw from 0..count-1 where rank k comes up in proportion to 1/(k+1)^s."""
    weights = [1.0 / (k + 1) ** s for k in range(count)]
    cumulative, total = [], 0.0
    for w in weights:
        total += w
        cumulative.append(total)
    import bisect

    return lambda: min(bisect.bisect(cumulative, rng.random() * total), count - 1)


def realistic(events: int, seed: int = 20) -> Iterator[Event]:
    """*events* events made from the templates: new bug numbers, Zipf packages and people,
    dates in order over twenty years."""
    rng = random.Random(seed)
    bases = templates()
    package = zipf_table(PACKAGES, rng)
    person = zipf_table(PEOPLE, rng)
    span = YEARS * 365.25 * 86400
    for n in range(events):
        base = bases[rng.randrange(len(bases))]
        when = START + span * n / events + rng.random() * 60
        iso = datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        source = f"pkg{package()}"
        who = person()
        name, email = f"Person {who}", f"person{who}@{'debian.org' if who % 3 else 'example.org'}"
        bug = 100_000 + rng.randrange(1_000_000)
        # every change below replaces a top-level field: the template's nested values are
        # shared, not copied (a deep copy cost more than the journal's append)
        body: dict[str, Any] = dict(base.body)
        body["packages"] = [source]
        body["origin"] = {**body.get("origin", {}), "date": iso}
        if "agent" in body:
            body["agent"] = {"name": name, "email": email}
        if "bug" in body:
            body["bug"] = bug
            body["url"] = f"https://bugs.debian.org/{bug}"
        yield replace(
            base,
            body=body,
            dedup_key=f"bench-{n}",
            packages=(source,),
            bugs=(bug,) if "bug" in body else (),
            people=(name, email),
            occurred_at=iso,
        )


def build(journal: Journal, events: int, report: Callable[[str], None] = print) -> list[float]:
    """Append *events* realistic events in batches; the insert rate of each tenth, timed
    over the journal's appends alone (making up the events is the bench's own cost)."""
    rates = []
    tenth = max(events // 10, BATCH)
    batch: list[Event] = []
    started = time.perf_counter()
    appending = 0.0  # seconds spent in append over the current tenth
    done = 0

    def append() -> None:
        nonlocal appending
        before = time.perf_counter()
        journal.append(batch, "mbox:bench")
        appending += time.perf_counter() - before

    for event in realistic(events):
        batch.append(event)
        if len(batch) == BATCH:
            append()
            done += len(batch)
            batch = []
            if done % tenth == 0:
                rates.append(tenth / appending)
                report(f"  {done:>10,} events  {rates[-1]:8,.0f} events/s")
                appending = 0.0
    if batch:
        append()
    report(f"built {events:,} events in {time.perf_counter() - started:.0f} s")
    return rates


def drop_cache(paths: list[Path]) -> None:
    """Evict the files' pages from the page cache (posix_fadvise DONTNEED)."""
    for path in paths:
        if path.exists():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def queries(journal: Journal) -> dict[str, Callable[[], object]]:
    """Every history query the bridge offers, with values a user would give."""
    last = journal.last_seq_id()
    middle = journal.find_rows(Criteria(after=last // 2), newest_first=False, limit=1)
    env = next(journal.envelopes(middle))
    msg_id = env.msg_id
    month = 30 * 86400
    end = START + YEARS * 365.25 * 86400
    recent = Criteria(since=end - month)
    return {
        "query (newest 50)": lambda: journal.find(Criteria(), limit=50),
        "query --topic debbugs.bug.closed": lambda: journal.find(
            Criteria(topics=("debbugs.bug.closed",)), limit=50
        ),
        "query --topic dak --since (last month)": lambda: journal.find(
            Criteria(topics=("dak",), since=end - month), limit=50
        ),
        "query --package pkg0 (the most common)": lambda: journal.find(
            Criteria(packages=("pkg0",)), limit=50
        ),
        "query --package pkg29999 (rare)": lambda: journal.find(
            Criteria(packages=("pkg29999",)), limit=50
        ),
        "query --bug": lambda: journal.find(Criteria(bugs=(env.bugs[0] if env.bugs else 1,))),
        "query --person person5@debian.org": lambda: journal.find(
            Criteria(people=("person5@debian.org",)), limit=50
        ),
        "query --person person19999@example.org (rare)": lambda: journal.find(
            Criteria(people=("person19999@example.org",)), limit=50
        ),
        # text is searched in the envelopes themselves (stored compressed), a page's worth
        "query --topic debbugs --contains FTBFS (13%)": lambda: journal.find(
            Criteria(topics=("debbugs",), contains=("FTBFS",)), limit=50
        ),
        "query --topic debbugs --contains segfault (2%)": lambda: journal.find(
            Criteria(topics=("debbugs",), contains=("segfault",)), limit=50
        ),
        "query page 100 (offset 4,950)": lambda: journal.find(Criteria(), limit=50, offset=4950),
        "stats --by month (all time)": lambda: journal.stats(Criteria(), "month"),
        "stats --by day --since (last month)": lambda: journal.stats(recent, "day"),
        "stats --by month --topic debbugs": lambda: journal.stats(
            Criteria(topics=("debbugs",)), "month"
        ),
        "replay seq_id range (1,000)": lambda: journal.replay(
            ReplaySelection(seq_id_ranges=((last // 3, last // 3 + 999),)), 1000
        ),
        "replay msg_id": lambda: journal.replay(ReplaySelection(msg_ids=(msg_id,)), 1000),
        "replay time (all history)": lambda: journal.replay(
            ReplaySelection(times=((0, 2**40),)), 1000
        ),
        "replay after_time (10 years ago)": lambda: journal.replay(
            ReplaySelection(after_time=end - 10 * 365 * 86400), 1000
        ),
        "web /raw count, package pkg0": lambda: journal.count(Criteria(packages=("pkg0",))),
        "web /raw count, topic debbugs": lambda: journal.count(Criteria(topics=("debbugs",))),
        "web /id": lambda: journal.by_msg_id(msg_id),
        "web /metrics topic counts": lambda: journal.topic_counts(),
    }


def timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return (time.perf_counter() - started) * 1000


def measure(
    open_journal: Callable[[], Journal], evict: Callable[[], None] | None, runs: int
) -> list[tuple[str, float | None, float, float]]:
    """(query, cold ms, warm median ms, warm p95 ms) for each query; cold after *evict* has
    dropped the journal's pages from every cache (None: no cold figure)."""
    results = []
    with open_journal() as journal:
        names = list(queries(journal))
    for name in names:
        if evict is not None:
            evict()
        with open_journal() as journal:  # a new connection: its own cache empty
            run = queries(journal)[name]
            cold = timed(run) if evict is not None else None
            warm = sorted(timed(run) for _ in range(runs))
        p95 = warm[min(len(warm) - 1, int(len(warm) * 0.95))]
        results.append((name, cold, statistics.median(warm), p95))
    return results


def postgres_journal(
    base: str, events: int, reuse: str | None = None
) -> tuple[Callable[[], Journal], Callable[[], None]]:
    """A fresh schema at *base* filled with *events* (or the kept schema *reuse*); how to
    open it, how to drop it."""
    import uuid

    import psycopg

    from bridge.journal.postgres import PostgresJournal

    schema = reuse or f"bench_{uuid.uuid4().hex[:12]}"
    url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    if not reuse:
        print(f"building {events:,} events into PostgreSQL schema {schema}")
        with psycopg.connect(base, autocommit=True) as db:
            db.execute(f"CREATE SCHEMA {schema}")
        with PostgresJournal(url, NAMING) as journal:
            rates = build(journal, events)
        print(f"insert rate: first tenth {rates[0]:,.0f}/s, last tenth {rates[-1]:,.0f}/s")
        # What autovacuum (on by default) does after a bulk load: statistics for the planner,
        # and the visibility map that lets a count read an index without the table's pages.
        with psycopg.connect(base, autocommit=True) as db:
            for table in ("events", "event_packages", "event_bugs", "event_people"):
                db.execute(f"VACUUM (ANALYZE) {schema}.{table}")

    def drop() -> None:
        with psycopg.connect(base, autocommit=True) as db:
            db.execute(f"DROP SCHEMA {schema} CASCADE")

    return lambda: PostgresJournal(url, NAMING), drop


def shell_command(command: str) -> Callable[[], None]:
    def run() -> None:
        subprocess.run(command, shell=True, check=True)

    return run


def report(results: list[tuple[str, float | None, float, float]]) -> None:
    print(f"\n{'query':48} {'cold ms':>9} {'warm p50':>9} {'warm p95':>9}")
    for name, cold, median, p95 in results:
        first = f"{cold:9.1f}" if cold is not None else f"{'-':>9}"
        print(f"{name:48} {first} {median:9.2f} {p95:9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=None, help="where to build (default: /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the journal for --reuse")
    parser.add_argument(
        "--reuse", type=Path, help="time the queries on this journal (with --postgres: schema)"
    )
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--postgres", metavar="URL", help="build into a PostgreSQL database")
    parser.add_argument(
        "--cold-command",
        metavar="SHELL",
        help="with --postgres: run before each cold query to empty the server's caches (e.g."
        " 'pg_ctlcluster 15 main restart && sync && echo 3 > /proc/sys/vm/drop_caches')",
    )
    args = parser.parse_args()
    if args.postgres:
        reuse = str(args.reuse) if args.reuse else None
        opened, drop = postgres_journal(args.postgres, args.events, reuse)
        try:
            with opened() as journal:
                size = journal.storage_bytes() or 0
                print(f"{size / journal.count():,.0f} bytes per event (tables and indexes)")
            evict = shell_command(args.cold_command) if args.cold_command else None
            report(measure(opened, evict, args.runs))
        finally:
            if not (args.keep or reuse):
                drop()
        return
    workdir = None
    if args.reuse:
        path = args.reuse
    else:
        workdir = Path(tempfile.mkdtemp(prefix="bench-history-", dir=args.dir))
        path = workdir / f"journal-{args.events}.sqlite3"
        print(f"building {args.events:,} events into {path}")
        with SqliteJournal(path, NAMING, durable=False) as journal:
            rates = build(journal, args.events)
        print(f"insert rate: first tenth {rates[0]:,.0f}/s, last tenth {rates[-1]:,.0f}/s")
    with SqliteJournal(path, NAMING) as journal:
        count = journal.count()
        size = journal.storage_bytes() or 0
    print(f"{count:,} events, {size / 1e9:.2f} GB: {size / max(count, 1):,.0f} bytes per event")
    files = [path, path.with_name(path.name + "-wal")]
    report(measure(lambda: SqliteJournal(path, NAMING), lambda: drop_cache(files), args.runs))
    if workdir and not args.keep:
        for leftover in workdir.iterdir():
            leftover.unlink()
        workdir.rmdir()


if __name__ == "__main__":
    main()

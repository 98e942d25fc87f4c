"""Looking after the bridge: ``bridge parsers``, ``status``, ``fsck``, ``migrate``,
``doctor``."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from bridge.cli.base import AppState, pass_state
from bridge.errors import UsageError


@click.command()
@pass_state
def parsers(state: AppState) -> None:
    """List the installed parser plugins: name, module, distribution, status, topics."""
    from bridge.pipeline.plugins import discover

    registry = discover()
    for info in registry.plugins:
        status = info.error or "ok"
        topics = ",".join(info.topics) or "-"
        click.echo(f"{info.name}\t{info.module}\t{info.distribution}\t{status}\t{topics}")
    if not registry.plugins:
        click.echo("no parsers installed", err=True)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of lines.")
@pass_state
def status(state: AppState, as_json: bool) -> None:
    """Counters, spool depths, journal and cursor positions (works while serve runs)."""
    from bridge.ops.status import status_report

    with state.journal() as journal:
        report = status_report(state.config, journal)
    if as_json:
        click.echo(json.dumps(report, sort_keys=True))
        return
    for key, value in report.items():
        if key == "upstreams":
            for name, entry in value.items():
                click.echo(f"upstream.{name}: " + ", ".join(f"{k} {v}" for k, v in entry.items()))
        elif key != "counters":
            click.echo(f"{key}: {value}")
    for key, value in sorted(report["counters"].items()):
        click.echo(f"counter.{key}: {value}")


@click.command()
@click.option("--repair", is_flag=True, help="Salvage a damaged journal into a new file.")
@pass_state
def fsck(state: AppState, repair: bool) -> None:
    """Check the spool and the journal; with --repair, salvage what is readable.

    Run it with the bridge stopped. Exit status 0: sound; 1: problems found (and, with
    --repair, what was done about them).
    """
    from bridge.intake.spool import spool_of
    from bridge.journal import JOURNAL_FILE
    from bridge.ops.fsck import (
        Report,
        check_journal,
        check_shared_journal,
        check_spool,
        salvage_journal,
    )

    config = state.config
    report = Report()
    spool = spool_of(config)
    check_spool(spool, report)
    journal_path = config.state_path / JOURNAL_FILE
    if config.journal.url:
        check_shared_journal(config.journal.url, report)
    else:
        check_journal(journal_path, report)
    for line in report.problems:
        click.echo(f"PROBLEM {line}")
    if repair and report.journal_damaged:
        salvage_journal(journal_path, report)
    for line in report.repaired:
        click.echo(f"REPAIRED {line}")
    if report.clean:
        from bridge.journal.postgres import redacted

        where = f"journal {redacted(config.journal.url)}" if config.journal.url else "journal"
        click.echo(f"ok: spool in {config.state_path} and {where} are sound")
        return
    if report.journal_damaged and not repair:
        click.echo("run 'bridge fsck --repair' with the bridge stopped to salvage the journal")
    sys.exit(1)


@click.command()
@click.option(
    "--from",
    "from_state",
    type=click.Path(path_type=Path),
    help="Copy the SQLite journal of this state directory into the --to journal.",
)
@click.option(
    "--to", "to_url", metavar="URL", help="The postgresql:// journal (default [journal] url)."
)
@pass_state
def migrate(state: AppState, from_state: Path | None, to_url: str | None) -> None:
    """Bring the PostgreSQL journal's schema up to date, or copy a SQLite journal into it."""
    from bridge.journal import JOURNAL_FILE
    from bridge.journal.copying import copy_from_sqlite, pack_envelopes
    from bridge.journal.postgres import migrate as migrate_schema
    from bridge.journal.postgres import redacted
    from bridge.pipeline.worker import spool_cursor

    url = to_url or state.config.journal.url
    if not url:
        raise UsageError("name the PostgreSQL journal: --to URL or [journal] url")
    if not url.startswith(("postgresql://", "postgres://")):
        raise UsageError(f"--to takes a postgresql:// URL, not {url!r}")
    started = time.monotonic()

    def progress_of(doing: str) -> Callable[[int, int], None]:
        def show(done: int, total: int) -> None:
            rate = done / max(time.monotonic() - started, 1e-6)
            percent = 100 * done / max(total, 1)
            click.echo(
                f"{doing} up to seq_id {done} of {total} ({percent:.0f}%, {rate:.0f}/s)", err=True
            )

        return show

    if from_state is None:
        before, after = migrate_schema(url)
        click.echo(f"{redacted(url)}: schema version {before} -> {after}")
        packed = pack_envelopes(url, progress=progress_of("packed envelopes"))
        if packed:
            click.echo(f"{packed} envelope(s) stored as JSON by an older bridge compressed")
        return
    source = from_state / JOURNAL_FILE
    if not source.is_file():
        raise UsageError(f"no journal in {from_state} ({source} does not exist)")
    progress = progress_of("copied")

    target = state.config.replace(state_dir=str(from_state)).with_section("journal", url=url)
    copied = copy_from_sqlite(source, url, spool_cursor=spool_cursor(target), progress=progress)
    click.echo(f"{copied} event(s) copied from {source} to {redacted(url)}")


@click.command()
@click.option(
    "--postfix-config",
    metavar="DIR",
    help="Check the route in this postfix instance's configuration directory.",
)
@pass_state
def doctor(state: AppState, postfix_config: str | None) -> None:
    """Check this host can run the bridge: config, ports, state dir, keys, journal, MTA."""
    from bridge.ops.doctor import FAIL, run_checks

    source = state.config_path or os.environ.get("BRIDGE_CONFIG") or "embedded defaults"
    failed = False
    for check in run_checks(state.config, source, postfix_config):
        click.echo(check.line())
        failed = failed or check.status == FAIL
    if failed:
        sys.exit(1)

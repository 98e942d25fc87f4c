"""``bridge replay-mbox``: archived list mail through the same pipeline as ``serve``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from bridge.cli.base import AppState, pass_state
from bridge.errors import UsageError


@click.command("replay-mbox")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Print the events as JSON Lines; touch no state.")
@click.option("--no-publish", is_flag=True, help="Journal as history, never sent on the bus.")
@click.option(
    "--jobs",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Parse on this many processes (events still journaled in mbox order).",
)
@click.option("--json-summary", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--parser", "only", multiple=True, help="Use only this parser (repeatable).")
@pass_state
def replay_mbox(
    state: AppState,
    paths: tuple[Path, ...],
    dry_run: bool,
    no_publish: bool,
    jobs: int,
    json_summary: bool,
    only: tuple[str, ...],
) -> None:
    """Replay mbox archives (plain, .gz, .xz, .bz2) into the journal and so onto the bus."""
    from bridge.intake.spool import spool_of
    from bridge.pipeline.backfill import Backfill, Options

    for path in paths:
        if not path.exists():
            raise UsageError(f"no such file: {path}")
        if path.is_dir():
            raise UsageError(f"{path} is a directory, not an mbox")
    options = Options(
        dry_run=dry_run,
        live=not no_publish,
        jobs=jobs,
        parser_names=only or None,
        trust=state.config.trust,
        max_message_size=state.config.mbox.max_message_size,
        naming=state.config.naming,
    )
    journal = None if dry_run else state.journal(appending=True)
    spool = None if dry_run else spool_of(state.config)
    interrupted = False
    with Backfill(options, journal, spool, emit=click.echo) as backfill:
        try:
            for path in paths:
                _replay_one(backfill, path)
        except KeyboardInterrupt:
            interrupted = True
    summary = backfill.summary
    out_err = dry_run  # with --dry-run stdout carries the events
    if json_summary:
        click.echo(json.dumps(summary.as_json(), sort_keys=True), err=out_err)
    else:
        _print_summary(summary, err=out_err)
    for line in backfill.notes:
        click.echo(f"bridge: {line}", err=True)
    for line in backfill.errors:
        click.echo(f"bridge: error: {line}", err=True)
    if interrupted:
        click.echo("interrupted: run the same command again to resume", err=True)
        sys.exit(130)
    if backfill.errors:
        sys.exit(1)


def _replay_one(backfill: Any, path: Path) -> None:
    """One archive, with a progress bar when a person watches stderr."""
    total = path.stat().st_size
    if not sys.stderr.isatty():
        backfill.replay(path)
        return
    started = time.monotonic()
    with click.progressbar(
        length=total, label=path.name, file=sys.stderr, show_eta=True, show_percent=True
    ) as bar:
        done = 0

        def progress(mails: int, consumed: int) -> None:
            nonlocal done
            bar.update(consumed - done)
            done = consumed
            elapsed = max(time.monotonic() - started, 1e-6)
            bar.label = (
                f"{path.name}: {mails} mails, {consumed / 1e6:.1f} MB,"
                f" {mails / elapsed:.0f} mails/s"
            )

        backfill.replay(path, on_progress=progress)


def _print_summary(summary: Any, err: bool) -> None:
    lines = [
        f"mails read: {summary.mails}",
        f"events journaled: {summary.events}",
    ]
    lines += [f"  {topic}: {count}" for topic, count in sorted(summary.by_topic.items())]
    lines += [
        f"duplicates: {summary.duplicates}",
        f"conflicts: {summary.conflicts}" + (" (held in spool/held/)" if summary.conflicts else ""),
        f"withheld by the trust policy: {summary.withheld}",
        f"ignored: {summary.ignored}",
        f"failed: {summary.failed}" + (" (kept in spool/failed/)" if summary.failed else ""),
        f"elapsed: {summary.seconds:.2f} s ({summary.rate:.0f} mails/s)",
    ]
    for line in lines:
        click.echo(line, err=err)

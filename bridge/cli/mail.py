"""Mail and events by hand: ``bridge parse``, ``bridge log``, ``bridge retry``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from bridge.cli.base import AppState, pass_state, read_file
from bridge.errors import UsageError


@click.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--explain", is_flag=True, help="Say on stderr why a mail gave no event.")
@click.option("--parser", "only", multiple=True, help="Use only this parser (repeatable).")
@pass_state
def parse(state: AppState, files: tuple[str, ...], explain: bool, only: tuple[str, ...]) -> None:
    """Print the events of each mail FILE (or - for stdin) as JSON Lines."""
    from bridge.events import event_line
    from bridge.pipeline import FAILED, build_pipeline

    pipeline = build_pipeline(only or None, state.config.trust)
    naming = state.config.naming
    failed = 0
    for name in files:
        outcome = pipeline.process(read_file(name))
        for event in outcome.events:
            click.echo(event_line(naming, event, file=name))
        if outcome.status == FAILED:
            failed += 1
            click.echo(f"{name}: failed: {outcome.reason}", err=True)
        elif explain and not outcome.events:
            click.echo(f"{name}: no event: {outcome.reason}", err=True)
    if failed:
        sys.exit(1)


@click.command()
@click.option("--topic", required=True, help="Event topic, e.g. debbugs.bug.report.")
@click.argument("body", required=False)
@pass_state
def log(state: AppState, topic: str, body: str | None) -> None:
    """Journal a JSON object BODY (or stdin) under TOPIC; a running serve publishes it.

    TOPIC is an event topic (``bridge.test``) or a full one (``org.debian.dev.bridge.test``).
    """
    from bridge.pipeline.bodies import EventRefused
    from bridge.pipeline.logged import logged_event
    from bridge.pipeline.schemas import SchemaBreach

    text = body if body is not None else sys.stdin.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"body is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise UsageError("body must be a JSON object")
    try:
        event = logged_event(state.config.naming.event_topic(topic.strip()), data)
    except (EventRefused, SchemaBreach) as e:
        raise UsageError(f"cannot journal that event: {e}") from e
    with state.journal() as journal:
        journal.append([event], source="log")


@click.command()
@click.option("--all", "retry_all", is_flag=True, help="Retry every mail in failed/.")
@click.argument("files", nargs=-1)
@pass_state
def retry(state: AppState, retry_all: bool, files: tuple[str, ...]) -> None:
    """Offer failed mails to the parsers again (after a parser fix)."""
    from bridge.intake.spool import spool_of
    from bridge.pipeline import FAILED, build_pipeline
    from bridge.pipeline.worker import Worker

    if not retry_all and not files:
        raise UsageError("name failed mails to retry, or use --all")
    spool = spool_of(state.config)
    paths = sorted(spool.failed_dir.glob("*.eml")) if retry_all else [Path(f) for f in files]
    for path in paths:
        if not path.is_file():
            raise UsageError(f"no such file: {path}")
    with state.journal() as journal:
        worker = Worker(
            spool,
            journal,
            build_pipeline(None, state.config.trust),
            policy_for=state.config.trust.policy_for,
        )
        done = worker.retry(paths)
    spool.close()
    for item in done:
        outcome, name = item.outcome, Path(item.record.meta["retried"]).name
        if outcome.status == FAILED:
            click.echo(f"{name}: still failing: {outcome.reason}", err=True)
        else:
            click.echo(f"{name}: {outcome.status}, {len(item.result.seq_ids)} new event(s)")
    if any(item.outcome.status == FAILED for item in done):
        sys.exit(1)

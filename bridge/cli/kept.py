"""Mail the bridge keeps aside for a person: ``bridge inbox`` (mail no parser wanted) and
``bridge held`` (mail the trust policy holds)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bridge.cli.base import AppState, pass_state
from bridge.errors import UsageError

if TYPE_CHECKING:
    from bridge.intake.spool import Spool


def _found(folder: Path, kept_id: str, what: str, command: str) -> Path:
    from bridge.intake import kept

    path = kept.find(folder, kept_id)
    if path is None:
        raise UsageError(f"no {what} {kept_id!r} ({command} shows them)")
    return path


def _spool(state: AppState) -> Spool:
    from bridge.intake.spool import spool_of

    return spool_of(state.config)


@click.group()
def inbox() -> None:
    """Mail no parser wanted (list confirmations, notices): list, show or forward it."""


@inbox.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@pass_state
def inbox_list(state: AppState, as_json: bool) -> None:
    """Each waiting mail: id, when, sender, subject, why it was kept, whether forwarded."""
    import time

    from bridge.ops.inbox import entries

    for entry in entries(_spool(state).inbox_dir):
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry.received))
        if as_json:
            fields = ("id", "subject", "sender", "reason", "forwarded")
            record = {k: getattr(entry, k) for k in fields}
            click.echo(json.dumps({**record, "received": when}, ensure_ascii=False))
        else:
            done = f"  [forwarded {entry.forwarded.splitlines()[-1]}]" if entry.forwarded else ""
            click.echo(
                f"{entry.id}  {when}  {entry.sender}  {entry.subject!r}  ({entry.reason}){done}"
            )


@inbox.command("show")
@click.argument("inbox_id")
@pass_state
def inbox_show(state: AppState, inbox_id: str) -> None:
    """Why a mail was kept, then the mail itself."""
    from bridge.intake import kept

    path = _found(_spool(state).inbox_dir, inbox_id, "inbox mail", "bridge inbox list")
    click.echo(kept.shown(path))


@inbox.command("forward")
@click.argument("inbox_id")
@click.argument("to")
@pass_state
def inbox_forward(state: AppState, inbox_id: str, to: str) -> None:
    """Forward a kept mail to TO through the host's MTA ([inbox] smtp)."""
    import smtplib

    from bridge.ops.inbox import forward

    path = _found(_spool(state).inbox_dir, inbox_id, "inbox mail", "bridge inbox list")
    try:
        forward(path, to, state.config.inbox)
    except (OSError, smtplib.SMTPException) as e:
        raise UsageError(f"could not hand the mail to {state.config.inbox.smtp}: {e}") from e
    click.echo(f"{path.stem}: forwarded to {to} through {state.config.inbox.smtp}")


@click.group()
def held() -> None:
    """Mail the trust policy holds: list, show, release or drop it."""


def _held(folder: Path, ids: tuple[str, ...]) -> list[Path]:
    return [_found(folder, held_id, "held mail", "bridge held list") for held_id in ids]


@held.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@pass_state
def held_list(state: AppState, as_json: bool) -> None:
    """Each held mail: its id, when it was held, and why."""
    from bridge.intake import kept

    for mail in kept.listed(_spool(state).held_dir):
        if as_json:
            click.echo(
                json.dumps({"id": mail.id, "held_at": mail.kept_at_iso, "reason": mail.reason})
            )
        else:
            click.echo(f"{mail.id}  {mail.kept_at_iso}  {mail.reason}")


@held.command("show")
@click.argument("held_id")
@pass_state
def held_show(state: AppState, held_id: str) -> None:
    """Why a mail is held, then the mail itself."""
    from bridge.intake import kept

    (path,) = _held(_spool(state).held_dir, (held_id,))
    click.echo(kept.shown(path))


@held.command("release")
@click.argument("ids", nargs=-1, required=True)
@pass_state
def held_release(state: AppState, ids: tuple[str, ...]) -> None:
    """Publish held mails through the pipeline (dedup still applies); they leave held/."""
    from bridge.pipeline import FAILED, build_pipeline
    from bridge.pipeline.worker import Worker

    spool = _spool(state)
    paths = _held(spool.held_dir, ids)
    failed = False
    with state.journal() as journal:
        worker = Worker(spool, journal, build_pipeline(None, state.config.trust))
        for path in paths:
            item = worker.release(path)
            if item.outcome.status == FAILED:
                failed = True
                click.echo(f"{path.stem}: not released: {item.outcome.reason}", err=True)
            else:
                click.echo(
                    f"{path.stem}: released, {len(item.result.seq_ids)} event(s) published,"
                    f" {item.result.duplicates} duplicate(s)"
                )
    spool.close()
    if failed:
        sys.exit(1)


@held.command("drop")
@click.argument("ids", nargs=-1, required=True)
@pass_state
def held_drop(state: AppState, ids: tuple[str, ...]) -> None:
    """Move held mails to rejected/ (kept, never published)."""
    from bridge.intake import kept

    spool = _spool(state)
    paths = _held(spool.held_dir, ids)
    rejected = spool.rejected_dir
    for path in paths:
        kept.move(path, rejected, "dropped from held/ by an operator")
        click.echo(f"{path.stem}: dropped (kept in {rejected})")

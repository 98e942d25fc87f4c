"""``bridge notify``: the notification service, what a rule would deliver, and where each
rule stands."""

from __future__ import annotations

import json
import logging
import time

import click

from bridge.cli.base import AppState, epoch_of, log_level, pass_state


@click.group(invoke_without_command=True)
@click.option(
    "--rule", "only", multiple=True, metavar="NAME", help="Run only this rule (repeatable)."
)
@click.pass_context
def notify(ctx: click.Context, only: tuple[str, ...]) -> None:
    """Deliver what the [notify.rules.NAME] match, by mail, webhook or IRC.

    Each rule follows the journal from a cursor of its own: a restart goes on where it
    stopped, and no event reaches a destination twice but for one in flight (which carries
    the same id again).
    """
    if ctx.invoked_subcommand is not None:
        return
    from bridge.notify.service import NotifyService

    state: AppState = ctx.obj
    logging.getLogger().setLevel(min(logging.getLogger().level, log_level(state.config.log_level)))
    NotifyService(state.config, list(only)).run_until_signalled()


@notify.command()
@click.argument("name")
@click.option("--since", help="ISO time: events that happened at or after it.")
@click.option("--until", help="ISO time: events that happened before it.")
@click.option("--first", type=click.IntRange(0, 1000), default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="The preview as one JSON object.")
@pass_state
def preview(
    state: AppState,
    name: str,
    since: str | None,
    until: str | None,
    first: int,
    as_json: bool,
) -> None:
    """What rule NAME would have delivered over the history: per day, and the first
    events with why each matched. Nothing is sent."""
    from bridge.notify.report import preview as run_preview
    from bridge.notify.rules import rule_named

    rule = rule_named(state.config, name)
    with state.journal() as journal:
        result = run_preview(
            journal,
            rule,
            since=epoch_of(since, "--since") if since else None,
            until=epoch_of(until, "--until") if until else None,
            first=first,
        )
    if as_json:
        click.echo(json.dumps(result.as_json(), sort_keys=True))
        return
    click.echo(f"rule {name}: {result.total} events would have been delivered")
    for day, count in sorted(result.per_day.items()):
        click.echo(f"  {day}  {count}")
    if result.first:
        click.echo(f"the first {len(result.first)}:")
    for envelope, why in result.first:
        summary = envelope.msg.get("summary") or envelope.topic
        click.echo(f"  {envelope.seq_id} {envelope.topic} {summary}")
        click.echo(f"      because: {'; '.join(why)}")


@notify.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object a rule, a line each.")
@pass_state
def status(state: AppState, as_json: bool) -> None:
    """Each rule: cursor, lag, deliveries, failures, held by the rate limit, disabled."""
    from bridge.notify.report import rule_status

    with state.journal() as journal:
        rules = rule_status(state.config, journal)
    if not rules:
        click.echo("no [notify.rules] configured")
    for entry in rules:
        if as_json:
            click.echo(json.dumps(entry, sort_keys=True))
            continue
        if entry["disabled_at"]:
            health = f"DISABLED since {_when(entry['disabled_at'])} (bridge notify enable)"
        elif entry["failing_since"]:
            health = f"failing since {_when(entry['failing_since'])}"
        elif not entry["started"]:
            health = "not started yet"
        else:
            health = "ok"
        due = f", digest due {_when(entry['digest_due'])}" if entry["digest_due"] else ""
        lag = "-" if entry["lag"] is None else entry["lag"]
        click.echo(
            f"{entry['rule']}: {health}; cursor {entry['cursor']}, lag {lag}{due};"
            f" {entry['delivered']} delivered ({entry['events']} events, {entry['digests']}"
            f" digests), {entry['held']} held, {entry['failed']} failed -> {entry['deliver']}"
        )


@notify.command()
@click.argument("name")
@pass_state
def enable(state: AppState, name: str) -> None:
    """Deliver again to rule NAME's destination after it was disabled for failing."""
    from bridge.notify.rules import rule_named

    rule = rule_named(state.config, name)
    with state.journal() as journal, journal.batch() as batch:
        batch.set_cursor(f"{rule.cursor_name}.disabled_at", 0)
        batch.set_cursor(f"{rule.cursor_name}.failing_since", 0)
    click.echo(f"rule {name} enabled: bridge notify delivers to it again")


def _when(epoch: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))

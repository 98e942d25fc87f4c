"""The journal's history: ``bridge query`` and ``bridge stats``."""

from __future__ import annotations

import functools
import json
from typing import Any

import click

from bridge.cli.base import AppState, epoch_of, pass_state
from bridge.cli.render import render_table
from bridge.journal.model import PERIODS


def criteria_options(command: Any) -> Any:
    """Add the journal search options to *command* and hand it one ``criteria`` argument.
    Each option may be given several times: an event matching any of the values is kept."""
    from bridge.journal import Criteria

    @functools.wraps(command)
    def wrapper(
        *args: Any,
        topic: tuple[str, ...],
        package: tuple[str, ...],
        bug: tuple[int, ...],
        person: tuple[str, ...],
        contains: tuple[str, ...],
        not_topic: tuple[str, ...],
        not_package: tuple[str, ...],
        not_person: tuple[str, ...],
        since: str | None,
        until: str | None,
        **kwargs: Any,
    ) -> Any:
        criteria = Criteria(
            topics=tuple(t for t in topic if t),
            packages=package,
            bugs=bug,
            people=person,
            contains=contains,
            not_topics=not_topic,
            not_packages=not_package,
            not_people=not_person,
            since=epoch_of(since, "--since") if since else None,
            until=epoch_of(until, "--until") if until else None,
        )
        return command(*args, criteria=criteria, **kwargs)

    person_help = "Name, e-mail or Debian login of a person in the event (any case)."
    for option in reversed(
        [
            click.option("--topic", multiple=True, help="Topic prefix, full or event-relative."),
            click.option("--package", multiple=True, help="Source package name."),
            click.option("--bug", type=int, multiple=True, help="Bug number."),
            click.option("--person", multiple=True, help=person_help),
            click.option("--contains", multiple=True, help="Text anywhere in the envelope."),
            click.option("--not-topic", multiple=True, help="Leave out this topic prefix."),
            click.option("--not-package", multiple=True, help="Leave out this package."),
            click.option("--not-person", multiple=True, help="Leave out this person."),
            click.option("--since", help="ISO time: events at or after it (by mail date)."),
            click.option("--until", help="ISO time: events before it."),
        ]
    ):
        wrapper = option(wrapper)
    return wrapper


@click.command()
@criteria_options
@click.option("--oldest-first", is_flag=True, help="Oldest first (default: newest first).")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option("--page", type=click.IntRange(1), default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One whole envelope per line, as JSON.")
@pass_state
def query(
    state: AppState,
    criteria: Any,
    oldest_first: bool,
    limit: int,
    page: int,
    as_json: bool,
) -> None:
    """Search the journal (every event, history included)."""
    from bridge.client import envelope_json

    with state.journal() as journal:
        found = journal.find(
            criteria, newest_first=not oldest_first, limit=limit, offset=(page - 1) * limit
        )
    for envelope in found:
        if as_json:
            click.echo(envelope_json(envelope))
        else:
            when = envelope.msg.get("origin", {}).get("date") or envelope.timestamp
            click.echo(
                f"{envelope.seq_id} {when} {envelope.topic} {envelope.msg.get('summary', '')}"
            )


@click.command()
@criteria_options
@click.option("--by", "period", type=click.Choice(PERIODS), default="day", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="{period: {topic: count}} as JSON.")
@pass_state
def stats(
    state: AppState,
    criteria: Any,
    period: str,
    as_json: bool,
) -> None:
    """Events per topic per day, week or month (by when they happened)."""

    with state.journal() as journal:
        table = journal.stats(criteria, period)
    if as_json:
        click.echo(json.dumps(table, sort_keys=True))
        return
    for line in render_table(table, period):
        click.echo(line)

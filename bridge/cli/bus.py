"""``bridge tail``: the bus as it goes by, with missed messages fetched from the replay
endpoint (or read from an AMQP queue)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from bridge.cli.base import AppState, epoch_of, pass_state
from bridge.errors import UsageError


@click.command()
@click.option(
    "--connect",
    "endpoints",
    multiple=True,
    metavar="ENDPOINT",
    help="PUB endpoint to subscribe to (repeatable; default [bus] publish).",
)
@click.option(
    "--srv",
    metavar="DOMAIN",
    help="Find the bus in DNS: the SRV records of _fedmsg._tcp.DOMAIN (and the replay"
    " endpoint in _fedmsg-replay._tcp.DOMAIN), followed when it moves.",
)
@click.option(
    "--replay",
    "replay_endpoint",
    metavar="ENDPOINT",
    help="Replay endpoint for gaps and --since (default [bus] replay).",
)
@click.option("--no-replay", is_flag=True, help="Print only what arrives live; no gap recovery.")
@click.option("--since", help="Start with history: after this seq_id, or from this ISO time.")
@click.option("--topic", default="", help="Topic prefix, full or event-relative.")
@click.option("--package", help="Only events about this source package.")
@click.option("--bug", type=int, help="Only events about this bug number.")
@click.option("--json", "as_json", is_flag=True, help="Print each whole envelope as JSON.")
@click.option("--timeout", type=float, help="Exit after this many idle seconds.")
@click.option(
    "--amqp",
    "amqp_url",
    metavar="URL",
    help="Read from an AMQP broker (the AMQP sink's messages) instead of ZeroMQ.",
)
@click.option(
    "--queue",
    metavar="NAME",
    help="With --amqp: a durable queue that keeps messages while you are away.",
)
@pass_state
def tail(
    state: AppState,
    endpoints: tuple[str, ...],
    srv: str | None,
    replay_endpoint: str | None,
    no_replay: bool,
    since: str | None,
    topic: str,
    package: str | None,
    bug: int | None,
    as_json: bool,
    timeout: float | None,
    amqp_url: str | None,
    queue: str | None,
) -> None:
    """Subscribe to the bus and print what arrives, recovering missed messages."""
    from bridge.client import Filter
    from bridge.client import tail as tail_bus

    config = state.config
    wanted = Filter(topic=config.naming.bus_prefix(topic), package=package, bug=bug)
    if amqp_url or queue:
        _tail_amqp(amqp_url, queue, wanted, as_json, timeout, since)
        return
    start, is_time = _since(since)
    if srv and endpoints:
        raise UsageError("give --srv or --connect, not both")
    # with --srv the replay endpoint, unless given, is the domain's own (or none), and is
    # followed when it moves
    discovery = config.discovery_client() if srv else None
    from_srv = bool(srv) and not no_replay and not replay_endpoint
    if discovery is not None:
        click.echo(f"{srv}: {', '.join(discovery.endpoints(srv))}", err=True)
        replay = replay_endpoint or (discovery.replay(srv) if from_srv else None)
    else:
        replay = None if no_replay else (replay_endpoint or config.bus.replay)
    if start is not None and replay is None:
        raise UsageError("--since needs the replay endpoint (drop --no-replay)")
    connect = list(endpoints) or ([] if srv else [config.bus.publish])
    click.echo(
        f"bridge tail: {', '.join(connect) or 'the bus ' + str(srv)} (replay"
        f" {replay or ('from ' + str(srv) if from_srv else 'off')}); Ctrl-C to stop",
        err=True,
    )
    stream = tail_bus(
        connect,
        replay=None if from_srv else replay,
        replay_from_srv=from_srv,
        since=start,
        since_time=is_time,
        filter=wanted,
        timeout=timeout,
        srv=srv,
        discovery=discovery,
    )
    _print_envelopes(stream, wanted, as_json)


def _print_envelopes(stream: Any, wanted: Any, as_json: bool) -> None:
    from bridge.client import envelope_json

    try:
        for envelope in stream:
            if not wanted.matches(envelope):
                continue
            if as_json:
                click.echo(envelope_json(envelope))
            else:
                click.echo(tail_line(envelope))
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass


def tail_line(envelope: Any) -> str:
    """One event as ``tail`` prints it: seq_id, when it was journaled (UTC), topic, the
    trust verdict and the summary (a short rendering of a body that has none)."""
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(envelope.timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    origin = envelope.msg.get("origin") if isinstance(envelope.msg.get("origin"), dict) else {}
    auth = (origin or envelope.origin or {}).get("auth") or {}
    verdict = auth.get("verdict") or "none"
    summary = envelope.msg.get("summary") or json.dumps(envelope.msg)[:200]
    return f"{envelope.seq_id} {when} {envelope.topic} [{verdict}] {summary}"


def _tail_amqp(
    url: str | None,
    queue: str | None,
    wanted: Any,
    as_json: bool,
    timeout: float | None,
    since: str | None,
) -> None:
    """``bridge tail --amqp``: a queue bound to the topic prefix; the broker keeps order."""
    from bridge.sinks.amqp import consume

    if not url:
        raise UsageError("--queue needs --amqp URL")
    if not url.startswith(("amqp://", "amqps://")):
        raise UsageError(f"--amqp takes an amqp:// or amqps:// URL, not {url!r}")
    if since is not None:
        raise UsageError("--since reads the replay endpoint; with --amqp use a durable --queue")
    where = url.rpartition("@")[2]  # no password on the terminal
    click.echo(f"bridge tail: {where}, queue {queue or '(a temporary one)'}", err=True)
    try:
        _print_envelopes(consume(url, wanted.topic, queue=queue, timeout=timeout), wanted, as_json)
    except Exception as e:  # pika's connection errors: one readable line
        if isinstance(e, click.ClickException):
            raise
        raise UsageError(f"cannot read from {url}: {type(e).__name__}: {e}") from e


def _since(value: str | None) -> tuple[float | None, bool]:
    """``--since``: a seq_id, or an ISO 8601 time (UTC unless it says otherwise)."""
    if value is None:
        return None, False
    if value.isdigit():
        return int(value), False
    return epoch_of(value, "--since"), True

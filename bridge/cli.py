"""The ``bridge`` command line.

Each command imports what it needs when it runs: ``bridge --help`` or ``bridge parse``
must not pay for (or depend on) ZeroMQ, aiosmtpd or the service.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bridge.config import Config, load_config
from bridge.errors import BridgeError, UsageError
from bridge.journal.model import PERIODS

if TYPE_CHECKING:
    from collections.abc import Callable

    from bridge.journal import Journal


@dataclass
class AppState:
    """What the top-level options chose; the config is read once, on first use."""

    config_path: str | None
    state_dir: str | None
    _config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            config = load_config(self.config_path)
            if self.state_dir:
                config = config.replace(state_dir=self.state_dir)
            self._config = config
        return self._config

    def load(self) -> None:
        """Read and validate the configuration now (a ConfigError is one line)."""
        _ = self.config

    def journal(self, appending: bool = False) -> Journal:
        from bridge.journal import open_journal

        return open_journal(self.config, appending=appending)


class BridgeGroup(click.Group):
    """Turns the bridge's own errors into one readable line and their exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BridgeError as e:
            click.echo(f"bridge: error: {e}", err=True)
            ctx.exit(e.exit_code)
        except BrokenPipeError:
            # the reader went away (| head): stop quietly, as other Unix tools do
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - replaces the closed stream
            ctx.exit(141)
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            click.echo(f"bridge: error: {where}{e.strerror or e}", err=True)
            ctx.exit(1)
        except sqlite3.DatabaseError as e:  # read paths meet a damaged file here
            from bridge.journal import classify

            error = classify(e, "cannot read the journal")
            click.echo(f"bridge: error: {error}", err=True)
            ctx.exit(error.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except Exception as e:  # a bug: one line for the user, the traceback with -vv
            logging.getLogger("bridge").debug("internal error", exc_info=True)
            click.echo(
                f"bridge: internal error: {type(e).__name__}: {e} (run with -vv for details)",
                err=True,
            )
            ctx.exit(70)


pass_state = click.make_pass_decorator(AppState)


@click.group(cls=BridgeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    envvar="BRIDGE_CONFIG",
    type=click.Path(dir_okay=False),
    help="TOML config file (default: $BRIDGE_CONFIG, else embedded defaults).",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False),
    help="Directory of the journal and spool (overrides state_dir).",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="debian-bus-bridge", prog_name="bridge")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, state_dir: str | None, verbose: int) -> None:
    """Debian's bug-tracker and archive mail, as a fedmsg-compatible ZeroMQ event bus."""
    ctx.obj = AppState(config_path, state_dir)
    if ctx.invoked_subcommand is not None:
        ctx.obj.load()  # every command reads and validates the configuration it is given
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiosmtpd logs every SMTP command at INFO; the bridge's own line per mail says enough.
    logging.getLogger("mail.log").setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)


@main.command()
@click.option("--smtp", "smtp_listen", metavar="HOST:PORT", help="SMTP listen address.")
@click.option("--publish", metavar="ENDPOINT", help="ZeroMQ PUB endpoint to bind.")
@click.option("--replay", metavar="ENDPOINT", help="ZeroMQ replay (REP) endpoint to bind.")
@pass_state
def serve(
    state: AppState, smtp_listen: str | None, publish: str | None, replay: str | None
) -> None:
    """Run the bridge: SMTP intake, worker, publisher and replay endpoint."""
    from bridge.service import Service

    config = state.config
    if smtp_listen:
        config = config.with_section("smtp", listen=smtp_listen)
    if publish:
        config = config.with_section("bus", publish=publish)
    if replay:
        config = config.with_section("bus", replay=replay)
    if config.log_level.upper() != "WARNING" and logging.getLogger().level > _level(
        config.log_level
    ):
        logging.getLogger().setLevel(_level(config.log_level))
    Service(config).run_until_signalled()


@main.group(invoke_without_command=True)
@click.option("--listen", metavar="HOST:PORT", help="Address to serve HTTP on ([web] listen).")
@click.pass_context
def web(ctx: click.Context, listen: str | None) -> None:
    """Serve the history API, the live page, HTTP push and /metrics.

    It reads the journal the config names (the state directory's, or the shared PostgreSQL
    one) and may run beside serve or on another host.
    """
    if ctx.invoked_subcommand is not None:
        return
    from bridge.config import parse_hostport
    from bridge.web.app import serve as serve_web

    state: AppState = ctx.obj
    config = state.config
    if listen:
        parse_hostport(listen)
        config = config.with_section("web", listen=listen)
    logging.getLogger().setLevel(min(logging.getLogger().level, _level(config.log_level)))
    serve_web(config)


@web.group()
def token() -> None:
    """Bearer tokens for POST /v1/publish, kept hashed in the config file."""


@token.command("add")
@click.argument("name")
@click.option(
    "--topics",
    "topics",
    multiple=True,
    required=True,
    metavar="PREFIX",
    help="Event topic prefix the token may publish under, e.g. mentors. (repeatable).",
)
@pass_state
def token_add(state: AppState, name: str, topics: tuple[str, ...]) -> None:
    """Make a token NAME, store its hash in the config file and print it (only now)."""
    from bridge.web.tokens import add_token

    path = _config_file(state)
    secret = add_token(path, name, list(topics), state.config.web.tokens)
    load_config(path)  # the file still reads, with the new table
    click.echo(secret)
    click.echo(
        f"token {name!r} may publish under {', '.join(topics)}; its hash is in {path}."
        " Restart bridge web to use it; this is the only time the token is shown.",
        err=True,
    )


@token.command("list")
@pass_state
def token_list(state: AppState) -> None:
    """The configured tokens and the topic prefixes each may publish under."""
    for name, item in sorted(state.config.web.tokens.items()):
        click.echo(f"{name}: {' '.join(item.topics)}")


@token.command("remove")
@click.argument("name")
@pass_state
def token_remove(state: AppState, name: str) -> None:
    """Delete token NAME from the config file (restart bridge web to apply)."""
    from bridge.web.tokens import remove_token

    path = _config_file(state)
    remove_token(path, name)
    load_config(path)


def _config_file(state: AppState) -> Path:
    if not state.config_path:
        raise UsageError("tokens live in the config file: give --config FILE or $BRIDGE_CONFIG")
    return Path(state.config_path)


def _level(name: str) -> int:
    level = logging.getLevelName(name.upper())
    if not isinstance(level, int):
        raise UsageError(f"unknown log_level {name!r}")
    return level


@main.command()
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
        raw = sys.stdin.buffer.read() if name == "-" else _read_file(name)
        outcome = pipeline.process(raw)
        for event in outcome.events:
            click.echo(event_line(naming, event, file=name))
        if outcome.status == FAILED:
            failed += 1
            click.echo(f"{name}: failed: {outcome.reason}", err=True)
        elif explain and not outcome.events:
            click.echo(f"{name}: no event: {outcome.reason}", err=True)
    if failed:
        sys.exit(1)


def _read_file(name: str) -> bytes:
    try:
        return Path(name).read_bytes()
    except FileNotFoundError as e:
        raise UsageError(f"no such file: {name}") from e
    except IsADirectoryError as e:
        raise UsageError(f"is a directory: {name}") from e


def logged_origin(claimed: Any) -> dict[str, Any]:
    """The ``origin`` of a hand-published event: whatever ``auth`` the body claims is
    replaced by what really vouches for it, the local user who ran ``bridge log``."""
    import getpass
    import socket

    origin = dict(claimed) if isinstance(claimed, dict) else {}
    for key in ("message_id", "date", "list"):
        origin.setdefault(key, None)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    origin["auth"] = {
        "verdict": "none",
        "method": "local",
        "domain": None,
        "selector": None,
        "reason": f"published by hand with bridge log by {user} on {socket.gethostname()};"
        " no signature vouches for it",
    }
    return origin


@main.command()
@click.option("--topic", required=True, help="Event topic, e.g. debbugs.bug.report.")
@click.argument("body", required=False)
@pass_state
def log(state: AppState, topic: str, body: str | None) -> None:
    """Journal a JSON object BODY (or stdin) under TOPIC; a running serve publishes it.

    TOPIC is an event topic (``bridge.test``) or a full one (``org.debian.dev.bridge.test``).
    """
    from bridge.bodies import EventRefused, normalised
    from bridge.events import Event

    text = body if body is not None else sys.stdin.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"body is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise UsageError("body must be a JSON object")
    from bridge.schemas import SchemaBreach, installed

    event_topic = state.config.naming.event_topic(topic.strip())
    data["origin"] = logged_origin(data.get("origin"))
    schemas = installed()
    version = schemas.version(event_topic)
    if version is not None:  # as the pipeline stamps a parser's bodies
        data.setdefault("schema_version", version)
    try:
        event = normalised(Event(event_topic, data, dedup_key=f"log:{uuid.uuid4()}"))
        schemas.check(event_topic, event.body)
    except (EventRefused, SchemaBreach) as e:
        raise UsageError(f"cannot journal that event: {e}") from e
    with state.journal() as journal:
        journal.append([event], source="log")


@main.command()
@click.option(
    "--connect",
    "endpoints",
    multiple=True,
    metavar="ENDPOINT",
    help="PUB endpoint to subscribe to (repeatable; default [bus] publish).",
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
    replay = None if no_replay else (replay_endpoint or config.bus.replay)
    if start is not None and replay is None:
        raise UsageError("--since needs the replay endpoint (drop --no-replay)")
    stream = tail_bus(
        list(endpoints) or [config.bus.publish],
        replay=replay,
        since=start,
        since_time=is_time,
        filter=wanted,
        timeout=timeout,
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
                summary = envelope.msg.get("summary") or json.dumps(envelope.msg)[:200]
                click.echo(f"{envelope.seq_id} {envelope.topic} {summary}")
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass


def _tail_amqp(
    url: str | None,
    queue: str | None,
    wanted: Any,
    as_json: bool,
    timeout: float | None,
    since: str | None,
) -> None:
    """``bridge tail --amqp``: a queue bound to the topic prefix; the broker keeps order."""
    from bridge.amqp import consume

    if not url:
        raise UsageError("--queue needs --amqp URL")
    if not url.startswith(("amqp://", "amqps://")):
        raise UsageError(f"--amqp takes an amqp:// or amqps:// URL, not {url!r}")
    if since is not None:
        raise UsageError("--since reads the replay endpoint; with --amqp use a durable --queue")
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


def epoch_of(value: str, option: str) -> float:
    """An ISO 8601 time as epoch seconds (UTC unless it says otherwise)."""
    from bridge.events import iso_epoch

    try:
        return iso_epoch(value)
    except ValueError as e:
        raise UsageError(
            f"{option} takes an ISO time such as 2026-11-01T00:00, not {value!r}"
        ) from e


@main.command()
@pass_state
def parsers(state: AppState) -> None:
    """List the installed parser plugins: name, module, distribution, status, topics."""
    from bridge.plugins import discover

    registry = discover()
    for info in registry.plugins:
        status = info.error or "ok"
        topics = ",".join(info.topics) or "-"
        click.echo(f"{info.name}\t{info.module}\t{info.distribution}\t{status}\t{topics}")
    if not registry.plugins:
        click.echo("no parsers installed", err=True)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of lines.")
@pass_state
def status(state: AppState, as_json: bool) -> None:
    """Counters, spool depths, journal and cursor positions (works while serve runs)."""
    from bridge.status import status_report

    with state.journal() as journal:
        report = status_report(state.config, journal)
    if as_json:
        click.echo(json.dumps(report, sort_keys=True))
        return
    for key, value in report.items():
        if key != "counters":
            click.echo(f"{key}: {value}")
    for key, value in sorted(report["counters"].items()):
        click.echo(f"counter.{key}: {value}")


@main.command()
@click.option("--repair", is_flag=True, help="Salvage a damaged journal into a new file.")
@pass_state
def fsck(state: AppState, repair: bool) -> None:
    """Check the spool and the journal; with --repair, salvage what is readable.

    Run it with the bridge stopped. Exit status 0: sound; 1: problems found (and, with
    --repair, what was done about them).
    """
    from bridge.fsck import (
        Report,
        check_journal,
        check_shared_journal,
        check_spool,
        salvage_journal,
    )
    from bridge.journal import JOURNAL_FILE
    from bridge.spool import spool_of

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


@main.command()
@click.option("--all", "retry_all", is_flag=True, help="Retry every mail in failed/.")
@click.argument("files", nargs=-1)
@pass_state
def retry(state: AppState, retry_all: bool, files: tuple[str, ...]) -> None:
    """Offer failed mails to the parsers again (after a parser fix)."""
    from bridge.pipeline import FAILED, build_pipeline
    from bridge.spool import spool_of
    from bridge.worker import Worker

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


@main.command()
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
    from bridge.journal.postgres import copy_from_sqlite, pack_envelopes, redacted
    from bridge.journal.postgres import migrate as migrate_schema
    from bridge.worker import spool_cursor

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


@main.command()
@click.option(
    "--postfix-config",
    metavar="DIR",
    help="Check the route in this postfix instance's configuration directory.",
)
@pass_state
def doctor(state: AppState, postfix_config: str | None) -> None:
    """Check this host can run the bridge: config, ports, state dir, keys, journal, MTA."""
    from bridge.doctor import FAIL, run_checks

    source = state.config_path or os.environ.get("BRIDGE_CONFIG") or "embedded defaults"
    failed = False
    for check in run_checks(state.config, source, postfix_config):
        click.echo(check.line())
        failed = failed or check.status == FAIL
    if failed:
        sys.exit(1)


@main.group()
def inbox() -> None:
    """Mail no parser wanted (list confirmations, notices): list, show or forward it."""


def _inbox_path(state: AppState, inbox_id: str) -> Path:
    from bridge.spool import spool_of

    path = spool_of(state.config).inbox_dir / f"{Path(inbox_id).stem}.eml"
    if not path.is_file():
        raise UsageError(f"no inbox mail {inbox_id!r} (bridge inbox list shows them)")
    return path


@inbox.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@pass_state
def inbox_list(state: AppState, as_json: bool) -> None:
    """Each waiting mail: id, when, sender, subject, why it was kept, whether forwarded."""
    from bridge.inbox import entries
    from bridge.spool import spool_of

    for entry in entries(spool_of(state.config).inbox_dir):
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
    _show_kept(_inbox_path(state, inbox_id))


@inbox.command("forward")
@click.argument("inbox_id")
@click.argument("to")
@pass_state
def inbox_forward(state: AppState, inbox_id: str, to: str) -> None:
    """Forward a kept mail to TO through the host's MTA ([inbox] smtp)."""
    import smtplib

    from bridge.inbox import forward

    path = _inbox_path(state, inbox_id)
    try:
        forward(path, to, state.config.inbox)
    except (OSError, smtplib.SMTPException) as e:
        raise UsageError(f"could not hand the mail to {state.config.inbox.smtp}: {e}") from e
    click.echo(f"{path.stem}: forwarded to {to} through {state.config.inbox.smtp}")


@main.group()
def held() -> None:
    """Mail the trust policy holds: list, show, release or drop it."""


def _held_paths(state: AppState, ids: tuple[str, ...]) -> list[Path]:
    from bridge.spool import spool_of

    folder = spool_of(state.config).held_dir
    paths = []
    for held_id in ids:
        path = folder / f"{Path(held_id).stem}.eml"
        if not path.is_file():
            raise UsageError(f"no held mail {held_id!r} (bridge held list shows them)")
        paths.append(path)
    return paths


@held.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@pass_state
def held_list(state: AppState, as_json: bool) -> None:
    """Each held mail: its id, when it was held, and why."""
    from bridge.spool import spool_of

    for path in sorted(spool_of(state.config).held_dir.glob("*.eml")):
        reason_file = path.with_suffix(".reason")
        reason = (
            reason_file.read_text(encoding="utf-8").split("\n", 1)[0]
            if reason_file.exists()
            else ""
        )
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(path.stat().st_mtime))
        if as_json:
            click.echo(json.dumps({"id": path.stem, "held_at": when, "reason": reason}))
        else:
            click.echo(f"{path.stem}  {when}  {reason}")


@held.command("show")
@click.argument("held_id")
@pass_state
def held_show(state: AppState, held_id: str) -> None:
    """Why a mail is held, then the mail itself."""
    (path,) = _held_paths(state, (held_id,))
    _show_kept(path)


def _show_kept(path: Path) -> None:
    """A mail the spool keeps aside: the reason beside it, a blank line, the mail."""
    reason = path.with_suffix(".reason")
    if reason.exists():
        click.echo(reason.read_text(encoding="utf-8").rstrip("\n"))
    click.echo("")
    click.echo(path.read_bytes().decode("utf-8", "replace"))


@held.command("release")
@click.argument("ids", nargs=-1, required=True)
@pass_state
def held_release(state: AppState, ids: tuple[str, ...]) -> None:
    """Publish held mails through the pipeline (dedup still applies); they leave held/."""
    from bridge.pipeline import FAILED, build_pipeline
    from bridge.spool import spool_of
    from bridge.worker import Worker

    paths = _held_paths(state, ids)
    spool = spool_of(state.config)
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
    from bridge.spool import spool_of, write_private

    paths = _held_paths(state, ids)
    rejected = spool_of(state.config).rejected_dir
    for path in paths:
        reason_file = path.with_suffix(".reason")
        reason = reason_file.read_text(encoding="utf-8") if reason_file.exists() else ""
        write_private(
            rejected / reason_file.name,
            f"dropped from held/ by an operator\n{reason}".encode(),
        )
        path.replace(rejected / path.name)
        reason_file.unlink(missing_ok=True)
        click.echo(f"{path.stem}: dropped (kept in {rejected})")


@main.command("replay-mbox")
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
    from bridge.backfill import Backfill, Options
    from bridge.spool import spool_of

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


@main.command()
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


@main.command()
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
    from bridge.query import render_table

    with state.journal() as journal:
        table = journal.stats(criteria, period)
    if as_json:
        click.echo(json.dumps(table, sort_keys=True))
        return
    for line in render_table(table, period):
        click.echo(line)

"""The ``bridge`` command line: a thin layer over the stages below it.

Each command lives in a module of this package by what it is about (``serving``, ``mail``,
``backfill``, ``bus``, ``history``, ``kept``, ``notify``, ``operate``); it parses its
options, calls one function of the layer below and maps errors to exit codes
(:mod:`bridge.cli.base`). Each imports what it needs when it runs: ``import bridge.cli``
(and so ``bridge --help``) loads no engine or bus library, which a test checks.

It may import everything; nothing imports it.
"""

from __future__ import annotations

import logging

import click

from bridge.cli import backfill, bus, history, kept, mail, notify, operate, serving
from bridge.cli.base import AppState, BridgeGroup

__all__ = ["main"]


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
    # aiosmtpd logs every SMTP command at INFO, pika every connection step: the bridge's own
    # lines (one per mail, one per sink connecting or failing) say enough.
    for chatty in ("mail.log", "pika"):
        logging.getLogger(chatty).setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)


for command in (
    serving.serve,
    serving.web,
    notify.notify,
    mail.parse,
    mail.log,
    mail.retry,
    backfill.replay_mbox,
    bus.tail,
    history.query,
    history.stats,
    kept.inbox,
    kept.held,
    operate.parsers,
    operate.status,
    operate.fsck,
    operate.migrate,
    operate.doctor,
):
    main.add_command(command)

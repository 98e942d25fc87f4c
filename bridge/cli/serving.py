"""``bridge serve`` and ``bridge web`` (with its push tokens): the long-running services."""

from __future__ import annotations

import logging

import click

from bridge.cli.base import AppState, log_level, pass_state
from bridge.config import load_config


@click.command()
@click.option("--smtp", "smtp_listen", metavar="HOST:PORT", help="SMTP listen address.")
@click.option("--publish", metavar="ENDPOINT", help="ZeroMQ PUB endpoint to bind.")
@click.option("--replay", metavar="ENDPOINT", help="ZeroMQ replay (REP) endpoint to bind.")
@pass_state
def serve(
    state: AppState, smtp_listen: str | None, publish: str | None, replay: str | None
) -> None:
    """Run the bridge: SMTP intake, worker, publisher and replay endpoint."""
    from bridge.ops.service import Service

    config = state.config
    if smtp_listen:
        config = config.with_section("smtp", listen=smtp_listen)
    if publish:
        config = config.with_section("bus", publish=publish)
    if replay:
        config = config.with_section("bus", replay=replay)
    if config.log_level.upper() != "WARNING" and logging.getLogger().level > log_level(
        config.log_level
    ):
        logging.getLogger().setLevel(log_level(config.log_level))
    Service(config).run_until_signalled()


@click.group(invoke_without_command=True)
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
    logging.getLogger().setLevel(min(logging.getLogger().level, log_level(config.log_level)))
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

    path = state.config_file()
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

    path = state.config_file()
    remove_token(path, name)
    load_config(path)

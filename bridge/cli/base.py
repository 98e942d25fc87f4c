"""What every command shares: the state the top-level options chose, the error handling
that turns the bridge's errors into one line and an exit code, and small option readers.

Nothing here imports an engine or a bus library: ``bridge --help`` stays light.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bridge.config import Config, load_config
from bridge.errors import BridgeError, UsageError

if TYPE_CHECKING:
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
        """Read and validate the configuration now, key files included (a ConfigError is
        one line)."""
        from bridge.notify.rules import read_rules
        from bridge.ops.keys import check_key_files

        check_key_files(self.config)
        read_rules(self.config)  # each rule's filters, checked as /raw checks them

    def journal(self, appending: bool = False) -> Journal:
        from bridge.journal import open_journal

        return open_journal(self.config, appending=appending)

    def config_file(self) -> Path:
        """The config file, for commands that write it (tokens)."""
        if not self.config_path:
            raise UsageError("tokens live in the config file: give --config FILE or $BRIDGE_CONFIG")
        return Path(self.config_path)


pass_state = click.make_pass_decorator(AppState)


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
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except Exception as e:
            if _damaged_journal(e):  # read paths meet a damaged SQLite file here
                from bridge.journal import classify

                error = classify(e, "cannot read the journal")
                click.echo(f"bridge: error: {error}", err=True)
                ctx.exit(error.exit_code)
            # a bug: one line for the user, the traceback with -vv
            logging.getLogger("bridge").debug("internal error", exc_info=True)
            click.echo(
                f"bridge: internal error: {type(e).__name__}: {e} (run with -vv for details)",
                err=True,
            )
            ctx.exit(70)


def _damaged_journal(error: Exception) -> bool:
    """Whether *error* is SQLite's (only a command that opened the journal imported it)."""
    sqlite3 = sys.modules.get("sqlite3")
    return sqlite3 is not None and isinstance(error, sqlite3.DatabaseError)


def log_level(name: str) -> int:
    level = logging.getLevelName(name.upper())
    if not isinstance(level, int):
        raise UsageError(f"unknown log_level {name!r}")
    return level


def read_file(name: str) -> bytes:
    """A file named on the command line ("-": standard input)."""
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except FileNotFoundError as e:
        raise UsageError(f"no such file: {name}") from e
    except IsADirectoryError as e:
        raise UsageError(f"is a directory: {name}") from e


def epoch_of(value: str, option: str) -> float:
    """An ISO 8601 time as epoch seconds (UTC unless it says otherwise)."""
    from bridge.events import iso_epoch

    try:
        return iso_epoch(value)
    except ValueError as e:
        raise UsageError(
            f"{option} takes an ISO time such as 2026-11-01T00:00, not {value!r}"
        ) from e

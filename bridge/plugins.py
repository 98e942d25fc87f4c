"""Parser plugins, found through the ``bridge.parsers`` entry-point group.

A parser is a small pure object: a ``name``, ``accepts(message) -> bool`` and
``parse(message) -> list[Event]``, with no I/O and no global state. The built-in debbugs and
dak parsers register through the same group as any third-party one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import Message
from importlib.metadata import EntryPoint, entry_points
from typing import Protocol, runtime_checkable

from bridge.events import Event

log = logging.getLogger(__name__)

GROUP = "bridge.parsers"


@runtime_checkable
class Parser(Protocol):
    """What the pipeline asks of a parser plugin."""

    name: str

    def accepts(self, message: Message) -> bool:
        """Cheaply decide, on headers, whether this mail is for this parser."""
        ...

    def parse(self, message: Message) -> list[Event]:
        """Turn the mail into events; raise SkipMessage for a deliberate non-event."""
        ...


@dataclass(frozen=True)
class PluginInfo:
    """One installed parser as ``bridge parsers`` shows it."""

    name: str
    module: str
    distribution: str
    parser: Parser | None = None
    error: str | None = None


@dataclass
class Registry:
    """The parsers that loaded, and those that failed to (reported, never fatal)."""

    plugins: list[PluginInfo] = field(default_factory=list)

    @property
    def parsers(self) -> list[Parser]:
        return [p.parser for p in self.plugins if p.parser is not None]

    @property
    def failures(self) -> list[PluginInfo]:
        return [p for p in self.plugins if p.error is not None]


def discover(group: str = GROUP, only: Sequence[str] | None = None) -> Registry:
    """Load every parser registered under *group* (or only those named in *only*)."""
    registry = Registry()
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        if only is not None and ep.name not in only:
            continue
        registry.plugins.append(_load(ep))
    for failure in registry.failures:
        log.warning(
            "parser %s (%s) failed to load: %s", failure.name, failure.module, failure.error
        )
    return registry


def _load(ep: EntryPoint) -> PluginInfo:
    dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "?"
    module = ep.value.split(":")[0]
    try:
        factory = ep.load()
        parser = factory()
        if not isinstance(parser, Parser):
            raise TypeError("object lacks name/accepts/parse")
    except Exception as e:  # a broken plugin is reported, it must not stop the bridge
        return PluginInfo(ep.name, module, dist, error=f"{type(e).__name__}: {e}")
    return PluginInfo(ep.name, module, dist, parser=parser)


def registry_of(parsers: Sequence[Parser]) -> Registry:
    """A registry of explicitly chosen parsers (tests, embedding)."""
    return Registry([PluginInfo(p.name, type(p).__module__, "-", parser=p) for p in parsers])

"""Parser plugins, found through the ``bridge.parsers`` entry-point group.

Every parser, the built-in debbugs and dak ones included, is loaded the same way and must
meet the SDK's contract (:mod:`bridge.sdk`): the API version this bridge speaks, a
description, the topics it emits, and a versioned JSON Schema for each. A topic has one
owner: the bridge's own parsers are loaded first, and a plugin claiming a topic another
parser owns is refused. A plugin that fails any of this is listed with the reason by
``bridge parsers`` and left out; the bridge goes on with the others.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from bridge.sdk import API_VERSION, Parser

log = logging.getLogger(__name__)

GROUP = "bridge.parsers"
OWN_DISTRIBUTION = "debian-bus-bridge"


class PluginRefused(Exception):
    """A plugin that loaded but does not keep the SDK's contract."""


@dataclass(frozen=True)
class PluginInfo:
    """One installed parser as ``bridge parsers`` shows it."""

    name: str
    module: str
    distribution: str
    parser: Parser | None = None
    error: str | None = None
    topics: tuple[str, ...] = ()


@dataclass
class Registry:
    """The parsers that loaded, and those that were refused or failed (never fatal)."""

    plugins: list[PluginInfo] = field(default_factory=list)

    @property
    def parsers(self) -> list[Parser]:
        return [p.parser for p in self.plugins if p.parser is not None]

    @property
    def failures(self) -> list[PluginInfo]:
        return [p for p in self.plugins if p.error is not None]


def discover(group: str = GROUP, only: Sequence[str] | None = None) -> Registry:
    """Load every parser registered under *group* (use only those named in *only*).

    Topic ownership is settled over every installed parser, even when *only* picks some.
    """
    found = sorted(
        entry_points(group=group), key=lambda e: (_dist_name(e) != OWN_DISTRIBUTION, e.name)
    )
    registry = Registry()
    owners: dict[str, str] = {}
    for ep in found:
        info = _claim(_load(ep), owners)
        if only is None or ep.name in only:
            registry.plugins.append(info)
    for failure in registry.failures:
        log.error("parser %s (%s) not used: %s", failure.name, failure.module, failure.error)
    return registry


def chosen(registry: Registry, names: Sequence[str]) -> list[Parser]:
    """The parsers *names* asks for, each installed and accepted; otherwise PluginRefused
    saying which one is not used and why (a command asked for it by name: going on without
    it would answer another question)."""
    for name in names:
        info = next((p for p in registry.plugins if p.name == name), None)
        if info is None:
            raise PluginRefused(f"no parser {name!r} is installed")
        if info.parser is None:
            raise PluginRefused(f"parser {name} ({info.module}) is not used: {info.error}")
    return registry.parsers


def _load(ep: EntryPoint) -> PluginInfo:
    dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "?"
    module = ep.value.split(":")[0]
    try:
        parser = ep.load()()
    except Exception as e:  # a broken plugin is reported, it must not stop the bridge
        return PluginInfo(ep.name, module, dist, error=f"FAILED: {type(e).__name__}: {e}")
    try:
        topics = checked_topics(parser)
    except PluginRefused as e:
        return PluginInfo(ep.name, module, dist, error=f"REFUSED: {e}")
    return PluginInfo(ep.name, module, dist, parser=parser, topics=topics)


def _claim(info: PluginInfo, owners: dict[str, str]) -> PluginInfo:
    """Give *info* its topics, unless another parser owns one of them already."""
    if info.parser is None:
        return info
    taken = [t for t in info.topics if t in owners]
    if taken:
        error = f"REFUSED: claims topic {taken[0]}, which parser {owners[taken[0]]} owns"
        return PluginInfo(info.name, info.module, info.distribution, error=error)
    owners.update((t, info.name) for t in info.topics)
    return info


def checked_topics(parser: Any) -> tuple[str, ...]:
    """The topics *parser* declares, once it is shown to keep the SDK's contract."""
    if not isinstance(parser, Parser):
        missing = [
            a
            for a in ("name", "description", "api_version", "topics", "schemas", "accepts", "parse")
            if not hasattr(parser, a)
        ]
        raise PluginRefused(f"not a parser: it lacks {', '.join(missing)}")
    if parser.api_version != API_VERSION:
        raise PluginRefused(
            f"built for parser API version {parser.api_version!r}; this bridge speaks version"
            f" {API_VERSION}"
        )
    if isinstance(parser.topics, str):
        raise PluginRefused(f"topics must be a tuple of topics, not the string {parser.topics!r}")
    topics = tuple(parser.topics)
    if not topics or not all(isinstance(t, str) and t for t in topics):
        raise PluginRefused("declares no topics (topics = a tuple of the event topics it emits)")
    for topic in topics:
        schema_version(Path(parser.schemas), topic)
    return topics


def schema_version(folder: Path, topic: str) -> int:
    """The version of the JSON Schema a parser ships for *topic*, or PluginRefused."""
    path = folder / f"{topic}.json"
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PluginRefused(f"no readable JSON Schema for topic {topic} ({path}): {e}") from e
    version = schema.get("version") if isinstance(schema, dict) else None
    if not isinstance(version, int) or isinstance(version, bool):
        raise PluginRefused(f'the schema for topic {topic} has no integer "version" ({path})')
    return version


def _dist_name(ep: EntryPoint) -> str:
    return ep.dist.name if ep.dist else ""

"""Bearer tokens for ``POST /v1/publish``: made once, stored only as their SHA-256 in the
config file, each allowed a list of topic prefixes and a rate.

A token is 32 random bytes: hashing it once is enough (nobody can guess one from its hash
faster than by trying 2^256 of them); a slow password hash would only slow every request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bridge.config import WebToken
from bridge.errors import UsageError

PREFIX = "dbb_"  # recognisable in a leaked log or a secret scanner
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_TOPIC_PREFIX = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?")


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Grant:
    """What one presented token may do."""

    name: str
    topics: tuple[str, ...]

    def allows(self, event_topic: str) -> bool:
        """Whether *event_topic* lies under one of the token's prefixes (``mentors.`` allows
        ``mentors.package.upload``; ``mentors`` allows ``mentors`` and ``mentors.…``)."""
        for prefix in self.topics:
            if prefix.endswith("."):
                if event_topic.startswith(prefix):
                    return True
            elif event_topic == prefix or event_topic.startswith(prefix + "."):
                return True
        return False


class Tokens:
    """The configured tokens, looked up by the hash of what a request presents."""

    def __init__(self, configured: Mapping[str, WebToken]):
        self._by_hash = {t.hash: Grant(name, tuple(t.topics)) for name, t in configured.items()}

    def __bool__(self) -> bool:
        return bool(self._by_hash)

    def grant(self, presented: str) -> Grant | None:
        digest = token_hash(presented)
        for known, grant in self._by_hash.items():
            if hmac.compare_digest(known, digest):
                return grant
        return None


class RateLimit:
    """A token bucket per token: *burst* at once, then *per_minute* on average."""

    def __init__(self, per_minute: float, burst: int):
        self.rate = per_minute / 60.0
        self.burst = float(max(burst, 1))
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, name: str, now: float | None = None) -> float:
        """Spend one request of *name*'s: 0 when allowed, else the seconds until one is."""
        now = time.monotonic() if now is None else now
        with self._lock:
            level, then = self._buckets.get(name, (self.burst, now))
            level = min(self.burst, level + (now - then) * self.rate)
            if level >= 1.0:
                self._buckets[name] = (level - 1.0, now)
                return 0.0
            self._buckets[name] = (level, now)
            return (1.0 - level) / self.rate if self.rate > 0 else 3600.0


def add_token(
    config_path: Path, name: str, topics: list[str], existing: Mapping[str, WebToken]
) -> str:
    """Append a ``[web.tokens.NAME]`` table to the config file; return the new token, which
    is shown once and stored nowhere."""
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"token name {name!r}: lower-case letters, digits, '-' and '_', at most 64"
        )
    if name in existing:
        raise UsageError(f"a token named {name!r} exists; remove it first")
    if not topics:
        raise UsageError("give the topic prefixes the token may publish under: --topics mentors.")
    for prefix in topics:
        if not _TOPIC_PREFIX.fullmatch(prefix):
            raise UsageError(f"{prefix!r} is not an event topic prefix such as 'mentors.'")
    token = new_token()
    quoted = ", ".join(f'"{t}"' for t in topics)
    table = f'\n[web.tokens.{name}]\nhash = "{token_hash(token)}"\ntopics = [{quoted}]\n'
    text = config_path.read_text(encoding="utf-8") if config_path.exists() else ""
    config_path.write_text(text.rstrip("\n") + ("\n" if text.strip() else "") + table)
    return token


def remove_token(config_path: Path, name: str) -> None:
    """Delete the ``[web.tokens.NAME]`` table (its header and keys) from the config file."""
    lines = config_path.read_text(encoding="utf-8").splitlines(keepends=True)
    header = f"[web.tokens.{name}]"
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == header)
    except StopIteration:
        raise UsageError(f"no table {header} in {config_path}") from None
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")),
        len(lines),
    )
    while start > 0 and not lines[start - 1].strip():  # the blank line add_token put before
        start -= 1
    config_path.write_text("".join(lines[:start] + lines[end:]), encoding="utf-8")

"""Where DKIM public keys come from: a file of TXT records, else DNS.

``[trust] dkim_keys`` names a file with one record a line, ``<selector>._domainkey.<domain>
<record text>`` (``#`` starts a comment): for air-gapped runs and for tests, which must
never reach a real DNS server. Names the file does not hold are looked up in DNS through
dnspython (unless ``[trust] dns`` is false), with a bounded timeout, a budget for all the
lookups of one mail and a cache, so one slow resolver costs that mail a verdict
(``temperror``) within the budget, never a stall.
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.errors import ConfigError

CACHE_SECONDS = 3600.0
FAILURE_CACHE_SECONDS = 60.0  # a failed lookup is retried, but not for every mail


@dataclass(frozen=True)
class Lookup:
    """The answer for one key name: the record, or why there is none."""

    record: bytes | None
    temporary: bool = False  # a timeout or server failure: the key may well exist
    reason: str = ""


def read_key_file(path: Path) -> dict[str, bytes]:
    """The records of a ``dkim_keys`` file by lower-case name (without the final dot).

    Read once for as long as the file is unchanged: the check every command makes of its
    configuration and the trust check that uses the keys share one reading."""
    try:
        found = path.stat()
    except OSError as e:
        raise ConfigError(f"cannot read [trust] dkim_keys file {path}: {e.strerror}") from e
    return dict(_records(str(path), found.st_mtime_ns, found.st_size))


@functools.lru_cache(maxsize=8)
def _records(name: str, mtime_ns: int, size: int) -> dict[str, bytes]:
    path = Path(name)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read [trust] dkim_keys file {path}: {e.strerror}") from e
    records: dict[str, bytes] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, record = line.partition(" ")
        if "._domainkey." not in name or not record.strip():
            raise ConfigError(
                f"{path}:{number}: expected '<selector>._domainkey.<domain> <record>',"
                f" got {line[:60]!r}"
            )
        records[name.lower().rstrip(".")] = record.strip().strip('"').encode()
    return records


class KeyStore:
    """DKIM key records by name: the key file first, then (if allowed) DNS, cached."""

    def __init__(
        self,
        records: dict[str, bytes],
        *,
        dns: bool,
        timeout: float,
        servers: list[str] | None = None,
        port: int = 53,
    ):
        self.records = records
        self.dns = dns
        self.timeout = timeout
        self.servers = list(servers or [])
        self.port = port
        self._resolver = None
        self._cache: dict[str, tuple[float, Lookup]] = {}
        self._lock = threading.Lock()

    def lookup(self, name: str, deadline: float | None = None) -> Lookup:
        """The record for *name*; a DNS lookup waits at most until *deadline* (a
        ``time.monotonic()`` value), and none is tried once it has passed."""
        name = name.lower().rstrip(".")
        if name in self.records:
            return Lookup(self.records[name])
        if not self.dns:
            return Lookup(None, reason=f"no key for {name} in the key file, and DNS is off")
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(name)
            if cached and cached[0] > now:
                return cached[1]
        wait = self.timeout if deadline is None else min(self.timeout, deadline - now)
        if wait <= 0:
            reason = f"the mail's DNS budget ([trust] dns_budget) was spent before {name}"
            return Lookup(None, temporary=True, reason=reason)
        found = self._resolve(name, wait)
        ttl = CACHE_SECONDS if found.record is not None else FAILURE_CACHE_SECONDS
        with self._lock:
            self._cache[name] = (now + ttl, found)
        return found

    def _resolve(self, name: str, wait: float) -> Lookup:
        import dns.exception
        import dns.resolver

        try:
            answer = self._dns().resolve(name, "TXT", lifetime=wait, search=False)
        except dns.resolver.NXDOMAIN:
            return Lookup(None, reason=f"{name} does not exist in DNS")
        except dns.resolver.NoAnswer:
            return Lookup(None, reason=f"{name} has no TXT record")
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as e:
            return Lookup(None, temporary=True, reason=f"DNS lookup of {name} failed: {e}")
        except dns.exception.DNSException as e:
            return Lookup(None, temporary=True, reason=f"DNS lookup of {name} failed: {e}")
        return Lookup(b"".join(b"".join(r.strings) for r in answer))

    def _dns(self) -> Any:  # a dns.resolver.Resolver, imported late: only lookups need it
        import dns.resolver

        if self._resolver is None:
            resolver = dns.resolver.Resolver(configure=not self.servers)
            if self.servers:
                resolver.nameservers = self.servers
                resolver.port = self.port
            self._resolver = resolver
        return self._resolver

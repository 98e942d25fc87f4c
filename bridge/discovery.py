"""Bus endpoints found in DNS, as fedmsg finds them (its ``srv_endpoints``): the SRV records
of ``_fedmsg._tcp.DOMAIN`` each name one ``tcp://target:port``. The replay endpoint is
found the same way under ``_fedmsg-replay._tcp.DOMAIN`` (the bridge's own convention;
fedmsg has none).

Answers are kept for their TTL, at most ``cache_seconds``; a consumer that lost its
connection asks again (:meth:`Discovery.endpoints` with ``fresh=True``). A name that does
not exist, has no records or cannot be asked in time is one :class:`DiscoveryError` line.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from bridge.errors import BridgeError

BUS_SERVICE = "_fedmsg._tcp"
REPLAY_SERVICE = "_fedmsg-replay._tcp"


class DiscoveryError(BridgeError):
    """An SRV name that gives no endpoint, said in one line."""


@dataclass
class Discovery:
    """SRV lookups with the resolvers, port, time-out and cache given (``[discovery]``;
    no servers: the system's resolvers)."""

    servers: list[str] = field(default_factory=list)
    port: int = 53
    timeout: float = 5.0
    cache_seconds: float = 60.0
    _cache: dict[str, tuple[float, list[str]]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def endpoints(self, domain: str, *, fresh: bool = False) -> list[str]:
        """The bus endpoints *domain* announces, in SRV order (priority, then weight)."""
        return self.lookup(f"{BUS_SERVICE}.{domain}", fresh=fresh)

    def replay(self, domain: str, *, fresh: bool = False) -> str | None:
        """The replay endpoint *domain* announces, or None when it announces none."""
        try:
            found = self.lookup(f"{REPLAY_SERVICE}.{domain}", fresh=fresh)
        except DiscoveryError:
            return None
        return found[0] if found else None

    def lookup(self, name: str, *, fresh: bool = False) -> list[str]:
        with self._lock:
            cached = self._cache.get(name)
            if cached is not None and not fresh and cached[0] > time.monotonic():
                return list(cached[1])
        found, ttl = self._ask(name)
        with self._lock:
            keep = min(ttl, self.cache_seconds)
            self._cache[name] = (time.monotonic() + keep, found)
        return list(found)

    def _ask(self, name: str) -> tuple[list[str], float]:
        import dns.exception
        import dns.resolver

        resolver = dns.resolver.Resolver(configure=not self.servers)
        if self.servers:
            resolver.nameservers = list(self.servers)
        resolver.port = self.port
        resolver.lifetime = self.timeout
        where = f"{','.join(self.servers)}:{self.port}" if self.servers else "the system resolver"
        try:
            answer = resolver.resolve(name, "SRV")
        except dns.resolver.NXDOMAIN:
            raise DiscoveryError(f"{name} does not exist (NXDOMAIN from {where})") from None
        except dns.resolver.NoAnswer:
            raise DiscoveryError(f"{name} has no SRV records ({where})") from None
        except dns.exception.Timeout:
            raise DiscoveryError(
                f"no answer for {name} within {self.timeout:g}s from {where}"
            ) from None
        except dns.resolver.NoNameservers as e:
            raise DiscoveryError(f"no name server answered for {name}: {e}") from None
        records = sorted(answer, key=lambda r: (r.priority, -r.weight))
        endpoints = [f"tcp://{r.target.to_text().rstrip('.')}:{r.port}" for r in records]
        return endpoints, float(answer.rrset.ttl if answer.rrset is not None else 0)

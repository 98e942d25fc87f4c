"""``Authentication-Results`` (RFC 8601) from the MTAs the operator trusts.

The host's own MTA may verify DKIM at the border and say so in this header. Only headers
whose authserv-id is in ``[trust] authserv_ids`` count: anyone can write the header, so a
result from any other id is ignored (and the reason says so when nothing else vouches).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BorderResult:
    """One ``dkim=`` result a trusted MTA recorded."""

    authserv_id: str
    result: str  # pass, fail, neutral, temperror, …
    domain: str  # header.d
    selector: str  # header.s, when given
    b: str  # header.b: the start of the signature it speaks of, when given


def dkim_results(values: Sequence[str], trusted: Sequence[str]) -> list[BorderResult]:
    """The DKIM results in the header *values* from a *trusted* authserv-id."""
    wanted = {t.lower() for t in trusted}
    found: list[BorderResult] = []
    for header in _parsed(v for v in values if _may_name(v, wanted)):
        serv = str(header.authserv_id or "").lower()
        if serv not in wanted:
            continue
        for result in header.results:
            if str(result.method).lower() != "dkim":
                continue
            props = {(p.type, p.name): str(p.value) for p in result.properties}
            found.append(
                BorderResult(
                    serv,
                    str(result.result).lower(),
                    props.get(("header", "d"), "").lower(),
                    props.get(("header", "s"), "").lower(),
                    props.get(("header", "b"), ""),
                )
            )
    return found


def untrusted_ids(values: Sequence[str], trusted: Sequence[str]) -> list[str]:
    """The authserv-ids of the header *values* that are not *trusted* (and so ignored)."""
    wanted = {t.lower() for t in trusted}
    servs = (str(header.authserv_id or "").lower() for header in _parsed(values))
    return [serv for serv in servs if serv not in wanted]


def _may_name(value: str, wanted: set[str]) -> bool:
    # Parsing a header costs ~1 ms; one from a trusted MTA holds its id as written.
    lowered = value.lower()
    return any(serv in lowered for serv in wanted)


def _parsed(values: Iterable[str]) -> Iterator[Any]:
    import authres

    for value in values:
        try:
            yield authres.AuthenticationResultsHeader.parse_value(" ".join(value.split()))
        except Exception:  # authres raises its own SyntaxError on malformed headers
            continue

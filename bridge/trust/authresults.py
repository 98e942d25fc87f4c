"""``Authentication-Results`` (RFC 8601) from the MTAs the operator trusts.

The host's own MTA may verify DKIM at the border and say so in this header. Only headers
whose authserv-id is in ``[trust] authserv_ids`` count: anyone can write the header, so a
result from any other id is ignored (and the reason says so when nothing else vouches).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class BorderResult:
    """One ``dkim=`` result a trusted MTA recorded."""

    authserv_id: str
    result: str  # pass, fail, neutral, temperror, …
    domain: str  # header.d
    selector: str  # header.s, when given
    b: str  # header.b: the start of the signature it speaks of, when given


def dkim_results(
    values: Sequence[str], trusted: Sequence[str]
) -> tuple[list[BorderResult], list[str]]:
    """The DKIM results in the header *values* from a *trusted* authserv-id, and the
    authserv-ids of the headers that were ignored."""
    import authres

    wanted = {t.lower() for t in trusted}
    found: list[BorderResult] = []
    ignored: list[str] = []
    for value in values:
        try:
            header = authres.AuthenticationResultsHeader.parse_value(" ".join(value.split()))
        except Exception:  # authres raises its own SyntaxError on malformed headers
            continue
        serv = str(header.authserv_id or "").lower()
        if serv not in wanted:
            ignored.append(serv)
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
    return found, ignored

"""Rendering history: the ``bridge stats`` table (the journal answers the queries)."""

from __future__ import annotations


def render_table(table: dict[str, dict[str, int]], period: str) -> list[str]:
    """A plain text table: one row per period, one column per topic, totals last."""
    topics = sorted({t for counts in table.values() for t in counts})
    if not topics:
        return ["no events"]
    widths = [max(len(period), 10)] + [max(len(t), 5) for t in topics] + [5]
    header = [period] + topics + ["total"]
    lines = [
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w)
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    ]
    for when, counts in table.items():
        cells = [when] + [str(counts.get(t, 0)) for t in topics] + [str(sum(counts.values()))]
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
        )
    return lines

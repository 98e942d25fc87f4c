"""The pipeline: what becomes of each mail, whatever brought it (SMTP, an mbox, a retry).

Owns reading a mail once (:mod:`~bridge.pipeline.process`), the parser plugins and their
schemas (``plugins``, ``schemas``), what a body must be before the journal takes it
(``bodies``), the worker that drains the spool into the journal (``worker``) and the
backfill of archived mboxes (``backfill``, ``mbox``).

It may import the ground (``bridge.errors``, ``events``, ``mail``, ``config``, ``runner``,
``files``), the parser SDK, ``bridge.trust``, ``bridge.journal`` and ``bridge.intake``
(the worker drains the spool); never a sink, the web, the operators' tools or the CLI.
"""

from bridge.pipeline.process import (
    FAILED,
    HELD,
    IGNORED,
    PUBLISHED,
    REJECTED,
    Outcome,
    Pipeline,
    Status,
    Tally,
    apply_policy,
    build_pipeline,
    describe,
)

__all__ = [
    "FAILED",
    "HELD",
    "IGNORED",
    "PUBLISHED",
    "REJECTED",
    "Outcome",
    "Pipeline",
    "Status",
    "Tally",
    "apply_policy",
    "build_pipeline",
    "describe",
]

"""The plugin author's test kit: what the built-in parsers' own tests use, and nothing more.

Golden cases
    ``golden_cases(folder)`` finds ``<case>.eml`` files with a sibling ``<case>.json``
    holding the whole expected outcome: a list of events, each ``{"topic", "dedup_key",
    "index", "msg"}`` (``index``: ``packages``, ``bugs``, ``people``, ``occurred_at``), or, for
    a mail that deliberately gives none, ``{"skip": "<reason>"}`` as the pipeline states
    it. ``run_case(parsers, eml)`` runs the real pipeline over one.
Broken mails
    ``broken_cases(folder)`` finds ``<case>.eml`` files with a sibling ``<case>.reason``:
    mail the parser claims but cannot read. ``check_broken(parsers, case)`` asserts the mail
    fails, gives no event, and says the reason.
Corpus runs
    ``CorpusRun(parser, paths)`` runs a parser over many real mails: nothing may fail, and
    every event must fit the parser's own schemas; it counts events per topic and lists
    the mails that gave none, with why.
Schemas
    ``validate(event, parser)`` checks a body against the JSON Schema the parser ships for
    the event's topic (or, given a folder, the schema in that folder).
Loading
    ``run_case`` refuses a parser ``bridge parsers`` would refuse (API version, topics,
    schemas), with the same reason; ``check_installed(name)`` loads an installed plugin
    through its entry point exactly as the bridge does, topic ownership included.
Two parsers on one mail
    Every parser that accepts a mail parses it, and the events of each that succeeds are
    journaled, whatever the others do. ``beside(parser, eml)`` runs a parser with every
    installed one (as ``bridge serve`` would) and returns the outcome: ``journaled`` is what
    the journal receives, ``failures`` why the mail also goes to ``failed/``.

A test module of a plugin::

    @pytest.mark.parametrize("case", golden_cases(HERE / "fixtures"), ids=lambda c: c.name)
    def test_golden(case):
        assert run_case([MyParser()], case.eml) == case.expected()
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.events import Event
from bridge.pipeline import FAILED, Outcome, Pipeline
from bridge.sdk import Parser

__all__ = [
    "BrokenCase",
    "CorpusRun",
    "GoldenCase",
    "as_json",
    "beside",
    "broken_cases",
    "check_broken",
    "check_installed",
    "golden_cases",
    "run_case",
    "validate",
]


@dataclass(frozen=True)
class GoldenCase:
    """One mail and the outcome it must give."""

    name: str
    eml: Path
    json: Path

    def expected(self) -> list[dict[str, Any]] | dict[str, str]:
        return json.loads(self.json.read_text(encoding="utf-8"))


def golden_cases(folder: Path) -> list[GoldenCase]:
    """Every ``<case>.eml`` in *folder* with its ``<case>.json``, by name (one missing is an
    error: a fixture without an expectation tests nothing)."""
    cases = []
    for eml in sorted(Path(folder).glob("*.eml")):
        expected = eml.with_suffix(".json")
        if not expected.exists():
            raise FileNotFoundError(f"{eml} has no expected outcome file {expected.name}")
        cases.append(GoldenCase(eml.stem, eml, expected))
    return cases


def run_case(parsers: Sequence[Parser], eml: Path) -> list[dict[str, Any]] | dict[str, str]:
    """What the pipeline makes of *eml*: its events as JSON-ready dicts, or ``{"skip":
    reason}`` for a mail that deliberately gives none. A parser the bridge would refuse to
    load fails here too, with the reason ``bridge parsers`` gives."""
    for parser in parsers:
        _keeps_the_contract(parser)
    outcome = Pipeline(parsers).process(Path(eml).read_bytes())
    if outcome.failures:
        raise AssertionError(f"{Path(eml).name}: {outcome.reason}")
    if not outcome.events:
        return {"skip": outcome.reason}
    return [as_json(e) for e in outcome.events]


def _keeps_the_contract(parser: Parser) -> None:
    from bridge.pipeline.plugins import PluginRefused, checked_topics

    try:
        checked_topics(parser)
    except PluginRefused as e:
        name = getattr(parser, "name", type(parser).__name__)
        raise AssertionError(f"bridge parsers would refuse parser {name}: {e}") from e


def check_installed(name: str) -> Parser:
    """The installed parser *name*, loaded through its ``bridge.parsers`` entry point as
    ``bridge serve`` loads it; AssertionError with the reason when it is missing or refused
    (another API version, a topic another parser owns, a missing schema)."""
    from bridge.pipeline.plugins import discover

    registry = discover()
    for info in registry.plugins:
        if info.name == name:
            if info.parser is None:
                raise AssertionError(f"parser {name} ({info.module}) is not used: {info.error}")
            return info.parser
    names = ", ".join(p.name for p in registry.plugins) or "none"
    raise AssertionError(f"no parser {name!r} is installed (installed: {names})")


def beside(parser: Parser, eml: Path, others: Sequence[Parser] | None = None) -> Outcome:
    """What the pipeline makes of *eml* with *parser* beside *others* (default: every
    installed parser but one of the same name), in that order. ``outcome.journaled`` is what
    the journal receives: each parser's events go out whole unless that parser failed."""
    from bridge.pipeline.plugins import discover

    if others is None:
        others = [p for p in discover().parsers if p.name != parser.name]
    return Pipeline([*others, parser]).process(Path(eml).read_bytes())


def as_json(event: Event) -> dict[str, Any]:
    """An event as a golden case states it (tuples as lists): topic, dedup key, the index
    fields and the body."""
    index = {
        "packages": list(event.packages),
        "bugs": list(event.bugs),
        "people": list(event.people),
        "occurred_at": event.occurred_at,
    }
    whole = {"topic": event.topic, "dedup_key": event.dedup_key, "index": index, "msg": event.body}
    return json.loads(json.dumps(whole))


@dataclass(frozen=True)
class BrokenCase:
    """A mail its parser must refuse, and (part of) the reason it must give."""

    name: str
    eml: Path
    reason: str


def broken_cases(folder: Path) -> list[BrokenCase]:
    """Every ``<case>.eml`` in *folder* with its ``<case>.reason``, by name."""
    cases = []
    for eml in sorted(Path(folder).glob("*.eml")):
        reason = eml.with_suffix(".reason")
        if not reason.exists():
            raise FileNotFoundError(f"{eml} has no {reason.name} saying why it must fail")
        cases.append(BrokenCase(eml.stem, eml, reason.read_text(encoding="utf-8").strip()))
    return cases


def check_broken(parsers: Sequence[Parser], case: BrokenCase) -> Outcome:
    """Assert the mail fails with its reason and no half event; return the outcome."""
    outcome = Pipeline(parsers).process(case.eml.read_bytes())
    assert outcome.status == FAILED, f"{case.name}: {outcome.status}, not failed"
    assert outcome.events == [], f"{case.name}: a broken mail gave events"
    assert case.reason in outcome.reason, f"{case.name}: {outcome.reason!r}"
    return outcome


class CorpusRun:
    """One parser over many mails: no failure, every event fits its schema, and a report.

    Iterating yields ``(path, raw, outcome)`` for the test's own checks; :meth:`report`
    prints the per-topic counts and the mails that gave nothing, each with its reason.
    """

    def __init__(self, parser: Parser, paths: Sequence[Path]):
        self.parser = parser
        self.pipeline = Pipeline([parser])
        self.paths = list(paths)
        self.counts: Counter[str] = Counter()
        self.silent: list[str] = []

    def __iter__(self) -> Iterator[tuple[Path, bytes, Outcome]]:
        for path in self.paths:
            raw = path.read_bytes()
            outcome = self.pipeline.process(raw)
            assert not outcome.failures, f"{path}: {outcome.reason}"
            self.counts.update(e.topic for e in outcome.events)
            for event in outcome.events:
                validate(event, self.parser)
            if not outcome.events:
                self.silent.append(f"{path.parent.name}/{path.name}: {outcome.reason}")
            yield path, raw, outcome

    def report(self) -> str:
        """The per-topic counts and the mails that gave no event, as text."""
        lines = [f"per-topic counts: {dict(sorted(self.counts.items()))}", "mails with no event:"]
        return "\n  ".join(lines + self.silent)


def validate(event: Event | dict[str, Any], schemas: Parser | Path) -> None:
    """Raise ``jsonschema.ValidationError`` unless the body fits its topic's schema.

    *schemas* is the parser (its own ``schemas`` folder) or a folder of ``<topic>.json``.
    """
    import jsonschema

    topic, body = (
        (event.topic, event.body) if isinstance(event, Event) else (event["topic"], event["msg"])
    )
    folder = Path(schemas.schemas) if isinstance(schemas, Parser) else Path(schemas)
    schema = json.loads((folder / f"{topic}.json").read_text(encoding="utf-8"))
    jsonschema.validate(json.loads(json.dumps(body)), schema)

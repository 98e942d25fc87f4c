"""The plugin author's test kit.

``golden_cases(folder)`` finds ``<case>.eml`` files with sibling ``<case>.json`` expected
outcomes; ``run_case(parsers, eml)`` runs the real pipeline over one; ``validate(event,
schema_dir)`` checks an event body against the JSON Schema named after its topic.

An expected outcome is the whole of what the mail gives: a list of events, each
``{"topic", "dedup_key", "msg"}``, or, for a mail that deliberately gives none,
``{"skip": "<the reason, as the pipeline states it>"}``.

    @pytest.mark.parametrize("case", golden_cases(HERE / "fixtures"), ids=lambda c: c.name)
    def test_golden(case):
        assert run_case([MyParser()], case.eml) == case.expected()
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.events import Event
from bridge.pipeline import Pipeline
from bridge.plugins import Parser


@dataclass(frozen=True)
class GoldenCase:
    """One mail and the events it must give."""

    name: str
    eml: Path
    json: Path

    def expected(self) -> list[dict[str, Any]] | dict[str, str]:
        return json.loads(self.json.read_text(encoding="utf-8"))


def golden_cases(folder: Path) -> list[GoldenCase]:
    """Every ``<case>.eml`` in *folder* that has a ``<case>.json`` beside it, by name."""
    cases = []
    for eml in sorted(Path(folder).glob("*.eml")):
        expected = eml.with_suffix(".json")
        if not expected.exists():
            raise FileNotFoundError(f"{eml} has no expected events file {expected.name}")
        cases.append(GoldenCase(eml.stem, eml, expected))
    return cases


def run_case(parsers: Sequence[Parser], eml: Path) -> list[dict[str, Any]] | dict[str, str]:
    """What the pipeline makes of *eml*: its events as JSON-ready dicts, or ``{"skip"}``."""
    outcome = Pipeline(parsers).process(Path(eml).read_bytes())
    if outcome.failures:
        raise AssertionError(f"{Path(eml).name}: {outcome.reason}")
    if not outcome.events:
        return {"skip": outcome.reason}
    return [as_json(e) for e in outcome.events]


def as_json(event: Event) -> dict[str, Any]:
    """An event as it would be serialised (so tuples compare equal to lists)."""
    return json.loads(
        json.dumps({"topic": event.topic, "dedup_key": event.dedup_key, "msg": event.body})
    )


def validate(event: Event | dict[str, Any], schema_dir: Path) -> None:
    """Raise ``jsonschema.ValidationError`` unless the body fits ``<topic>.json``."""
    import jsonschema

    topic, body = (
        (event.topic, event.body) if isinstance(event, Event) else (event["topic"], event["msg"])
    )
    schema = json.loads((Path(schema_dir) / f"{topic}.json").read_text(encoding="utf-8"))
    jsonschema.validate(json.loads(json.dumps(body)), schema)

"""One schema check on every path: a body that breaks its topic's declared schema never
reaches the journal, from mail (over SMTP), from ``bridge log`` or from an HTTP push."""

from __future__ import annotations

import json
from pathlib import Path

from bridge.events import Event
from bridge.journal import JOURNAL_FILE, SqliteJournal
from bridge.pipeline import FAILED, Pipeline
from bridge.pipeline.schemas import Schemas
from tests.helpers import bridge
from tests.mails import bug_report

SCHEMA = {
    "version": 3,
    "type": "object",
    "required": ["summary", "agent"],
    "properties": {
        "summary": {"type": "string"},
        "agent": {"type": "object", "required": ["email"]},
        "count": {"type": "integer"},
    },
}


class Sloppy:
    """A parser whose body leaves out what its own schema requires."""

    name = "sloppy"
    description = "emits what its schema refuses"
    api_version = 1
    topics = ("sloppy.thing",)

    def __init__(self, schemas: Path, body: dict):
        self.schemas = schemas
        self.body = body

    def accepts(self, message):
        return True

    def parse(self, message):
        return [Event("sloppy.thing", dict(self.body), dedup_key="k")]


def schemas_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "schemas"
    folder.mkdir()
    (folder / "sloppy.thing.json").write_text(json.dumps(SCHEMA))
    return folder


def test_a_mail_whose_event_breaks_its_schema_fails_with_the_path_and_why(tmp_path):
    folder = schemas_folder(tmp_path)
    bad = Pipeline([Sloppy(folder, {"summary": "s", "agent": {"name": "x"}})]).process(
        bug_report(1)
    )
    assert bad.status == FAILED and bad.events == []
    assert "not a sloppy.thing body: at /agent, 'email' is a required property" in bad.reason
    body = {"summary": "s", "agent": {"email": "a@example.org"}, "count": 2}
    (event,) = Pipeline([Sloppy(folder, body)]).process(bug_report(1)).events
    assert event.body["schema_version"] == 3  # stamped, then checked


def test_bridge_log_refuses_a_body_that_breaks_its_topic_schema(tmp_path):
    state = tmp_path / "state"
    refused = bridge(
        "--state-dir", str(state), "log", "--topic", "debbugs.bug.report", '{"summary": "x"}'
    )
    assert refused.returncode == 2
    (line,) = refused.stderr.decode().strip().splitlines()
    assert "not a debbugs.bug.report body: at /" in line and "is a required property" in line
    with SqliteJournal(state / JOURNAL_FILE) as journal:
        assert journal.last_seq_id() == 0
    # a topic no parser declares has no schema to keep
    noted = bridge("--state-dir", str(state), "log", "--topic", "bridge.note", '{"summary": "x"}')
    assert noted.returncode == 0, noted.stderr
    with SqliteJournal(state / JOURNAL_FILE) as journal:
        (envelope,) = journal.envelopes(journal.rows_after(0, 10))
    assert envelope.msg["summary"] == "x" and "schema_version" not in envelope.msg


def test_each_schema_is_compiled_once_and_names_the_shallowest_breach(tmp_path):
    schemas = Schemas([Sloppy(schemas_folder(tmp_path), {})])
    schemas.check("sloppy.thing", {"summary": "s", "agent": {"email": "e"}})
    first = schemas._schema("sloppy.thing")
    assert schemas._schema("sloppy.thing") is first
    try:
        schemas.check("sloppy.thing", {"agent": {}, "count": "two"})
    except ValueError as e:
        assert "at /," in str(e) and "'summary' is a required property" in str(e)
    else:
        raise AssertionError("the breach was not found")
    assert schemas.version("sloppy.thing") == 3 and schemas.version("other") is None


def test_the_fast_check_is_taken_only_where_both_drafts_read_the_schema_alike():
    from bridge.pipeline.schemas import read_alike

    assert read_alike(SCHEMA)
    assert read_alike({"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}]}}})
    assert not read_alike({"prefixItems": [{"type": "string"}]})
    assert not read_alike({"items": [{"type": "string"}]})  # draft-07's tuple form
    assert not read_alike({"properties": {"a": {"format": "email"}}})  # asserted by one only
    assert not read_alike({"$defs": {}, "$ref": "#/$defs/x"})

"""The one schema check every event passes before the journal takes it.

A parser declares the topics it emits and ships a JSON Schema for each; a body on such a
topic, whoever made it (a parser from mail, ``bridge log``, an HTTP push), must fit that
schema, or it never reaches the journal. Each schema is read and compiled once per process.

Every event is checked, so the check must be cheap: a schema written with the keywords
draft-07 and draft 2020-12 read alike is compiled to Python by fastjsonschema (a twentieth of
jsonschema's time on the corpus); any other schema, and the message for a body that fails,
come from jsonschema, which reads every draft.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


class SchemaBreach(ValueError):
    """A body does not fit its topic's schema; the message gives the JSON path and why."""


class Schemas:
    """The compiled schema of each topic, from the ``schemas`` folders of *parsers*."""

    def __init__(self, parsers: Iterable[Any] = ()):
        self._folders: dict[str, Path] = {}
        for parser in parsers:
            self.add(parser)
        self._compiled: dict[str, Any] = {}
        self._fast: dict[str, Any] = {}
        self._lock = threading.Lock()

    def add(self, parser: Any) -> None:
        """Take the topics *parser* declares, with the folder of their schemas."""
        for topic in getattr(parser, "topics", ()):
            self._folders.setdefault(topic, Path(parser.schemas))

    def declared(self, topic: str) -> bool:
        return topic in self._folders

    def topics(self) -> list[str]:
        """Every topic a parser declares, in order."""
        return sorted(self._folders)

    def text(self, topic: str) -> str | None:
        """*topic*'s JSON Schema as its parser ships it (None: no parser declares it)."""
        folder = self._folders.get(topic)
        return None if folder is None else (folder / f"{topic}.json").read_text(encoding="utf-8")

    def version(self, topic: str) -> int | None:
        """The ``version`` of *topic*'s schema (None: no parser declares it)."""
        schema = self._schema(topic)
        return None if schema is None else schema.schema.get("version")

    def check(self, topic: str, body: Mapping[str, Any]) -> None:
        """Raise :class:`SchemaBreach` unless *body* fits *topic*'s schema (a topic no parser
        declares has none to fit)."""
        validator = self._schema(topic)
        if validator is None:
            return
        fast = self._fast.get(topic)
        if fast is not None:
            import fastjsonschema

            try:
                fast(body)
                return
            except fastjsonschema.JsonSchemaException:
                pass  # jsonschema says where and why
        error = next(iter(sorted(validator.iter_errors(body), key=_depth)), None)
        if error is not None:
            where = "".join(f"/{p}" for p in error.absolute_path) or "/"
            raise SchemaBreach(f"not a {topic} body: at {where}, {error.message}")

    def _schema(self, topic: str) -> Any:
        folder = self._folders.get(topic)
        if folder is None:
            return None
        with self._lock:
            if topic not in self._compiled:
                import jsonschema

                schema = json.loads((folder / f"{topic}.json").read_text(encoding="utf-8"))
                cls = jsonschema.validators.validator_for(schema)
                self._compiled[topic] = cls(schema)
                if read_alike(schema):
                    import fastjsonschema

                    self._fast[topic] = fastjsonschema.compile(schema)
            return self._compiled[topic]


# Keywords draft-07 and draft 2020-12 give one meaning (those fastjsonschema reads as
# 2020-12 does), and the annotations neither checks. A schema with any other keyword (such
# as prefixItems, $defs, unevaluatedProperties, or items as a list) is left to jsonschema.
SAME_IN_BOTH = frozenset(
    [
        "$schema", "$id", "title", "description", "default", "examples", "$comment", "version",
        "type", "enum", "const", "properties", "required", "additionalProperties",
        "patternProperties", "propertyNames", "minProperties", "maxProperties", "items",
        "minItems", "maxItems", "uniqueItems", "contains", "minLength", "maxLength", "pattern",
        "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "allOf",
        "anyOf", "oneOf", "not", "if", "then", "else",
    ]
)  # fmt: skip
_SUBSCHEMAS = ("items", "additionalProperties", "propertyNames", "contains", "not", "if",
               "then", "else")  # fmt: skip
_SUBSCHEMA_MAPS = ("properties", "patternProperties")
_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf")


def read_alike(schema: Any) -> bool:
    """Whether both drafts read *schema* the same, keyword by keyword, all the way down."""
    if isinstance(schema, bool):
        return True
    if not isinstance(schema, dict) or not set(schema) <= SAME_IN_BOTH:
        return False
    if isinstance(schema.get("items"), list):
        return False  # a list of schemas: tuple validation in draft-07, an error in 2020-12
    children = [schema[k] for k in _SUBSCHEMAS if k in schema]
    children += [v for k in _SUBSCHEMA_MAPS for v in (schema.get(k) or {}).values()]
    children += [v for k in _SUBSCHEMA_LISTS for v in schema.get(k) or []]
    return all(read_alike(child) for child in children)


def _depth(error: Any) -> int:
    # the shallowest complaint first: it names the field a reader fixes first
    return len(error.absolute_path)


def installed() -> Schemas:
    """The schemas of every parser the plugin registry loads."""
    from bridge.pipeline.plugins import discover

    return Schemas(discover().parsers)

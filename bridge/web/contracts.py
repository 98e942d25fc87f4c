"""The contract of each topic, for any consumer to fetch: ``/v1/schemas`` lists the topics
the installed parsers declare (plugins' too), ``/v1/schemas/TOPIC`` gives one's JSON Schema
as its parser ships it (the same file the bridge checks every body against), and
``/v1/asyncapi.json`` describes the whole bus as an AsyncAPI 3.0 document: every topic, its
schema, an example and how to reach it over ZeroMQ and AMQP."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.config import Config
from bridge.events import Naming
from bridge.journal import Criteria, Journal
from bridge.pipeline.plugins import discover
from bridge.pipeline.schemas import Schemas
from bridge.sinks.amqp import SCHEMA_PREFIX, SEVERITY_INFO
from bridge.web.answers import error
from bridge.web.metrics import build_info
from bridge.web.pool import Journals


class Contracts:
    """The schema routes; the parsers are looked up once, on the first request."""

    def __init__(self, config: Config, journals: Journals):
        self.naming = config.naming
        self.bus = BusFacts.of(config)
        self.journals = journals
        self._schemas: Schemas | None = None
        self._lock = threading.Lock()

    def schemas(self) -> Schemas:
        with self._lock:
            if self._schemas is None:
                self._schemas = Schemas(discover().parsers)
            return self._schemas

    async def index(self, request: Request) -> Response:
        topics = self.schemas().topics()
        return JSONResponse(
            {
                "topics": {
                    topic: {"bus_topic": self.naming.topic(topic), "schema": f"/v1/schemas/{topic}"}
                    for topic in topics
                }
            }
        )

    async def schema(self, request: Request) -> Response:
        asked = request.path_params["topic"]
        topic = self.naming.event_topic(asked)  # the full bus topic or the event topic
        text = self.schemas().text(topic)
        if text is None:
            known = ", ".join(self.schemas().topics())
            return error(404, f"no installed parser declares {asked!r}; topics: {known}")
        return Response(text, media_type="application/schema+json")

    async def asyncapi(self, request: Request) -> Response:
        schemas = self.schemas()

        def newest_of_each(journal: Journal) -> dict[str, dict[str, Any]]:
            found = {}
            for topic in schemas.topics():
                newest = journal.find(Criteria(topics=(topic,)), limit=1)
                if newest and isinstance(newest[0].msg, dict):
                    found[topic] = newest[0].msg
            return found

        examples = await self.journals.run(newest_of_each)
        document = asyncapi_document(
            self.naming, schemas, self.bus, examples, build_info()["version"]
        )
        return JSONResponse(document)


ASYNCAPI_VERSION = "3.0.0"
# The topics' schemas are JSON Schema 2020-12: said so, as AsyncAPI's multi-format schemas let.
PAYLOAD_FORMAT = "application/schema+json;version=draft-2020-12"


@dataclass(frozen=True)
class BusFacts:
    """What the AsyncAPI document says of the buses, from the configuration."""

    publish: str  # the ZeroMQ PUB endpoint
    replay: str  # the ZeroMQ replay (REQ/REP) endpoint
    amqp_host: str  # "host:port" of the broker; "" when no AMQP sink is configured
    amqp_vhost: str
    exchange: str

    @classmethod
    def of(cls, config: Config) -> BusFacts:
        host, vhost = "", "/"
        if config.amqp.url:
            parts = urlsplit(config.amqp.url)  # credentials are never repeated
            host = f"{parts.hostname}:{parts.port or (5671 if parts.scheme == 'amqps' else 5672)}"
            vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        return cls(config.bus.publish, config.bus.replay, host, vhost, config.amqp.exchange)


def _component_name(topic: str) -> str:
    """An AsyncAPI component key (letters, digits, ``.``, ``_``, ``-``) for *topic*."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", topic)


def _zeromq_server(endpoint: str, what: str) -> dict[str, Any]:
    scheme, _, rest = endpoint.partition("://")
    return {
        "host": rest or endpoint,
        "protocol": "zmq",
        "protocolVersion": scheme,
        "description": what,
    }


def asyncapi_document(
    naming: Naming,
    schemas: Schemas,
    bus: BusFacts,
    examples: dict[str, dict[str, Any]],
    version: str,
) -> dict[str, Any]:
    """The bus as an AsyncAPI 3.0 document: every topic *schemas* knows as a channel whose
    address is its bus topic, with its JSON Schema, an example (*examples*, newest event of
    each topic in the journal) and how to reach it over ZeroMQ and AMQP."""
    servers: dict[str, Any] = {
        "zeromq": _zeromq_server(
            bus.publish,
            "ZeroMQ PUB socket in fedmsg's framing: two frames, the bus topic and the JSON "
            "envelope (its `msg` is the message payload). Subscribe by topic prefix.",
        ),
        "zeromq-replay": _zeromq_server(
            bus.replay,
            "ZeroMQ REP socket answering fedmsg's replay queries (seq_id ranges, msg_ids) "
            "with the envelopes the journal holds.",
        ),
    }
    if bus.amqp_host:
        servers["amqp"] = {
            "host": bus.amqp_host,
            "pathname": bus.amqp_vhost,
            "protocol": "amqp",
            "protocolVersion": "0.9.1",
            "description": "RabbitMQ, in fedora-messaging's format: the body is the payload, "
            "the headers below ride along. Bind a queue to the exchange by routing key.",
        }
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for topic in schemas.topics():
        name = _component_name(topic)
        bus_topic = naming.topic(topic)
        schema = json.loads(schemas.text(topic) or "{}")
        message: dict[str, Any] = {
            "name": topic,
            "title": schema.get("title", topic),
            "summary": f"{bus_topic}: schema version {schema.get('version', '?')}",
            "contentType": "application/json",
            "payload": {"schemaFormat": PAYLOAD_FORMAT, "schema": schema},
            "headers": {"$ref": "#/components/schemas/amqp-headers"},
            "externalDocs": {"url": f"/v1/schemas/{topic}", "description": "the JSON Schema alone"},
            "bindings": {
                "amqp": {
                    "contentEncoding": "utf-8",
                    "messageType": bus_topic,
                    "bindingVersion": "0.3.0",
                }
            },
        }
        if topic in examples:
            message["examples"] = [
                {
                    "name": "newest",
                    "summary": "the newest event of this topic in the journal",
                    "payload": examples[topic],
                }
            ]
        messages[name] = message
        channels[name] = {
            "address": bus_topic,
            "title": schema.get("title", topic),
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": {
                        "name": bus.exchange,
                        "type": "topic",
                        "durable": True,
                        "autoDelete": False,
                        "vhost": bus.amqp_vhost,
                    },
                    "bindingVersion": "0.3.0",
                }
            },
            "x-zeromq-topic": bus_topic,
        }
        operations[f"publish-{name}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{name}"},
            "messages": [{"$ref": f"#/channels/{name}/messages/{name}"}],
            "summary": f"The bridge publishes {topic} events",
        }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "debian-bus-bridge",
            "version": version,
            "description": "Debian's bug tracker and archive mail as events. The channel "
            "address is the bus topic: the ZeroMQ subscription prefix and the AMQP routing "
            "key. Each payload is the event body; a topic without an example has not been "
            "journaled here yet.",
        },
        "defaultContentType": "application/json",
        "servers": servers,
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": {"amqp-headers": AMQP_HEADERS},
        },
    }


AMQP_HEADERS: dict[str, Any] = {
    "type": "object",
    "description": "The AMQP message's headers (ZeroMQ carries the same in the envelope).",
    "properties": {
        "fedora_messaging_schema": {
            "type": "string",
            "description": f"{SCHEMA_PREFIX}<topic>: fedora-messaging's class for the body "
            "(pip install contrib/debian-bus-messages)",
        },
        "fedora_messaging_severity": {"type": "integer", "const": SEVERITY_INFO},
        "sent-at": {
            "type": "string",
            "format": "date-time",
            "description": "when the message left the bridge",
        },
        "debian_bus_seq_id": {
            "type": "integer",
            "description": "the journal position; drop repeats at or below the highest you handled",
        },
        "debian_bus_msg_id": {"type": "string"},
        "debian_bus_timestamp": {
            "type": "number",
            "description": "the envelope's timestamp (epoch seconds)",
        },
        "debian_bus_packages": {"type": "array", "items": {"type": "string"}},
        "debian_bus_bugs": {"type": "array", "items": {"type": "integer"}},
    },
}

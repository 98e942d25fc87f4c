"""fedora-messaging classes for the bridge's topics (entry points ``debian_bus.<topic>``)."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

from fedora_messaging import message

from debian_bus_messages import debian_logins, people_of


class DebianBusMessage(message.Message):
    """A bridge event: its body is the event body of docs/events.md."""

    @property
    def app_name(self) -> str:
        return "debian-bus-bridge"

    @property
    def summary(self) -> str:
        return self.body.get("summary") or self.topic

    def __str__(self) -> str:
        lines = [self.summary]
        if self.url:
            lines.append(self.url)
        auth = (self.body.get("origin") or {}).get("auth") or {}
        if auth:
            lines.append(f"trust: {auth.get('verdict')} ({auth.get('reason')})")
        return "\n".join(lines)

    @property
    def url(self) -> str | None:
        return self.body.get("url")

    @property
    def packages(self) -> list[str]:
        return list(self.body.get("packages") or [])

    @property
    def usernames(self) -> list[str]:
        return debian_logins(*people_of(self.body))

    @property
    def agent_name(self) -> str | None:
        logins = debian_logins(self.body.get("agent"))
        return logins[0] if logins else None


def _class_name(topic: str) -> str:
    return "".join(part.capitalize() for part in topic.split("."))


def _message_class(topic: str, schema: dict[str, Any]) -> type[DebianBusMessage]:
    return type(
        _class_name(topic),
        (DebianBusMessage,),
        {"topic": topic, "body_schema": schema, "__doc__": schema.get("title")},
    )


TOPICS: list[str] = []
for _entry in sorted((files("debian_bus_messages") / "schemas").iterdir(), key=lambda e: e.name):
    if _entry.name.endswith(".json"):
        _topic = _entry.name.removesuffix(".json")
        TOPICS.append(_topic)
        globals()[_class_name(_topic)] = _message_class(_topic, json.loads(_entry.read_text()))

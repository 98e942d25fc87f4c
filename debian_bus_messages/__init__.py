"""The bridge's messages for fedora-messaging, installed with the bridge.

:mod:`debian_bus_messages.fedora` holds one message class per topic (entry-point group
``fedora.messages``, names ``debian_bus.<event topic>``), with the topic's JSON Schema as
``body_schema``, so ``fedora-messaging consume`` validates and renders what the AMQP sink
publishes. It needs fedora-messaging (``pip install 'debian-bus-bridge[fedora-messaging]'``).
fedmsg's processors are a package of their own: contrib/fedmsg-meta-debian-bus.
What a body holds is docs/events.md.
"""

from __future__ import annotations

from typing import Any


def debian_logins(*people: Any) -> list[str]:
    """Debian account names: the local part of each ``@debian.org`` address, once each."""
    found: list[str] = []
    for person in people:
        email = (person or {}).get("email") if isinstance(person, dict) else None
        if isinstance(email, str) and email.lower().endswith("@debian.org"):
            login = email.split("@", 1)[0].lower()
            if login and login not in found:
                found.append(login)
    return found


def people_of(body: dict[str, Any]) -> list[Any]:
    return [body.get(k) for k in ("agent", "changed_by", "maintainer")]

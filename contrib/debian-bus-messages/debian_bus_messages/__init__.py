"""The bridge's messages for fedora-messaging, a distribution of their own.

:mod:`debian_bus_messages.fedora` holds one message class per topic (entry-point group
``fedora.messages``, names ``debian_bus.<event topic>``), with the topic's JSON Schema as
``body_schema``, so ``fedora-messaging consume`` validates and renders what the bridge's AMQP
sink publishes, without the bridge installed. The schemas are the bridge's own files
(``schemas`` is a link to ``parsers/schemas`` in the source tree; a wheel holds copies), and
the distribution's major version is their ``version``. What a body holds is docs/events.md.
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

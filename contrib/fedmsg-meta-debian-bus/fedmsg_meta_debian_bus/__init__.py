"""fedmsg.meta processors: how fedmsg's tools describe debian-bus-bridge's messages.

A package of its own, beside the bridge, so a fedmsg installation gets the processors
without the bridge's dependencies (fedmsg loads processors through pkg_resources, which
insists on a distribution's requirements). The topic prefix comes from the tool's own
``topic_prefix_re`` (for the bridge's default naming, ``org\\.debian\\.(dev|stg|prod)``).
"""

from __future__ import annotations

from typing import Any

from fedmsg.meta.base import BaseProcessor


def debian_logins(*people: Any) -> list[str]:
    """Debian account names: the local part of each ``@debian.org`` address, once each."""
    found: list[str] = []
    for person in people:
        email = person.get("email") if isinstance(person, dict) else None
        if isinstance(email, str) and email.lower().endswith("@debian.org"):
            login = email.split("@", 1)[0].lower()
            if login and login not in found:
                found.append(login)
    return found


def people_of(body: dict[str, Any]) -> list[Any]:
    return [body.get(k) for k in ("agent", "changed_by", "maintainer")]


class _BridgeProcessor(BaseProcessor):
    __docs__ = "https://salsa.debian.org/debian-bus-bridge (docs/events.md)"

    def subtitle(self, msg: dict[str, Any], **config: Any) -> str:
        return msg["msg"].get("summary", "")

    def link(self, msg: dict[str, Any], **config: Any) -> str:
        return msg["msg"].get("url", "")

    def packages(self, msg: dict[str, Any], **config: Any) -> set[str]:
        return set(msg["msg"].get("packages") or [])

    def usernames(self, msg: dict[str, Any], **config: Any) -> set[str]:
        return set(debian_logins(*people_of(msg["msg"])))

    def agent(self, msg: dict[str, Any], **config: Any) -> str | None:
        logins = debian_logins(msg["msg"].get("agent"))
        return logins[0] if logins else None


class DebbugsProcessor(_BridgeProcessor):
    __name__ = "debbugs"
    __description__ = "Debian's bug tracking system"
    __link__ = "https://bugs.debian.org"
    __obj__ = "Bug Reports"
    __icon__ = "https://www.debian.org/logos/openlogo-nd-25.png"


class DakProcessor(_BridgeProcessor):
    __name__ = "dak"
    __description__ = "Debian's archive software"
    __link__ = "https://ftp-master.debian.org"
    __obj__ = "Package Uploads"
    __icon__ = "https://www.debian.org/logos/openlogo-nd-25.png"

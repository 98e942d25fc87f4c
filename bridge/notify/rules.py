"""A notification rule, read: ``/raw``'s filters as a journal search, and what the journal
cannot search for (the trust verdict, a maintainer's packages) tested on each event.

A rule matches exactly what ``bridge query`` and ``/raw`` with the same filters find, less
the events whose ``origin.auth.verdict`` is not in ``auth`` (when given), and, with
``maintainer``, only events about the packages that address maintains (see
:class:`MaintainedPackages`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bridge.config import Config, NotifyRule
from bridge.errors import ConfigError
from bridge.events import Envelope, debian_login
from bridge.journal import Criteria, Journal
from bridge.journal.query import FILTERS, BadRequest, Query, read_query

# The rule keys that are /raw arguments, each by the name /raw gives it.
FILTER_KEYS = tuple(name for name, _ in FILTERS)
UPLOAD_TOPIC = "dak.upload."
SCAN_PAGE = 500  # rows a rule reads from the journal at a time


class _Arguments:
    """A rule's filters as the multi-dict :func:`read_query` reads."""

    def __init__(self, values: Mapping[str, Sequence[str]]):
        self.values = values

    def get(self, name: str, default: str | None = None) -> str | None:
        found = self.values.get(name)
        return found[0] if found else default

    def getlist(self, name: str) -> list[str]:
        return list(self.values.get(name, ()))


@dataclass(frozen=True)
class Rule:
    """One configured rule, its filters checked as ``/raw`` checks them."""

    name: str
    settings: NotifyRule
    query: Query

    @property
    def criteria(self) -> Criteria:
        return self.query.criteria()

    @property
    def cursor_name(self) -> str:
        return f"notify.{self.name}"

    def arguments(self) -> dict[str, list[str]]:
        """The rule's filters as ``/raw`` arguments (``bridge query`` takes the same)."""
        return {
            key: list(getattr(self.settings, key))
            for key in FILTER_KEYS
            if getattr(self.settings, key)
        }

    def admits(self, envelope: Envelope) -> bool:
        """Whether the tests the journal cannot make pass (the trust verdict)."""
        return not self.settings.auth or verdict_of(envelope) in self.settings.auth


def read_rule(name: str, settings: NotifyRule) -> Rule:
    """*settings* as a rule; a filter ``/raw`` would refuse is a ConfigError naming it."""
    arguments = {key: getattr(settings, key) for key in FILTER_KEYS}
    try:
        query = read_query(_Arguments(arguments))
    except BadRequest as e:
        raise ConfigError(f"config key 'notify.rules.{name}': {e}") from None
    return Rule(name, settings, query)


def read_rules(config: Config) -> dict[str, Rule]:
    """Every configured rule, checked."""
    return {name: read_rule(name, settings) for name, settings in config.notify.rules.items()}


def rule_named(config: Config, name: str) -> Rule:
    rules = read_rules(config)
    if name not in rules:
        known = ", ".join(sorted(rules)) or "none is configured"
        raise ConfigError(f"no rule {name!r} in [notify.rules] ({known})")
    return rules[name]


def verdict_of(envelope: Envelope) -> str:
    """The trust verdict a body carries (``none`` for a body that has none)."""
    origin = envelope.msg.get("origin") if isinstance(envelope.msg, Mapping) else None
    auth = origin.get("auth") if isinstance(origin, Mapping) else None
    verdict = auth.get("verdict") if isinstance(auth, Mapping) else None
    return verdict if isinstance(verdict, str) else "none"


def _email(person: Any) -> str:
    return (person.get("email") or "").lower() if isinstance(person, Mapping) else ""


class MaintainedPackages:
    """The source packages whose uploads name one address as ``Maintainer``, read from the
    upload events of the journal as far as it has been read (a package taken over by
    someone else stays: the rule's owner asked about it once)."""

    def __init__(self, address: str):
        self.address = address.strip().lower()
        self.packages: dict[str, int] = {}  # package -> seq_id of the upload that showed it
        self.read_to = 0

    def learn(self, journal: Journal, upto: int) -> None:
        """Read the uploads journaled after what was read, up to *upto*."""
        if upto <= self.read_to:
            return
        search = Criteria(
            topics=(UPLOAD_TOPIC,), contains=(self.address,), after=self.read_to, upto=upto
        )
        offset = 0
        while True:
            page = journal.find(search, newest_first=False, limit=SCAN_PAGE, offset=offset)
            for envelope in page:
                if _email(envelope.msg.get("maintainer")) == self.address:
                    for package in envelope.packages:
                        self.packages.setdefault(package, envelope.seq_id)
            if len(page) < SCAN_PAGE:
                break
            offset += SCAN_PAGE
        self.read_to = upto


class Matcher:
    """A rule's matches in the journal, in ``seq_id`` order, a page at a time."""

    def __init__(self, rule: Rule):
        self.rule = rule
        self.maintained = (
            MaintainedPackages(rule.settings.maintainer) if rule.settings.maintainer else None
        )

    def criteria(self, journal: Journal, after: int, upto: int) -> Criteria | None:
        """The journal search for the matches in (*after*, *upto*]; None when nothing can
        match (a maintainer with no packages yet)."""
        criteria = replace(self.rule.criteria, after=after, upto=upto)
        if self.maintained is None:
            return criteria
        self.maintained.learn(journal, upto)
        packages = {*criteria.packages, *self.maintained.packages}
        if not packages:
            return None
        return replace(criteria, packages=tuple(sorted(packages)))

    def matches(
        self, journal: Journal, after: int, upto: int, limit: int
    ) -> tuple[list[Envelope], int]:
        """Up to *limit* matches in (*after*, *upto*], and how far the journal was read to
        find them (*upto* when every match is in the list)."""
        criteria = self.criteria(journal, after, upto)
        if criteria is None:
            return [], upto
        found: list[Envelope] = []
        position = after
        while True:
            page = journal.find(
                replace(criteria, after=position), newest_first=False, limit=SCAN_PAGE
            )
            for envelope in page:
                if self.rule.admits(envelope):
                    found.append(envelope)
                    if len(found) == limit:
                        return found, envelope.seq_id
            if len(page) < SCAN_PAGE:
                return found, upto
            position = page[-1].seq_id

    def why(self, envelope: Envelope) -> list[str]:
        """What about *envelope* each of the rule's filters matched, for people reading a
        preview."""
        rule, reasons = self.rule, []
        topic = envelope.topic
        prefixes = [*rule.settings.topic, *(f"{c}." for c in rule.settings.category)]
        hit = next((p for p in prefixes if topic.startswith(p) or f".{p}" in topic), None)
        if hit:
            reasons.append(f"topic {topic} (topic {hit})")
        for package in envelope.packages:
            if package in rule.settings.package:
                reasons.append(f"package {package}")
            elif self.maintained is not None and package in self.maintained.packages:
                reasons.append(
                    f"package {package}, maintained by {self.maintained.address}"
                    f" (upload seq_id {self.maintained.packages[package]})"
                )
        bugs = [b for b in envelope.bugs if str(b) in rule.settings.bug]
        if bugs:
            reasons.append("bug " + ", ".join(f"#{b}" for b in bugs))
        people = [*rule.settings.user, *rule.settings.agent]
        named = named_people(envelope.msg)
        met = [p for p in people if p.lower() in named]
        if met:
            reasons.append("names " + ", ".join(met))
        elif people:
            reasons.append("names " + ", ".join(people))
        if rule.settings.contains:
            reasons.append("contains " + ", ".join(repr(t) for t in rule.settings.contains))
        if rule.settings.auth:
            auth = envelope.msg.get("origin", {}).get("auth", {})
            reasons.append(f"trust {verdict_of(envelope)} ({auth.get('reason') or 'no reason'})")
        if not reasons:
            reasons.append("the rule has no filter: every event")
        return reasons


def named_people(body: Mapping[str, Any]) -> set[str]:
    """Names, addresses and Debian logins of those a body says acted, in lower case."""
    found: set[str] = set()
    for role in ("agent", "signer", "changed_by"):
        person = body.get(role)
        if not isinstance(person, Mapping):
            continue
        for value in (person.get("name"), person.get("email")):
            if isinstance(value, str) and value:
                found.add(value.lower())
        login = debian_login(_email(person))
        if login:
            found.add(login)
    return found

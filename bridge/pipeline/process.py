"""The pipeline every mail runs through, whatever brought it (SMTP, an mbox, ``bridge parse``).

Read the mail's headers, offer the mail to each parser that accepts it on them (its body
is parsed only then, once), and say what came of it: events, a deliberate skip, nobody
interested, or a parser failure. Expected outcomes are values. Nothing a single mail does
escapes :meth:`Pipeline.process`: a parser that raises, an event the journal could not
hold (:mod:`bridge.pipeline.bodies`) or a fault of the pipeline itself becomes that mail's failure,
with the reason, and the next mail goes on.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from email.message import Message
from enum import StrEnum
from typing import TYPE_CHECKING

from bridge.errors import ParseError, SkipMessage, UsageError
from bridge.events import Event
from bridge.mail import Mail, header, header_block_problem, header_field_count, header_names
from bridge.pipeline.bodies import EventRefused, normalised
from bridge.pipeline.plugins import PluginRefused
from bridge.pipeline.schemas import SchemaBreach, Schemas
from bridge.sdk import Parser, people, unverified

if TYPE_CHECKING:
    from bridge.config import TrustConfig
    from bridge.trust import Trust

log = logging.getLogger(__name__)


class Status(StrEnum):
    """What became of a mail."""

    PUBLISHED = "published"  # it gave events
    IGNORED = "ignored"  # no parser wanted it, or one said it is not news
    FAILED = "failed"  # a parser could not read it, or an event was refused
    HELD = "held"  # the trust policy holds it until an operator releases it
    REJECTED = "rejected"  # the trust policy rejected it


PUBLISHED, IGNORED, FAILED = Status.PUBLISHED, Status.IGNORED, Status.FAILED
HELD, REJECTED = Status.HELD, Status.REJECTED


@dataclass
class Outcome:
    """What came of one mail."""

    message_id: str | None
    events: list[Event] = field(default_factory=list)
    parsers: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    withheld: Status | None = None  # HELD or REJECTED: its events are not journaled

    @property
    def status(self) -> Status:
        if self.failures:
            return FAILED
        if self.withheld is not None:
            return self.withheld
        return PUBLISHED if self.events else IGNORED

    @property
    def journaled(self) -> list[Event]:
        """The events to journal: those of every parser that read the mail without failing
        (another parser's failure sends the mail to ``failed/`` too, but costs only its own
        events), none while the trust policy withholds the mail."""
        return self.events if self.withheld is None else []

    @property
    def reason(self) -> str:
        return "; ".join(self.failures or self.reasons)


class Pipeline:
    """Runs *parsers* over mails. Pure: the caller journals the events."""

    def __init__(self, parsers: Sequence[Parser], trust: Trust | None = None):
        self.parsers = list(parsers)
        self.trust = trust
        self._schemas: dict[str, Schemas] = {}  # each parser's own, compiled once

    def process(self, raw: bytes) -> Outcome:
        """What came of *raw*; never raises."""
        try:
            return self._process(raw)
        except Exception as e:  # a fault here must cost this mail, not the pipeline
            return Outcome(None, failures=[f"pipeline error: {describe(e)}"])

    def _process(self, raw: bytes) -> Outcome:
        try:
            mail = Mail(raw)
        except Exception as e:  # the stdlib parser is lenient; anything else is unreadable mail
            return Outcome(None, failures=[f"unreadable mail: {type(e).__name__}: {e}"])
        outcome = Outcome(header(mail.headers, "Message-ID") or None)
        problem = two_readings(raw, mail.headers)
        if problem:
            outcome.failures.append(f"unreadable mail: {problem}")
            return outcome
        # Parsers choose on headers: a mail none of them wants is never parsed further.
        wanting = [p for p in self.parsers if self._accepts(p, mail.headers, outcome)]
        if wanting:
            try:
                message = mail.message()
            except Exception as e:
                outcome.failures.append(f"unreadable mail: {type(e).__name__}: {e}")
                return outcome
            for parser in wanting:
                self._offer(parser, message, raw, outcome)
        elif not outcome.failures:
            names = ", ".join(p.name for p in self.parsers) or "none installed"
            outcome.reasons.append(f"no parser accepted the mail (parsers: {names})")
        outcome.events = _keyed(outcome.events, raw)
        return outcome

    def _accepts(self, parser: Parser, headers: Message, outcome: Outcome) -> bool:
        try:
            return bool(parser.accepts(headers))
        except Exception as e:
            outcome.failures.append(f"{parser.name} raised {describe(e)}")
            return False

    def _offer(self, parser: Parser, message: Message, raw: bytes, outcome: Outcome) -> None:
        outcome.parsers.append(parser.name)
        try:
            events = parser.parse(message)
            self._assess(parser, message, raw, events)
            taken = [self._take(parser, with_signer(event), outcome) for event in events]
            if all(event is not None for event in taken):
                outcome.events.extend(taken)  # a parser's events go out whole, or not at all
        except SkipMessage as e:
            outcome.reasons.append(f"{parser.name}: {e}")
        except ParseError as e:
            outcome.failures.append(f"{parser.name}: {e}")
        except Exception as e:
            outcome.failures.append(f"{parser.name} raised {describe(e)}")

    def _assess(self, parser: Parser, message: Message, raw: bytes, events: list[Event]) -> None:
        """Who vouches for the events: a fault of the check costs the verdict, not the mail."""
        if self.trust is None or not isinstance(events, list):
            return
        try:
            self.trust.assess(
                parser.name, message, raw, [e for e in events if isinstance(e, Event)]
            )
        except Exception as e:
            log.warning("trust check failed for a %s mail: %s", parser.name, describe(e))
            for event in events:
                origin = event.body.get("origin") if isinstance(event.body, dict) else None
                if isinstance(origin, dict):
                    origin["auth"] = unverified(f"the trust check failed: {describe(e)}")

    def _take(self, parser: Parser, event: Event, outcome: Outcome) -> Event | None:
        """*event* as the journal takes it, or None (the failure noted) when it is refused."""
        topic = getattr(event, "topic", "?")
        declared = tuple(getattr(parser, "topics", ()))
        if topic not in declared:
            outcome.failures.append(
                f"{parser.name}: event refused: topic {topic!r} is not one the parser declares"
                f" ({', '.join(declared) or 'none'})"
            )
            return None
        try:
            self._stamp(parser, event)
            event = normalised(event)
            self._fits(parser, event)
            return event
        except (EventRefused, SchemaBreach) as e:
            outcome.failures.append(f"{parser.name}: event {topic} refused: {e}")
            return None

    def _schemas_of(self, parser: Parser) -> Schemas:
        """The schemas *parser* ships, each read and compiled once."""
        if parser.name not in self._schemas:
            self._schemas[parser.name] = Schemas([parser])
        return self._schemas[parser.name]

    def _fits(self, parser: Parser, event: Event) -> None:
        """The body fits the schema the parser ships for its topic (:mod:`bridge.pipeline.schemas`):
        a body that breaks its own contract never reaches the journal."""
        # (a parser used outside the registry may come without its schema files)
        with contextlib.suppress(OSError):
            self._schemas_of(parser).check(event.topic, event.body)

    def _stamp(self, parser: Parser, event: Event) -> None:
        """Give the body the ``schema_version`` of its topic's schema (the one place a body's
        version comes from), so a consumer can tell which version it follows; a body that
        claims another version is refused."""
        try:
            version = self._schemas_of(parser).version(event.topic)
        except (OSError, ValueError):
            version = None  # a parser used outside the registry, without its schema files
        if version is None or not isinstance(event.body, dict):
            return
        claimed = event.body.setdefault("schema_version", version)
        if claimed != version:
            raise EventRefused(
                f"body says schema_version {claimed!r}, the topic's schema is version {version}"
            )


def with_signer(event: Event) -> Event:
    """*event* with the signer the trust check found (an upload's ``signer``) among the
    people who acted: the sponsor of a sponsored upload acted too."""
    body = event.body if isinstance(event, Event) else None
    signer = body.get("signer") if isinstance(body, dict) else None
    if not isinstance(signer, dict):
        return event
    return replace(event, people=tuple(dict.fromkeys([*event.people, *people(signer)])))


def apply_policy(outcome: Outcome, policy_for: Callable[[str], str]) -> Outcome:
    """*outcome*, withheld when one of its events is not ``pass`` and its topic family's
    policy is ``hold`` or ``drop`` (design §10); ``mark`` publishes it with its verdict.
    The events of a mail another parser failed on are judged the same way."""
    if not outcome.events or outcome.withheld is not None:
        return outcome
    for event in outcome.events:
        policy = policy_for(event.topic)
        auth = (event.body.get("origin") or {}).get("auth") or {}
        verdict = auth.get("verdict", "none")
        if policy == "mark" or verdict == "pass":
            continue
        withheld = HELD if policy == "hold" else REJECTED
        reason = (
            f"{event.topic}: trust verdict {verdict} ({auth.get('reason') or 'no reason given'});"
            f" policy {policy} for {event.topic.split('.', 1)[0]}"
        )
        return replace(outcome, withheld=withheld, reasons=[*outcome.reasons, reason])
    return outcome


def build_pipeline(parser_names: Sequence[str] | None, trust: TrustConfig | None) -> Pipeline:
    """The installed parsers (those named, if any: a named one that is missing or refused
    is a UsageError) with the configured trust check."""
    from bridge.pipeline.plugins import chosen, discover
    from bridge.trust import Trust

    registry = discover(only=parser_names)
    try:
        parsers = chosen(registry, parser_names) if parser_names else registry.parsers
    except PluginRefused as e:
        raise UsageError(str(e)) from e
    return Pipeline(parsers, Trust(trust) if trust else None)


def two_readings(raw: bytes, headers: Message) -> str | None:
    """Why the parsers' reading of *raw*'s header block (the stdlib's) is not the one trust
    verifies (RFC 5322's, as DKIM reads it), or None when they are one reading. A block RFC
    5322 cannot read at all is no problem here: no signature over it can verify."""
    problem = header_block_problem(raw)
    if problem:
        return problem
    if header_field_count(raw) == len(headers):
        return None  # no bare CR and as many fields: the lines are the same lines
    names = header_names(raw)
    ours = [name.lower() for name in headers]
    if names is not None and names != ours:
        at = next((i for i, (a, b) in enumerate(zip(names, ours, strict=False)) if a != b), None)
        at = min(len(names), len(ours)) if at is None else at
        return (
            f"the header block reads two ways from field {at + 1} on"
            f" ({len(names)} fields by RFC 5322, {len(ours)} by the mail parser)"
        )
    return None


def describe(error: BaseException) -> str:
    """An exception as one line: type, message, and where it was raised."""
    text = f"{type(error).__name__}: {error}"
    frames = traceback.extract_tb(error.__traceback__)
    if frames:
        where = frames[-1]
        text += f" (at {where.filename}:{where.lineno} in {where.name})"
    return text


def _keyed(events: list[Event], raw: bytes) -> list[Event]:
    """Give each event without a dedup key one derived from the raw mail's SHA-256."""
    if all(e.dedup_key for e in events):
        return events
    digest = hashlib.sha256(raw).hexdigest()
    return [
        e if e.dedup_key else replace(e, dedup_key=f"sha256:{digest}:{i}")
        for i, e in enumerate(events)
    ]


@dataclass
class Tally:
    """Running counts over many mails (replay summaries, serve counters)."""

    mails: int = 0
    events: int = 0
    duplicates: int = 0
    conflicts: int = 0  # events held because a stored one says otherwise (design §10)
    ignored: int = 0
    failed: int = 0
    withheld: int = 0  # held or rejected by the trust policy
    by_topic: Counter[str] = field(default_factory=Counter)

    def add(
        self,
        outcome: Outcome,
        new: int,
        duplicates: int,
        conflicts: int = 0,
        journaled: Sequence[str] | None = None,
    ) -> None:
        """Count one mail; *journaled*: the topics of the events the journal took (None:
        nothing is journaled, as in a dry run, where every event counts)."""
        self.mails += 1
        self.events += new
        self.duplicates += duplicates
        self.conflicts += conflicts
        if outcome.status == IGNORED:
            self.ignored += 1
        elif outcome.status == FAILED:
            self.failed += 1
        elif outcome.status in (HELD, REJECTED):
            self.withheld += 1
        self.by_topic.update(
            journaled if journaled is not None else (e.topic for e in outcome.events)
        )

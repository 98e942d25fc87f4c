"""What a notification says: one event, or a digest of several, as a mail, an IRC line or a
webhook body; and the idempotency id each carries.

Everything shown comes from mail a stranger may have written: control characters are
removed before a line reaches a header, an IRC command or a subject.
"""

from __future__ import annotations

import email.policy
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from bridge.events import Envelope

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")
IRC_LINE_BYTES = 400  # what a PRIVMSG may carry once the server adds its prefix (512 in all)
SUBJECT_CHARS = 200


def one_line(text: str, limit: int = 400) -> str:
    """*text* on one line, control characters as spaces, at most *limit* characters."""
    flat = _CONTROL.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def summary_of(envelope: Envelope) -> str:
    """The event's own summary; for a body that has none (another bus's), its topic and
    the start of its JSON."""
    summary = envelope.msg.get("summary") if hasattr(envelope.msg, "get") else None
    if isinstance(summary, str) and summary.strip():
        return one_line(summary)
    return one_line(f"{envelope.topic} {json.dumps(envelope.msg, sort_keys=True)}", 200)


def link_of(envelope: Envelope) -> str:
    url = envelope.msg.get("url") if hasattr(envelope.msg, "get") else None
    return one_line(url) if isinstance(url, str) and url.startswith("http") else ""


def when_of(envelope: Envelope) -> str:
    return datetime.fromtimestamp(envelope.timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def idempotency_id(rule: str, *msg_ids: str) -> str:
    """The id a receiver drops repeats by: the same for the same rule and events, whenever
    and however often they are sent (Standard Webhooks' ``msg_…`` form)."""
    digest = hashlib.sha256("\0".join((rule, *msg_ids)).encode("utf-8")).hexdigest()
    return f"msg_{digest[:32]}"


@dataclass(frozen=True)
class Notice:
    """What one delivery carries: one event, or a digest of several (with how many more
    matched than it lists, and why it was sent as one)."""

    rule: str
    events: tuple[Envelope, ...]
    kind: str = "event"  # "event", "digest" (a digest rule) or "held" (over the rate limit)
    more: int = 0  # matching events not listed (counted only)

    @property
    def id(self) -> str:
        return idempotency_id(self.rule, self.kind, *(e.msg_id for e in self.events))

    @property
    def count(self) -> int:
        return len(self.events) + self.more

    def title(self) -> str:
        if self.kind == "event":
            return summary_of(self.events[0])
        if self.kind == "held":
            return f"{self.count} more events matched rule {self.rule} (over its rate limit)"
        return f"{self.count} events matched rule {self.rule}"

    def lines(self) -> list[str]:
        """A line an event: when, topic, summary and link."""
        lines = []
        for envelope in self.events:
            link = link_of(envelope)
            lines.append(
                f"{when_of(envelope)}  {envelope.topic}\n  {summary_of(envelope)}"
                + (f"\n  {link}" if link else "")
            )
        if self.more:
            lines.append(f"… and {self.more} more (bridge query with the rule's filters)")
        return lines


def mail_of(
    notice: Notice, *, sender: str, recipient: str, domain: str, rule_url: str
) -> EmailMessage:
    """The notice as a mail: the headers lists and robots expect, one unsubscribe line."""
    # headers up to RFC 5322's 998 characters a line: the stdlib's folding at 78 breaks
    # a subject starting "[debian-bus]" right after "Subject:", which readers show as a
    # leading space
    message = EmailMessage(policy=email.policy.default.clone(max_line_length=998))
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = one_line(f"[debian-bus] {notice.title()}", SUBJECT_CHARS)
    message["Date"] = format_datetime(datetime.now(UTC))
    # the same notice sent again has the same Message-ID: a mail reader shows it once
    message["Message-ID"] = f"<{notice.id}@{domain}>"
    message["List-Id"] = f"debian-bus rule {notice.rule} <{notice.rule}.notify.{domain}>"
    message["Auto-Submitted"] = "auto-generated"
    message["Precedence"] = "bulk"
    message["X-Debian-Bus-Rule"] = notice.rule
    if notice.kind == "event":
        message["X-Debian-Bus-Topic"] = notice.events[0].topic
        message["X-Debian-Bus-Msg-Id"] = notice.events[0].msg_id
    body = "\n\n".join(notice.lines())
    body += (
        f"\n\n-- \nSent by rule {notice.rule} of the Debian bus bridge ({rule_url});"
        " to stop, ask its operator to remove [notify.rules." + notice.rule + "].\n"
    )
    message.set_content(body)
    return message


def irc_lines(notice: Notice) -> list[str]:
    """The notice as IRC lines, one an event (topic, summary, link), as the upload feed
    bots wrote them; a held notice says how many it holds."""
    if notice.kind != "event" and len(notice.events) > 5:
        first = [_irc_line(e) for e in notice.events[:3]]
        return [*first, one_line(f"… {notice.title()}", IRC_LINE_BYTES)]
    return [_irc_line(e) for e in notice.events] + (
        [one_line(f"… and {notice.more} more", IRC_LINE_BYTES)] if notice.more else []
    )


def _irc_line(envelope: Envelope) -> str:
    event_topic = envelope.topic.split(".", 3)[-1] if envelope.topic.count(".") >= 3 else ""
    link = link_of(envelope)
    line = f"{event_topic or envelope.topic}: {summary_of(envelope)}" + (f" {link}" if link else "")
    encoded = one_line(line, IRC_LINE_BYTES).encode("utf-8")[:IRC_LINE_BYTES]
    return encoded.decode("utf-8", "ignore")


def webhook_body(notice: Notice) -> bytes:
    """Standard Webhooks' payload: ``type``, ``timestamp`` and ``data`` (the envelopes)."""
    data: dict[str, Any] = {"rule": notice.rule, "kind": notice.kind}
    if notice.kind == "event":
        envelope = notice.events[0]
        data["event"] = json.loads(envelope.to_json())
        kind = envelope.topic
    else:
        data["events"] = [json.loads(e.to_json()) for e in notice.events]
        data["more"] = notice.more
        kind = f"debian-bus.{notice.kind}"
    payload = {
        "type": kind,
        "timestamp": datetime.fromtimestamp(newest(notice.events), UTC).isoformat(),
        "data": data,
    }
    return json.dumps(payload, ensure_ascii=False, sort_keys=True).encode("utf-8")


def newest(events: Sequence[Envelope]) -> int:
    return max((e.timestamp for e in events), default=0)

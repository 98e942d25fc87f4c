"""One rule following the journal: what it matched after its cursor goes to its
destination, one notice an event, a digest a period, or over the rate limit one notice
holding the rest; the cursor moves past an event only once the destination took it.

The rule's state lives in the journal beside the sinks' cursors, so that a restart (or a
SIGKILL) loses nothing and repeats at most the notice in flight, which carries the same
idempotency id again:

- ``notify.NAME``: the cursor (the last ``seq_id`` delivered or stepped over);
- ``notify.NAME.created``: when the rule first ran (a rule that starts at the end starts
  at the journal's end then, never again);
- ``notify.NAME.due``: when the pending digest is due (0: none pending);
- ``notify.NAME.failing_since`` / ``.disabled_at``: a destination failing, and given up on.

The rate limit's window is kept in memory: a restart opens a new one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bridge.config import NotifyConfig
from bridge.journal import Journal
from bridge.notify.destinations import Destination
from bridge.notify.render import Notice
from bridge.notify.rules import SCAN_PAGE, Matcher, Rule

log = logging.getLogger(__name__)

PERIODS = {"hourly": 3600, "daily": 86400}
# The rules of one process take turns to write their state: SQLite lets one writer in at a
# time and makes the others sleep and retry, which costs far more than waiting here.
_WRITING = threading.Lock()
BATCH = 200  # events a rule delivers one by one before it looks at the clock again


def period_end(now: float, period: int) -> int:
    """The end of the hour or UTC day *now* is in: when a digest begun now is due."""
    return (int(now) // period + 1) * period


@dataclass
class RuleState:
    """What :class:`RuleFollower` keeps in the journal, read at start."""

    cursor: int
    created: int
    due: int
    failing_since: int
    disabled_at: int


class RuleFollower:
    """Delivers one rule's matches; call :meth:`step` until told to stop."""

    def __init__(
        self,
        rule: Rule,
        journal: Journal,
        destination: Destination,
        settings: NotifyConfig,
        *,
        clock: Callable[[], float] = time.time,
    ):
        self.rule = rule
        self.journal = journal
        self.destination = destination
        self.settings = settings
        self.clock = clock
        self.matcher = Matcher(rule)
        self.state = self._read_state()
        self.failures = 0
        self.retry_at = 0.0
        self.window_start: float | None = None
        self.window_sent = 0
        self.holding = False

    # -- state kept in the journal ---------------------------------------------------------

    def _key(self, what: str = "") -> str:
        return self.rule.cursor_name + (f".{what}" if what else "")

    def _read_state(self) -> RuleState:
        journal = self.journal
        state = RuleState(
            cursor=journal.cursor(self._key()),
            created=journal.cursor(self._key("created")),
            due=journal.cursor(self._key("due")),
            failing_since=journal.cursor(self._key("failing_since")),
            disabled_at=journal.cursor(self._key("disabled_at")),
        )
        if not state.created:
            state.created = int(self.clock())
            if self.rule.settings.start == "end":
                state.cursor = journal.last_seq_id()
            with journal.batch() as batch:
                batch.set_cursor(self._key(), state.cursor)
                batch.set_cursor(self._key("created"), state.created)
            log.info(
                "rule %s: new, starting after seq_id %d (%s)",
                self.rule.name,
                state.cursor,
                self.rule.settings.start,
            )
        return state

    def _save(self, counters: dict[str, int] | None = None, **fields: int) -> None:
        with _WRITING, self.journal.batch() as batch:
            for name, value in fields.items():
                setattr(self.state, name, value)
                batch.set_cursor(self._key() if name == "cursor" else self._key(name), value)
            if counters:
                batch.add_counters({self._key(k): v for k, v in counters.items() if v})

    # -- the work --------------------------------------------------------------------------

    def step(self) -> bool:
        """Deliver what is due; whether anything was delivered."""
        now = self.clock()
        if self.state.disabled_at:
            # 'bridge notify enable' clears it in the journal: look, so that it acts at once
            if self.journal.cursor(self._key("disabled_at")):
                return False
            log.info("rule %s: enabled again", self.rule.name)
            self.state.disabled_at = self.state.failing_since = self.failures = 0
        if now < self.retry_at:
            return False
        upto = self.journal.last_seq_id()
        try:
            if self.rule.settings.digest != "none":
                done = self._digest_step(now, upto)
            else:
                done = self._event_step(now, upto)
        except OSError as e:  # the destination's failure: sockets, HTTP, SMTP, IRC
            self._failed(now, e)
            return False
        if done and self.state.failing_since:
            log.warning(
                "rule %s: %s takes notices again after %.0fs",
                self.rule.name,
                self.destination.label,
                now - self.state.failing_since,
            )
            self.failures = 0
            self._save(failing_since=0)
        if not done:
            self.destination.idle()
        return done

    def _event_step(self, now: float, upto: int) -> bool:
        settings = self.rule.settings
        if self.holding:
            if now < self.window_start + settings.rate_period:  # type: ignore[operator]
                return False
            # the period is over: what was held goes as one notice (if it fails, it is
            # tried again as one notice), and a new period begins with it
            sent = self._send_held(upto)
            self.holding, self.window_start, self.window_sent = False, self.clock(), int(sent)
            return sent
        events, read_to = self.matcher.matches(self.journal, self.state.cursor, upto, BATCH)
        if not events:
            if read_to > self.state.cursor:
                self._save(cursor=read_to)
            return False
        for index, envelope in enumerate(events):
            if settings.rate_limit:
                if self.window_start is None or now >= self.window_start + settings.rate_period:
                    self.window_start, self.window_sent = now, 0
                if self.window_sent >= settings.rate_limit:
                    self.holding = True
                    log.info(
                        "rule %s: %d notices in %.0fs, its limit; holding the rest until"
                        " the period ends",
                        self.rule.name,
                        self.window_sent,
                        settings.rate_period,
                    )
                    return index > 0
            self._deliver(Notice(self.rule.name, (envelope,)), envelope.seq_id)
            self.window_sent += 1
        if read_to > self.state.cursor:
            self._save(cursor=read_to)
        return True

    def _send_held(self, upto: int) -> bool:
        """What was held, as one notice; False when nothing is left to send."""
        listed, more, read_to = self._pending(upto)
        if not listed:
            return False
        if self.rule.settings.over_limit == "count":
            listed, more = [], more + len(listed)
        notice = Notice(self.rule.name, tuple(listed), "held", more)
        self._deliver(notice, read_to, held=notice.count)
        return True

    def _digest_step(self, now: float, upto: int) -> bool:
        if not self.state.due:
            # one match begins a digest; until then the cursor steps over what does not match
            first, read_to = self.matcher.matches(self.journal, self.state.cursor, upto, 1)
            if not first:
                if read_to > self.state.cursor:
                    self._save(cursor=read_to)
                return False
            due = period_end(now, PERIODS[self.rule.settings.digest])
            self._save(due=due)
            log.info(
                "rule %s: digest begun, due at %s",
                self.rule.name,
                time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(due)),
            )
        if now < self.state.due:
            return False  # what it holds is read once, when it is sent
        listed, more, read_to = self._pending(upto)
        if not listed:  # the rule's filters changed meanwhile: no digest, none pending
            self._save(cursor=max(read_to, self.state.cursor), due=0)
            return False
        self._deliver(Notice(self.rule.name, tuple(listed), "digest", more), read_to, due=0)
        return True

    def _pending(self, upto: int) -> tuple[list, int, int]:
        """What the rule matched after its cursor: the first ``digest_items`` events, how
        many more there are, and how far the journal was read."""
        limit = self.settings.digest_items
        listed, read_to = self.matcher.matches(self.journal, self.state.cursor, upto, limit)
        more = 0
        while read_to < upto:
            page, read_to = self.matcher.matches(self.journal, read_to, upto, SCAN_PAGE)
            more += len(page)
        return listed, more, read_to

    def _deliver(self, notice: Notice, cursor: int, *, held: int = 0, **state: int) -> None:
        started = time.monotonic()
        self.destination.deliver(notice)
        counters = {
            "delivered": 1,
            "events": notice.count,
            "digests": int(notice.kind == "digest"),
            "held": held,
        }
        self._save(counters, cursor=cursor, **state)
        first, last = notice.events[0].seq_id if notice.events else 0, cursor
        log.info(
            "rule %s: delivered %s (%d event%s, seq_id %d-%d) to %s in %.0f ms, id %s",
            self.rule.name,
            notice.kind,
            notice.count,
            "" if notice.count == 1 else "s",
            first,
            last,
            self.destination.label,
            (time.monotonic() - started) * 1000,
            notice.id,
        )

    def _failed(self, now: float, error: OSError) -> None:
        self.failures += 1
        pause = min(self.settings.retry_max, 2.0 ** min(self.failures, 30))
        self.retry_at = now + pause
        since = self.state.failing_since or int(now)
        if now - since >= self.settings.disable_after:
            self._save({"failed": 1, "disabled": 1}, disabled_at=int(now), failing_since=since)
            log.error(
                "rule %s: %s has failed for %.0fs (%s); the rule is disabled until"
                " 'bridge notify enable %s'",
                self.rule.name,
                self.destination.label,
                now - since,
                error,
                self.rule.name,
            )
            return
        self._save({"failed": 1}, failing_since=since)
        log.warning(
            "rule %s: %s did not take the notice (%s); retrying in %.0fs",
            self.rule.name,
            self.destination.label,
            error,
            pause,
        )

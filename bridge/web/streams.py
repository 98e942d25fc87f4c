"""Live streams (``/v1/stream``): one watcher of the journal for the whole process, and a
cap on how many streams are open.

A stream costs nothing while the journal is quiet: :class:`JournalWatch` is the only reader
that asks the journal for its newest ``seq_id``, and every open stream waits on it. When rows
arrive, each stream searches just those rows (after its position, up to the newest), and its
position then moves past all of them, matched or not: a filter that never matches costs one
search of the new rows, never a search of the whole journal again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from bridge.journal import Journal

STREAM_BATCH = 100
KEEP_ALIVE = 15.0  # seconds of quiet before a comment keeps proxies from cutting a stream
NOTIFIED_IDLE = 30.0  # with notifications: the longest a lost one could delay a stream


class JournalWatch:
    """The newest ``seq_id``, read while anyone waits for a new one: when the journal says
    it has new rows, where its engine can (PostgreSQL's notifications, which the sinks wake
    on too), else every *poll* seconds."""

    def __init__(self, run: Callable[[Callable[[Journal], Any]], Awaitable[Any]], poll: float):
        self._run = run
        self._poll = poll
        self._newest: int | None = None
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._waiting = 0
        self._notified: bool | None = None  # None until asked; False: the engine cannot tell
        self._nudge = asyncio.Event()  # set when the journal says rows were committed

    async def newest(self) -> int:
        """The newest ``seq_id`` now, read from the journal."""
        newest = await self._run(lambda j: j.last_seq_id())
        if self._newest is None or newest > self._newest:
            self._newest = newest
        return newest

    async def beyond(self, seq_id: int, timeout: float) -> int:
        """The newest ``seq_id`` once it is past *seq_id*, or after *timeout* seconds."""
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._watch())
        self._waiting += 1
        try:
            async with self._changed:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: (self._newest or 0) > seq_id), timeout
                )
        except TimeoutError:
            pass
        finally:
            self._waiting -= 1
        return self._newest or 0

    async def _watch(self) -> None:
        await self._subscribe()
        while True:
            try:
                newest = await self._run(lambda j: j.last_seq_id())
            except Exception:  # the journal is away: streams wait; /healthz says why
                newest = self._newest
            if newest is not None and newest != self._newest:
                self._newest = newest
                async with self._changed:
                    self._changed.notify_all()
            await self._pause()
            if not self._waiting:
                return  # nobody is watching: stop asking the journal

    async def _subscribe(self) -> None:
        """Once per process: ask the journal to say when rows are committed."""
        if self._notified is not None:
            return
        loop = asyncio.get_running_loop()
        nudge = self._nudge

        def nudged() -> None:  # on the journal's listening thread
            loop.call_soon_threadsafe(nudge.set)

        try:
            self._notified = bool(await self._run(lambda j: j.watch(nudged)))
        except Exception:  # the journal is away: poll now, ask again next time
            self._notified = None

    async def _pause(self) -> None:
        """Until the journal says it has new rows (NOTIFIED_IDLE at most, in case a
        notification was lost in a reconnect), or the poll interval without notifications."""
        if not self._notified:
            await asyncio.sleep(self._poll)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._nudge.wait(), NOTIFIED_IDLE)
        self._nudge.clear()


class TooManyStreams(Exception):
    """Over :attr:`StreamSlots.total` or :attr:`StreamSlots.per_client`."""


class StreamSlots:
    """The streams open now, in all and by client address."""

    def __init__(self, total: int, per_client: int):
        self.total = total
        self.per_client = per_client
        self._open: Counter[str] = Counter()

    @property
    def open(self) -> int:
        return sum(self._open.values())

    def take(self, client: str) -> None:
        if self.open >= self.total:
            raise TooManyStreams(f"{self.total} live streams are open, the most [web] allows")
        if self._open[client] >= self.per_client:
            raise TooManyStreams(
                f"{self.per_client} live streams are open from {client}, the most [web] allows"
                " one client"
            )
        self._open[client] += 1

    def give_back(self, client: str) -> None:
        self._open[client] -= 1
        if self._open[client] <= 0:
            del self._open[client]


async def events(
    search: Callable[[int, int], Awaitable[list[Any]]],
    watch: JournalWatch,
    after: int,
    disconnected: Callable[[], Awaitable[bool]],
    on_close: Callable[[], None],
    render: Callable[[Any], str] | None = None,
) -> AsyncIterator[str]:
    """The stream: each matching row as it is journaled, ``id`` its seq_id, its data the
    envelope (or what *render* makes of the row); a comment now and then so proxies keep
    the connection open. *search(after, upto)* gives the matching rows in that range,
    oldest first, at most :data:`STREAM_BATCH`."""
    try:
        yield "retry: 2000\n\n"
        while True:
            newest = await watch.beyond(after, KEEP_ALIVE)
            if newest <= after:
                if await disconnected():
                    return
                yield ": keep-alive\n\n"
                continue
            rows = await search(after, newest)
            for row in rows:
                data = row.envelope if render is None else " ".join(render(row).splitlines())
                yield f"id: {row.seq_id}\nevent: message\ndata: {data}\n\n"
            # past every row looked at, matched or not, unless the batch was cut short
            after = rows[-1].seq_id if len(rows) == STREAM_BATCH else newest
            if await disconnected():
                return
    finally:
        on_close()

"""A client for bus consumers: live messages with gap recovery from the replay endpoint.

    from bridge.client import tail
    for envelope in tail(["tcp://127.0.0.1:9940"], "org.debian.dev.debbugs",
                         replay="tcp://127.0.0.1:9941", since=1200):
        print(envelope.seq_id, envelope.topic, envelope.msg["summary"])

ZeroMQ PUB drops messages silently when a subscriber is slow or away. :func:`tail` tracks
the last ``seq_id`` it yielded; when a later one arrives it first fetches the missing range
from the replay endpoint, so every message is yielded once, in order. With *since* it starts
by paging through history, then goes live without a gap or a duplicate at the seam.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass

import zmq

from bridge.discovery import Discovery, DiscoveryError
from bridge.errors import ReplayError
from bridge.events import Envelope

log = logging.getLogger(__name__)

REPLAY_TIMEOUT = 10.0
JOIN_DELAY = 0.3


@dataclass(frozen=True)
class Filter:
    """Which envelopes a consumer wants: a topic prefix, a source package, a bug number."""

    topic: str = ""
    package: str | None = None
    bug: int | None = None

    def matches(self, envelope: Envelope) -> bool:
        """By the envelope's index fields, whatever the body calls things."""
        if not envelope.topic.startswith(self.topic):
            return False
        if self.package is not None and self.package not in envelope.packages:
            return False
        return self.bug is None or self.bug in envelope.bugs


def subscribe(
    endpoints: Sequence[str],
    topic: str = "",
    *,
    context: zmq.Context | None = None,
    rcvhwm: int = 100_000,
) -> zmq.Socket:
    """A SUB socket connected to every endpoint, filtering on the *topic* prefix."""
    context = context or zmq.Context.instance()
    sock = context.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, rcvhwm)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt_string(zmq.SUBSCRIBE, topic)
    for endpoint in endpoints:
        sock.connect(endpoint)
    return sock


def decode(frames: list[bytes]) -> Envelope | None:
    """The envelope in a two-frame message, or None when the frames are not one."""
    if len(frames) != 2:
        log.warning("ignoring a message of %d frames", len(frames))
        return None
    try:
        return Envelope.from_json(frames[1])
    except (ValueError, KeyError, TypeError) as e:
        log.warning("ignoring an undecodable message on %r: %s", frames[0][:80], e)
        return None


class Replayer:
    """A REQ client of the replay endpoint."""

    def __init__(
        self, endpoint: str, *, context: zmq.Context | None = None, timeout: float = REPLAY_TIMEOUT
    ):
        self.endpoint = endpoint
        self.timeout = timeout
        self._context = context or zmq.Context.instance()
        self._socket: zmq.Socket | None = None

    def query(self, request: dict) -> list[Envelope]:
        """The envelopes answering *request*; [] when none match. Raises ReplayError."""
        sock = self._connect()
        sock.send(json.dumps(request).encode())
        if not sock.poll(int(self.timeout * 1000)):
            self.close()  # a REQ socket without its reply cannot be used again
            raise ReplayError(f"replay endpoint {self.endpoint} did not answer")
        frames = sock.recv_multipart()
        if len(frames) == 1 and frames[0].startswith(b"error: "):
            text = frames[0].decode(errors="replace")
            if "no message matches" in text:
                return []
            raise ReplayError(text)
        return [Envelope.from_json(frame) for frame in frames]

    def pages(self, first: dict) -> Iterator[Envelope]:
        """Every envelope from a paging query on, following ``seq_id_after``."""
        request = first
        while True:
            page = self.query(request)
            if not page:
                return
            yield from page
            request = {"seq_id_after": page[-1].seq_id}

    def _connect(self) -> zmq.Socket:
        if self._socket is None:
            self._socket = self._context.socket(zmq.REQ)
            self._socket.setsockopt(zmq.LINGER, 0)
            self._socket.connect(self.endpoint)
        return self._socket

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def tail(
    endpoints: Sequence[str] = (),
    topic: str = "",
    *,
    replay: str | None = None,
    since: int | float | None = None,
    since_time: bool = False,
    filter: Filter | None = None,
    timeout: float | None = None,
    context: zmq.Context | None = None,
    rcvhwm: int = 100_000,
    srv: str | None = None,
    discovery: Discovery | None = None,
    replay_from_srv: bool = True,
) -> Iterator[Envelope]:
    """Yield envelopes, live, each once and in ``seq_id`` order when *replay* is given.

    *since* is a seq_id to start after (or, with *since_time*, epoch seconds to start at).
    Iteration ends after *timeout* idle seconds (None: never). With *srv* (a domain), the
    endpoints are its ``_fedmsg._tcp`` SRV records (and the replay endpoint its
    ``_fedmsg-replay._tcp`` one, unless *replay* is given or *replay_from_srv* is false),
    asked again whenever the connection is lost: a bus that moved is followed.
    """
    wanted = filter or Filter(topic=topic)
    follow = None
    if srv:
        from_srv = replay is None and replay_from_srv
        follow = Following(srv, discovery or Discovery(), from_srv)
        endpoints = follow.discovery.endpoints(srv)
        if from_srv:
            replay = follow.discovery.replay(srv)
    if not endpoints:
        raise ValueError("tail needs endpoints or an SRV domain")
    # With gap recovery every seq_id must be seen to tell a drop from another topic.
    sock = subscribe(endpoints, "" if replay else wanted.topic, context=context, rcvhwm=rcvhwm)
    replayer = Replayer(replay, context=context) if replay else None
    if follow is not None:
        follow.watch(sock, endpoints, replayer)
    last: int | None = None
    try:
        if replayer is not None and since is not None:
            time.sleep(JOIN_DELAY)  # join the bus first, so nothing falls between history and live
            first = {"after_time": since} if since_time else {"seq_id_after": int(since)}
            for envelope in replayer.pages(first):
                last = envelope.seq_id
                if wanted.matches(envelope):
                    yield envelope
        for envelope in _live(sock, timeout, follow):
            if envelope is None:  # joined a publisher again: what it sent meanwhile is lost
                if replayer is not None and last is not None:
                    time.sleep(JOIN_DELAY)  # subscribed first, so nothing falls in between
                    last = yield from _fill(replayer, last, None, wanted)
                continue
            if last is not None and envelope.seq_id <= last:
                continue  # already yielded (from history or a gap fill)
            if replayer is not None and last is not None and envelope.seq_id > last + 1:
                yield from _fill(replayer, last, envelope.seq_id, wanted)
            last = envelope.seq_id
            if wanted.matches(envelope):
                yield envelope
    finally:
        if follow is not None:
            follow.close()
        sock.close()
        if replayer is not None:
            replayer.close()


class Following:
    """A subscription that follows its SRV records: when ZeroMQ reports the connection
    lost (or failing again), the records are asked again, at most once a second, and the
    socket (and the replay client) moved to the endpoints they now name. Each connection
    made is noted (*rejoined*): a publisher's messages sent before it are not received, and
    with no later message to show the gap, tail asks the replay endpoint for them."""

    EVENTS = zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_CONNECTED

    def __init__(self, domain: str, discovery: Discovery, follow_replay: bool):
        self.domain = domain
        self.discovery = discovery
        self.follow_replay = follow_replay
        self.sock: zmq.Socket | None = None
        self.monitor: zmq.Socket | None = None
        self.connected: list[str] = []
        self.replayer: Replayer | None = None
        self.asked = 0.0
        self.rejoined = False

    def watch(self, sock: zmq.Socket, endpoints: Sequence[str], replayer: Replayer | None) -> None:
        self.sock, self.connected, self.replayer = sock, list(endpoints), replayer
        self.monitor = sock.get_monitor_socket(self.EVENTS)

    def event(self) -> None:
        """A monitor event arrived: read it, and look again if it is time to."""
        from zmq.utils.monitor import recv_monitor_message

        assert self.monitor is not None and self.sock is not None
        if recv_monitor_message(self.monitor)["event"] == zmq.EVENT_CONNECTED:
            self.rejoined = True
            return
        if time.monotonic() - self.asked < 1.0:
            return
        self.asked = time.monotonic()
        try:
            found = self.discovery.endpoints(self.domain, fresh=True)
        except DiscoveryError as e:
            log.warning("%s", e)
            return
        if found != self.connected:
            for endpoint in set(self.connected) - set(found):
                self.sock.disconnect(endpoint)
            for endpoint in found:
                if endpoint not in self.connected:
                    self.sock.connect(endpoint)
            log.info("%s now announces %s; following", self.domain, ", ".join(found))
            self.connected = found
        if self.follow_replay and self.replayer is not None:
            replay = self.discovery.replay(self.domain, fresh=True)
            if replay and replay != self.replayer.endpoint:
                self.replayer.close()
                self.replayer.endpoint = replay

    def close(self) -> None:
        if self.sock is not None and self.monitor is not None:
            self.sock.disable_monitor()
            self.monitor.close()


def _live(
    sock: zmq.Socket, timeout: float | None, follow: Following | None = None
) -> Iterator[Envelope | None]:
    """The envelopes received, and None each time *follow* saw a connection made."""
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    if follow is not None and follow.monitor is not None:
        poller.register(follow.monitor, zmq.POLLIN)
    idle_since = time.monotonic()
    while True:
        wait = None
        if timeout is not None:
            wait = max(0, int((idle_since + timeout - time.monotonic()) * 1000))
        ready = dict(poller.poll(wait))
        if follow is not None and follow.monitor in ready:
            follow.event()
            if follow.rejoined:
                follow.rejoined = False
                yield None
        if sock not in ready:
            if timeout is not None and time.monotonic() >= idle_since + timeout:
                return
            continue
        idle_since = time.monotonic()
        envelope = decode(sock.recv_multipart())
        if envelope is not None:
            yield envelope


def _fill(
    replayer: Replayer, last: int, upto: int | None, wanted: Filter
) -> Generator[Envelope, None, int]:
    """The envelopes after *last* and before *upto* (None: all there are), from the replay
    endpoint; returns the last seq_id recovered (*last* if none)."""
    recovered, newest = 0, last
    missed = f"after seq_id {last}" if upto is None else f"between seq_id {last} and {upto}"
    try:
        for envelope in replayer.pages({"seq_id_after": last}):
            if upto is not None and envelope.seq_id >= upto:
                break
            recovered, newest = recovered + 1, envelope.seq_id
            if wanted.matches(envelope):
                yield envelope
        log.info("recovered %d message(s) %s", recovered, missed)
    except ReplayError as e:
        log.warning("could not recover the messages %s: %s", missed, e)
    return newest


def envelope_json(envelope: Envelope) -> str:
    return json.dumps(json.loads(envelope.to_json()), ensure_ascii=False, sort_keys=True)

"""The AMQP sink against the real RabbitMQ: fedora-messaging's wire format, a broker outage
behind a proxy the test cuts, and a bridge killed mid-stream."""

from __future__ import annotations

import re
import signal
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.helpers import (
    Server,
    Subscriber,
    bridge,
    config_file,
    journal_events,
    send,
    wait_until,
)
from tests.mails import bug_report
from tests.tcpproxy import Proxy

BROKER = ("127.0.0.1", 5672)
URL = "amqp://guest:guest@127.0.0.1:{port}/%2F"


def pika_or_skip():
    from tests.helpers import require

    try:
        import pika

        pika.BlockingConnection(pika.URLParameters(URL.format(port=BROKER[1]))).close()
    except Exception as e:  # not installed, not running
        require(False, f"RabbitMQ is not reachable at {BROKER[0]}:{BROKER[1]}: {e}")
    return pika


class Queue:
    """A durable queue of the test's own, bound to the bridge's topics before it starts."""

    def __init__(self, binding: str = "org.debian.dev.#"):
        pika = pika_or_skip()
        self.name = f"bridge-test-{uuid.uuid4()}"
        self.connection = pika.BlockingConnection(pika.URLParameters(URL.format(port=BROKER[1])))
        self.channel = self.connection.channel()
        self.channel.queue_declare(self.name, durable=True)
        self.channel.queue_bind(self.name, "amq.topic", routing_key=binding)
        self.received: list[tuple[object, object, bytes]] = []

    def drain(self, until, timeout: float) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not until(self.received):
            method, properties, body = self.channel.basic_get(self.name, auto_ack=True)
            if method is None:
                self.connection.process_data_events(time_limit=0.1)
                continue
            self.received.append((method, properties, body))
        return self.received

    def seq_ids(self) -> list[int]:
        return [p.headers["debian_bus_seq_id"] for _, p, _ in self.received]

    def close(self) -> None:
        self.channel.queue_delete(self.name)
        self.connection.close()


def first_occurrences(seq_ids: list[int]) -> list[int]:
    seen: set[int] = set()
    return [s for s in seq_ids if not (s in seen or seen.add(s))]


def serve_with_amqp(tmp_path: Path, port: int) -> Server:
    top = f'[amqp]\nurl = "{URL.format(port=port)}"\n'
    server = Server(tmp_path / "state", config=config_file(tmp_path, top=top)).start()
    server.wait_for_smtp()
    return server


def test_events_reach_the_broker_in_fedora_messagings_format(tmp_path):
    queue = Queue()
    server = serve_with_amqp(tmp_path, BROKER[1])
    sub = Subscriber(server.publish)
    try:
        sub.warm_up(server.state_dir)
        for bug in (1070001, 1070002, 1070003):
            assert send(server, bug_report(bug)) == {}
        zmq_envelopes = sub.collect(lambda got: len(got) >= 3, timeout=30)
        queue.drain(lambda got: len([m for m in got if "probe" not in m[0].routing_key]) >= 3, 30)
    finally:
        sub.close()
        server.stop()
        queue.close()
    import json

    reports = [m for m in queue.received if m[0].routing_key.endswith("debbugs.bug.report")]
    assert len(reports) == 3
    for (method, properties, body), envelope in zip(reports, zmq_envelopes, strict=True):
        assert method.exchange == "amq.topic" and method.routing_key == envelope.topic
        assert json.loads(body) == envelope.msg
        assert properties.content_type == "application/json"
        assert properties.content_encoding == "utf-8" and properties.delivery_mode == 2
        assert properties.message_id == envelope.msg_id.split("-", 1)[1]
        assert str(uuid.UUID(properties.message_id)) == properties.message_id
        headers = properties.headers
        assert headers["fedora_messaging_schema"] == "debian_bus.debbugs.bug.report"
        assert headers["fedora_messaging_severity"] == 20
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", headers["sent-at"])
        assert headers["debian_bus_seq_id"] == envelope.seq_id
        assert headers["debian_bus_msg_id"] == envelope.msg_id


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_broker_outage_stalls_only_the_amqp_sink_and_it_catches_up_in_order(tmp_path):
    queue = Queue()
    proxy = Proxy(BROKER)
    server = serve_with_amqp(tmp_path, proxy.port)
    sub = Subscriber(server.publish)
    bugs = list(range(1080001, 1080501))
    try:
        sub.warm_up(server.state_dir)
        queue.drain(lambda got: len(got) >= 1, 30)  # the sink is connected and sending
        proxy.cut()
        cut_at = time.monotonic()
        for bug in bugs:
            assert send(server, bug_report(bug)) == {}
        received = sub.collect(lambda got: sum(e.topic.endswith("report") for e in got) >= 500, 60)
        # ZeroMQ subscribers saw every event while the broker was away
        assert [e.msg["bug"] for e in received if e.topic.endswith("report")] == bugs
        status = bridge("--state-dir", str(server.state_dir), "--config", str(server.config),
                        "status")  # fmt: skip
        lag = int(re.search(rb"amqp_lag: (\d+)", status.stdout).group(1))
        assert lag >= 500
        time.sleep(max(0.0, 10 - (time.monotonic() - cut_at)))
        proxy.restore()
        queue.drain(
            lambda got: sum(m[0].routing_key.endswith("report") for m in got) >= 500, timeout=120
        )
    finally:
        sub.close()
        server.stop()
        proxy.close()
    reports = [m for m in queue.received if m[0].routing_key.endswith("report")]
    import json

    in_order = first_occurrences([p.headers["debian_bus_seq_id"] for _, p, _ in reports])
    assert in_order == sorted(in_order) and len(in_order) == 500
    bugs_by_seq = {p.headers["debian_bus_seq_id"]: json.loads(b)["bug"] for _, p, b in reports}
    assert [bugs_by_seq[s] for s in in_order] == bugs
    log = server.log_text()
    assert log.count("AMQP sink cannot send") == 1 and "AMQP broker back after" in log
    queue.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_bridge_killed_mid_stream_sends_every_row_at_least_once_in_order(tmp_path):
    queue = Queue()
    server = serve_with_amqp(tmp_path, BROKER[1])
    state = server.state_dir
    try:
        for bug in range(1090001, 1090301):
            assert send(server, bug_report(bug)) == {}
        queue.drain(lambda got: len(got) >= 50, 60)
        server.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        server.proc.wait(10)  # type: ignore[union-attr]
        server = Server(state, config=server.config).start()
        server.wait_for_smtp()
        wait_until(lambda: len(journal_events(state)) == 300, 60, "every mail journaled")
        last = max(e.seq_id for e in journal_events(state))
        queue.drain(lambda got: last in {p.headers["debian_bus_seq_id"] for _, p, _ in got}, 120)
    finally:
        server.stop()
    seq_ids = queue.seq_ids()
    repeats = len(seq_ids) - len(set(seq_ids))
    in_order = first_occurrences(seq_ids)
    assert in_order == list(range(1, last + 1)), "every row, in order"
    print(f"\n{len(seq_ids)} messages for {last} rows ({repeats} re-sent after the kill)")
    queue.close()


def test_bridge_tail_reads_a_durable_queue_on_the_broker(tmp_path):
    pika = pika_or_skip()
    queue = f"bridge-tail-{uuid.uuid4()}"
    url = URL.format(port=BROKER[1])
    server = serve_with_amqp(tmp_path, BROKER[1])
    try:
        # the first run creates and binds the queue; it keeps what arrives while nobody reads
        first = bridge("tail", "--amqp", url, "--queue", queue, "--timeout", "1")
        assert first.returncode == 0, first.stderr
        for bug in (1110001, 1110002):
            assert send(server, bug_report(bug)) == {}
        wait_until(lambda: len(journal_events(server.state_dir)) >= 2, 30, "two events")
        time.sleep(1)
        later = bridge(
            "tail", "--amqp", url, "--queue", queue, "--timeout", "3", "--bug", "1110002"
        )
    finally:
        server.stop()
        connection = pika.BlockingConnection(pika.URLParameters(url))
        connection.channel().queue_delete(queue)
        connection.close()
    assert later.returncode == 0, later.stderr
    (line,) = later.stdout.decode().splitlines()
    seq_id, when, topic, verdict, summary = line.split(" ", 4)
    (event,) = [e for e in journal_events(server.state_dir) if e.bugs == [1110002]]
    assert (int(seq_id), topic) == (event.seq_id, "org.debian.dev.debbugs.bug.report")
    assert when == datetime.fromtimestamp(event.timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert verdict == f"[{event.msg['origin']['auth']['verdict']}]"
    assert summary == event.msg["summary"] and "#1110002" in summary
    assert later.stderr.decode().startswith("bridge tail: 127.0.0.1:")
    bad = bridge("tail", "--amqp", "http://example.org")
    assert bad.returncode == 2 and bad.stderr.count(b"\n") == 1


def test_the_cursor_moves_only_past_rows_the_broker_confirmed_when_it_refuses_one(tmp_path):
    """A queue that holds one message and refuses more (x-overflow reject-publish) makes the
    broker nack the second row of a batch: the sink stops there, its cursor past the first
    row only, and sends the rest again once the queue has room."""
    from bridge.events import Event, Naming
    from bridge.journal.sqlite import SqliteJournal
    from bridge.sinks.amqp import AmqpSink, connection_parameters
    from bridge.sinks.confirms import BrokerError

    pika = pika_or_skip()
    naming = Naming(environment=f"nack{uuid.uuid4().hex[:8]}")
    journal = SqliteJournal(tmp_path / "journal.sqlite3", naming)
    journal.append([Event("a.b", {"summary": f"fact {n}"}, dedup_key=str(n)) for n in range(3)],
                   "smtp")  # fmt: skip
    connection = pika.BlockingConnection(pika.URLParameters(URL.format(port=BROKER[1])))
    channel = connection.channel()
    queue = f"bridge-test-full-{uuid.uuid4()}"
    channel.queue_declare(queue, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    channel.queue_bind(queue, "amq.topic", routing_key=f"org.debian.{naming.environment}.#")
    sink = AmqpSink(journal, connection_parameters(URL.format(port=BROKER[1])))
    try:
        sink.connect()
        with pytest.raises(BrokerError, match="refused message 2 of 3"):
            sink.publish_pending()
        assert sink.cursor == 1  # the first row, confirmed; not the refused second
        assert journal.cursor("amqp") == 0  # recorded durably only past a whole batch
        assert channel.basic_get(queue, auto_ack=True)[2] is not None  # room again
        sink.disconnect()
        sink.connect()
        with pytest.raises(BrokerError, match="refused message 2 of 2"):
            sink.publish_pending()  # the second row again; the queue takes it, not the third
        assert sink.cursor == 2
        method, properties, _ = channel.basic_get(queue, auto_ack=True)
        assert properties.headers["debian_bus_seq_id"] == 2
    finally:
        sink.disconnect()
        channel.queue_delete(queue)
        connection.close()
        journal.close()


def test_a_batch_counts_confirmed_messages_from_its_start_whatever_order_acks_come_in():
    from bridge.sinks.confirms import _Batch

    batch = _Batch(first=11, size=5, confirmed_upto=10)  # tags 11..15
    batch.confirm(13, multiple=False)
    batch.confirm(12, multiple=False)
    assert (batch.confirmed, batch.done) == (0, False)  # 11 is still out
    batch.confirm(11, multiple=False)
    assert batch.confirmed == 3  # 11, 12 and 13, in a row
    batch.confirm(15, multiple=True)  # everything up to 15
    assert (batch.confirmed, batch.done) == (5, True)

    refused = _Batch(first=1, size=4, confirmed_upto=0)
    refused.confirm(1, multiple=False)
    refused.confirm(3, multiple=False)
    refused.refuse(2, multiple=False)
    assert (refused.confirmed, refused.done) == (1, True)
    everything = _Batch(first=1, size=3, confirmed_upto=0)
    everything.refuse(3, multiple=True)  # a multiple nack: none of the unconfirmed is taken
    assert everything.confirmed == 0

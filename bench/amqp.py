"""AMQP sink benchmark: the sink's rate against pika publishing the same envelopes in a
loop with publisher confirms, one run.

    python bench/amqp.py [--events 5000] [--url amqp://guest:guest@127.0.0.1:5672/%2F]

Journals N events (bug reports of the fixtures' shape) into a fresh SQLite journal, then
times (1) a bare loop: pika's BlockingConnection with confirm_delivery, basic_publish of each
row's body with the same properties, and (2) the bridge's AmqpSink.publish_pending over the
same journal (reading rows, building the message, confirmed publish, cursor updates). Both
publish to amq.topic under routing keys no queue is bound to (the journal's topics start
``bench.nobody``), so the broker drops them after confirming. Prints events/s and the
sink's ratio to the loop.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pika  # noqa: E402

from bridge.events import Envelope, Event, Naming  # noqa: E402
from bridge.journal import SqliteJournal  # noqa: E402
from bridge.pipeline import Pipeline  # noqa: E402
from bridge.sinks.amqp import AmqpSink, builtin_topics, connection_parameters, message_of  # noqa: E402
from parsers.debbugs import DebbugsParser  # noqa: E402

REPORT = (ROOT / "fixtures" / "debbugs" / "report.eml").read_bytes()


def fill(journal: SqliteJournal, count: int) -> None:
    (template,) = Pipeline([DebbugsParser()]).process(REPORT).events
    events = [
        Event(
            template.topic, dict(template.body, bug=n), dedup_key=f"bench-{n}", packages=("hello",)
        )
        for n in range(1, count + 1)
    ]
    for start in range(0, count, 1000):
        journal.append(events[start : start + 1000], "bench")


def bare_loop(journal: SqliteJournal, url: str, known: frozenset[str]) -> float:
    rows = journal.rows_after(0, limit=10**9)
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    messages = []
    for row in rows:
        envelope = Envelope.from_json(row.envelope)
        messages.append(message_of(envelope, "debbugs.bug.report", known))
    started = time.perf_counter()
    for message in messages:
        channel.basic_publish(
            "amq.topic",
            "bench.nobody.listens",
            message.body,
            pika.BasicProperties(**message.properties),
        )
    elapsed = time.perf_counter() - started
    connection.close()
    return len(messages) / elapsed


def sink(journal: SqliteJournal, url: str, known: frozenset[str]) -> float:
    amqp = AmqpSink(journal, connection_parameters(url), known_topics=known)
    amqp.connect()
    started = time.perf_counter()
    sent = amqp.publish_pending()
    elapsed = time.perf_counter() - started
    amqp.disconnect()
    return sent / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    args = parser.parse_args()
    known = builtin_topics()
    with tempfile.TemporaryDirectory() as tmp:
        journal = SqliteJournal(Path(tmp) / "journal.sqlite3", Naming("bench", "nobody"))
        fill(journal, args.events)
        loop = bare_loop(journal, args.url, known)
        ours = sink(journal, args.url, known)
        journal.close()
    print(f"{args.events} events, confirmed publishes to a local RabbitMQ")
    print(f"{'':40} {'events/s':>9} {'vs loop':>8}")
    print(f"{'pika loop with confirms (baseline)':40} {loop:9.0f} {1.0:8.2f}")
    print(f"{'AmqpSink.publish_pending':40} {ours:9.0f} {ours / loop:8.2f}")


if __name__ == "__main__":
    main()

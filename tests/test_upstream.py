"""Upstreams: the whole bus in one history. Two bridges, each an upstream of the other, and
a real fedmsg 1.1.7 publisher with fedmsg's own replay endpoint (its SqlStore) upstream of
both: every message is in both journals exactly once, ``/raw`` on either answers for all of
them, nothing loops, and what a bridge missed while down is fetched from fedmsg's replay
endpoint. And a RabbitMQ queue, in fedora-messaging's format, as an upstream."""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from bridge.journal import JOURNAL_FILE
from tests.helpers import (
    Server,
    bridge,
    cached_venv,
    free_port,
    journal_events,
    send,
    sql,
    wait_until,
)
from tests.mails import bug_report
from tests.web import WebServer

PUBLISHER = textwrap.dedent(
    """
    import sys
    import threading

    import fedmsg
    import fedmsg.config
    from fedmsg.replay import ReplayContext
    from fedmsg.replay.sqlstore import SqlStore
    from sqlalchemy import create_engine

    config_file, database = sys.argv[1:3]
    config = fedmsg.config.load_config(filenames=[config_file])
    engine = create_engine(f"sqlite:///{database}", connect_args={"check_same_thread": False})
    config["persistent_store"] = SqlStore(engine)  # gives each message its seq_id
    fedmsg.init(**config)
    replay = ReplayContext(**config)
    threading.Thread(target=replay.listen, daemon=True).start()
    print("ready", flush=True)
    for line in sys.stdin:  # "COUNT TAG": publish COUNT messages tagged TAG
        count, tag = line.split()
        for n in range(int(count)):
            fedmsg.publish(topic="thing", modname="pub", msg={"tag": tag, "n": n})
        print("published", flush=True)
    """
)


class FedmsgPublisher:
    """fedmsg.publish from a process binding its PUB socket, with fedmsg's replay endpoint
    over its SqlStore."""

    def __init__(self, folder: Path):
        python = cached_venv("fedmsg-1.1.7-replay", "fedmsg==1.1.7", "sqlalchemy<2") / "python"
        self.publish = f"tcp://127.0.0.1:{free_port()}"
        self.replay = f"tcp://127.0.0.1:{free_port()}"
        config = folder / "fedmsg-publisher.py"
        config.write_text(
            "config = "
            + repr(
                {
                    "topic_prefix": "org.example",
                    "environment": "prod",
                    "name": "pub.test",
                    "endpoints": {"pub.test": [self.publish]},
                    "replay_endpoints": {"pub.test": self.replay},
                    "sign_messages": False,
                    "validate_signatures": False,
                    "post_init_sleep": 0.5,
                }
            )
        )
        self.proc = subprocess.Popen(
            [str(python), "-c", PUBLISHER, str(config), str(folder / "fedmsg-store.sqlite")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self._line() == "ready", self.proc.stderr.read().decode()

    def _line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().decode().strip()

    def send(self, count: int, tag: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{count} {tag}\n".encode())
        self.proc.stdin.flush()
        assert self._line() == "published"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def count(state: Path) -> int:
    return sql(state / JOURNAL_FILE, "SELECT COUNT(*) FROM events")[0][0]


@pytest.mark.slow
@pytest.mark.timeout(900)  # the first run builds a fedmsg virtualenv
def test_two_bridges_and_a_fedmsg_publisher_make_one_history_without_loops(tmp_path):
    publisher = FedmsgPublisher(tmp_path)
    states = {name: tmp_path / name for name in ("a", "b")}
    configs = {name: tmp_path / f"{name}.toml" for name in states}
    servers = {name: Server(states[name], config=configs[name]) for name in states}
    for name, other in (("a", "b"), ("b", "a")):
        configs[name].write_text(
            "[trust]\ndns = false\n"
            f'[upstream.pub]\nendpoints = ["{publisher.publish}"]\nreplay = "{publisher.replay}"\n'
            f'[upstream.{other}]\nendpoints = ["{servers[other].publish}"]\n'
            f'replay = "{servers[other].replay}"\n'
        )

    def subscribed(server: Server, times: int = 1) -> None:
        """Wait until *server*'s upstreams have subscribed (*times* since it first started),
        and a moment more for the handshakes: a PUB socket drops what it sends before."""
        wait_until(
            lambda: server.log_text().count("subscribed to") >= 2 * times,
            60,
            f"the upstreams of {server.state_dir.name}; {server.log_text()[-2000:]}",
        )
        time.sleep(1)

    try:
        for server in servers.values():
            server.start().wait_for_smtp()
        for server in servers.values():
            subscribed(server)
        publisher.send(5, "first")
        send(servers["a"], bug_report(1_600_001, package="hello"))
        send(servers["b"], bug_report(1_600_002, package="other"))
        wait_until(lambda: all(count(s) >= 7 for s in states.values()), 60, "7 messages in both")

        # a is away while the publisher sends three more: it fetches them from fedmsg's
        # replay endpoint when the next message shows the gap
        servers["a"].stop()
        publisher.send(3, "while-a-is-down")
        servers["a"].start().wait_for_smtp()
        subscribed(servers["a"], times=2)
        publisher.send(1, "after")
        wait_until(lambda: all(count(s) >= 11 for s in states.values()), 60, "11 in both")
        time.sleep(3)  # a loop would go on adding rows
        webs = {name: WebServer(state).start() for name, state in states.items()}
        try:
            raw = {
                name: web.get("/raw?rows_per_page=100&order=asc").json()
                for name, web in webs.items()
            }
        finally:
            for web in webs.values():
                web.stop()
        status = {
            name: json.loads(
                bridge("--config", str(configs[name]), "--state-dir", str(state), "status",
                       "--json").stdout
            )
            for name, state in states.items()
        }  # fmt: skip
    finally:
        for server in servers.values():
            if server.proc is not None:
                server.stop()
        publisher.stop()

    journals = {name: journal_events(state) for name, state in states.items()}
    for name, events in journals.items():
        ids = [e.msg_id for e in events]
        assert len(ids) == len(set(ids)) == 11, (name, len(ids), len(set(ids)))
    assert {e.msg_id for e in journals["a"]} == {e.msg_id for e in journals["b"]}
    tags = sorted(e.msg.get("tag", "") for e in journals["a"] if "tag" in e.msg)
    assert tags == ["after"] + ["first"] * 5 + ["while-a-is-down"] * 3
    for name in states:
        assert raw[name]["total"] == 11
        assert {m["msg_id"] for m in raw[name]["raw_messages"]} == {
            e.msg_id for e in journals[name]
        }
    a = status["a"]["upstreams"]
    assert a["pub"]["recovered"] == 3 and a["pub"]["gaps"] == 0  # from fedmsg's replay
    assert a["pub"]["state"] == "receiving" and a["pub"]["last_seq_id"] == 9
    # each message reached each bridge more than once: the journal kept it once
    for name, other in (("a", "b"), ("b", "a")):
        assert status[name]["upstreams"][other]["duplicates"] > 0
    origins = {e.msg_id: e.origin for e in journals["b"] if e.origin}
    assert {o["upstream"] for o in origins.values()} == {"pub", "a"}


@pytest.mark.slow
def test_a_rabbitmq_queue_in_fedora_messagings_format_is_an_upstream(tmp_path):
    from tests.test_amqp import BROKER, URL, pika_or_skip

    pika = pika_or_skip()
    amqp_url = URL.format(port=BROKER[1])
    queue = f"bridge-test-upstream-{uuid.uuid4().hex[:8]}"
    config_a = tmp_path / "a.toml"
    config_a.write_text(f'[trust]\ndns = false\n[amqp]\nurl = "{amqp_url}"\n')
    config_b = tmp_path / "b.toml"
    config_b.write_text(
        "[trust]\ndns = false\n"
        f'[upstream.rabbit]\namqp_url = "{amqp_url}"\namqp_queue = "{queue}"\n'
        'amqp_bindings = ["org.debian.dev.#", "org.fedoraproject.#"]\n'
    )
    a = Server(tmp_path / "a", config=config_a).start()
    b = Server(tmp_path / "b", config=config_b).start()
    fedora_id = str(uuid.uuid4())
    try:
        a.wait_for_smtp()
        b.wait_for_smtp()
        wait_until(lambda: "reading queue" in b.log_text(), 30, f"b's upstream; {b.log_text()}")
        send(a, bug_report(1_700_001))  # a's AMQP sink publishes it
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        connection.channel().basic_publish(  # what a fedora-messaging publisher sends
            "amq.topic",
            "org.fedoraproject.prod.test.hello",
            json.dumps({"hello": "from fedora-messaging"}).encode(),
            pika.BasicProperties(
                content_type="application/json",
                message_id=fedora_id,
                headers={
                    "fedora_messaging_schema": "base.message",
                    "sent-at": "2026-12-07T10:00:00+00:00",
                },
            ),  # fmt: skip
        )
        connection.close()
        wait_until(lambda: count(tmp_path / "b") >= 2, 60, f"2 messages in b; {b.log_text()}")
    finally:
        a.stop()
        b.stop()
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        connection.channel().queue_delete(queue)
        connection.close()
    (mine,) = journal_events(tmp_path / "a")
    found = {e.msg_id: e for e in journal_events(tmp_path / "b")}
    assert set(found) == {mine.msg_id, fedora_id}
    assert found[mine.msg_id].topic == mine.topic and found[mine.msg_id].msg == mine.msg
    assert found[fedora_id].topic == "org.fedoraproject.prod.test.hello"
    assert found[fedora_id].msg == {"hello": "from fedora-messaging"}
    assert found[fedora_id].origin["upstream"] == "rabbit"

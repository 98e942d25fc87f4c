"""The buses' own tools read the bridge: fedora-messaging's ``consume`` validates and renders
what the AMQP sink publishes, and fedmsg's ``fedmsg-tail --terse`` prints its summaries."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from bridge.pipeline import Pipeline
from parsers.debbugs import DebbugsParser
from tests.helpers import (
    ROOT,
    Server,
    Subscriber,
    bridge,
    cached_venv,
    config_file,
    send,
    wait_until,
)
from tests.mails import bug_report
from tests.test_amqp import BROKER, URL, pika_or_skip

FEDORA_MESSAGING = "fedora-messaging>=3,<4"
SCHEMA_PACKAGE = ROOT / "contrib" / "debian-bus-messages"

CALLBACK = '''\
import json
from fedora_messaging import config


def record(message):
    """Write down what consume handed over: only messages that passed validation arrive."""
    with open(config.conf["consumer_config"]["out"], "a") as out:
        out.write(json.dumps({
            "topic": message.topic,
            "class": type(message).__name__,
            "body": message.body,
            "summary": message.summary,
            "str": str(message),
            "packages": message.packages,
            "usernames": message.usernames,
        }) + "\\n")
'''


def tool_venv(name: str, *requirements: str, install: Path) -> Path:
    """A cached virtualenv with *requirements*, and *install* (a distribution of this
    checkout: the message classes or fedmsg's processors) without dependencies."""
    tools = cached_venv(name, *requirements)
    checkout = subprocess.run(
        [str(tools / "python"), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall",
         str(install)],
        capture_output=True,
        timeout=600,
    )  # fmt: skip
    if checkout.returncode != 0:
        pytest.fail(f"could not install {install}: {checkout.stderr.decode()[-2000:]}")
    return tools


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the first run builds a virtualenv
def test_fedora_messaging_consume_validates_and_renders_the_bridges_messages(tmp_path):
    pika = pika_or_skip()
    tools = tool_venv("debian-bus-messages", FEDORA_MESSAGING, install=SCHEMA_PACKAGE)
    queue = f"bridge-consume-{uuid.uuid4()}"
    out = tmp_path / "consumed.jsonl"
    (tmp_path / "recorder.py").write_text(CALLBACK)
    conf = tmp_path / "fedora-messaging.toml"
    conf.write_text(
        f'amqp_url = "{URL.format(port=BROKER[1])}"\n'
        'callback = "recorder:record"\n'
        '[queues."' + queue + '"]\n'
        "durable = false\nauto_delete = true\nexclusive = false\narguments = {}\n"
        "[[bindings]]\n"
        f'queue = "{queue}"\nexchange = "amq.topic"\nrouting_keys = ["org.debian.dev.#"]\n'
        f'[consumer_config]\nout = "{out}"\n'
    )
    with open(tmp_path / "consume.log", "wb") as log_file:
        consume = subprocess.Popen(
            [str(tools / "fedora-messaging"), "--conf", str(conf), "consume"],
            cwd=tmp_path,
            env=dict(os.environ, PYTHONPATH=str(tmp_path)),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = None
    try:

        def bound() -> bool:
            connection = pika.BlockingConnection(pika.URLParameters(URL.format(port=BROKER[1])))
            try:
                connection.channel().queue_declare(queue, passive=True)
                return True
            except Exception:
                return False
            finally:
                if connection.is_open:
                    connection.close()

        wait_until(bound, 60, "fedora-messaging consume to declare its queue")
        top = f'[amqp]\nurl = "{URL.format(port=BROKER[1])}"\n'
        server = Server(tmp_path / "state", config=config_file(tmp_path, top=top)).start()
        server.wait_for_smtp()
        sub = Subscriber(server.publish)
        sub.warm_up(server.state_dir)
        for bug in (1100001, 1100002):
            assert send(server, bug_report(bug)) == {}
        zmq = [e for e in sub.collect(lambda got: len(got) >= 2, 30) if "report" in e.topic]
        sub.close()

        def consumed() -> list[dict]:
            if not out.exists():
                return []
            lines = [json.loads(line) for line in out.read_text().splitlines()]
            return [m for m in lines if m["topic"].endswith("debbugs.bug.report")]

        wait_until(lambda: len(consumed()) >= 2, 60, "consume to hand over both reports")
    finally:
        if server is not None:
            server.stop()
        consume.terminate()
        consume.wait(20)
    log = (tmp_path / "consume.log").read_text(errors="replace")
    got = consumed()
    assert [m["body"] for m in got] == [e.msg for e in zmq], log[-3000:]
    for message, envelope in zip(got, zmq, strict=True):
        assert message["class"] == "DebbugsBugReport"  # the schema package's class, validated
        assert message["summary"] == envelope.msg["summary"]
        assert message["str"].startswith(envelope.msg["summary"] + "\n" + envelope.msg["url"])
        assert message["packages"] == envelope.msg["packages"]
    assert "failed validation" not in log.lower()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_fedmsg_tail_terse_prints_the_bridges_summary(fedmsg_tail, tmp_path):
    processors = ROOT / "contrib" / "fedmsg-meta-debian-bus"
    tools = tool_venv("fedmsg-1.1.7", "fedmsg[commands]==1.1.7", install=processors)
    assert tools == fedmsg_tail.parent
    state = tmp_path / "state"
    server = Server(state).start()
    config = tmp_path / "fedmsg-config.py"
    config.write_text(
        "config = dict(\n"
        "    topic_prefix='org.debian', environment='dev',\n"
        "    topic_prefix_re='org\\\\.debian\\\\.(dev|stg|prod)',\n"
        f"    endpoints={{'debian-bus-bridge.test': [{server.publish!r}]}},\n"
        "    sign_messages=False, validate_signatures=False,\n"
        ")\n"
    )
    out = tmp_path / "terse.out"
    with open(out, "wb") as sink:
        tail = subprocess.Popen(
            [str(fedmsg_tail), "--terse", "--no-validate", "--config-filename", str(config)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
    # a whole bug report body (bridge log keeps the topic's schema), with a summary of its own
    (event,) = Pipeline([DebbugsParser()]).process(bug_report(1100003)).events
    body = dict(event.body)
    body.pop("schema_version")
    body.update(
        summary="Jane Doe reported #1100003 against hello: crashes",
        url="https://bugs.debian.org/1100003",
    )
    try:
        for _ in range(40):  # SUB sockets miss what is sent before they join: repeat
            logged = bridge(
                "--state-dir", str(state), "log", "--topic", "debbugs.bug.report", json.dumps(body)
            )
            assert logged.returncode == 0, logged.stderr
            time.sleep(0.5)
            if body["summary"] in out.read_text(errors="replace"):
                break
    finally:
        tail.terminate()
        tail.wait(10)
        server.stop()
    text = out.read_text(errors="replace")
    # fedmsg's own line: "<title> -- <subtitle> <link>", from the bridge's processor
    assert f"bug.report -- {body['summary']} {body['url']}" in text, text[-2000:]

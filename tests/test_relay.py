"""fedmsg's relay inbound: fedmsg 1.1.7's own ``fedmsg-logger`` and
``fedmsg.publish(active=True)`` reach ``[relay] listen`` unchanged, signed with the tests'
own certificates (and not); what passes is journaled under its own topic and seen by a real
``fedmsg-tail`` on the bridge's PUB socket; the rest is refused, counted and logged."""

from __future__ import annotations

import json
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from bridge.journal import JOURNAL_FILE
from tests.helpers import Server, bridge, cached_venv, free_port, sql, wait_until
from tests.test_signing import CA, FEDMSG_CRYPTO, accepted_messages

TOPIC = "org.debian.dev.logger.log"


@pytest.fixture(scope="session")
def fedmsg_bin() -> Path:
    """fedmsg 1.1.7 with its X.509 backend (``fedmsg-logger``, ``fedmsg-tail``, python)."""
    return cached_venv("fedmsg-1.1.7-crypto", *FEDMSG_CRYPTO)


def fedmsg_config(folder: Path, relay: str, certname: str | None, **extra: object) -> Path:
    """A fedmsg config file: publish actively to *relay*, signing as *certname* (or not)."""
    host = socket.gethostname().split(".", 1)[0]
    settings = {
        "topic_prefix": "org.debian",
        "environment": "dev",
        "endpoints": {},
        "relay_inbound": [relay],
        "sign_messages": certname is not None,
        "validate_signatures": False,
        "crypto_backend": "x509",
        "ssldir": str(folder),
        "certnames": {f"shell.{host}": certname or "none"},
        # a PUB socket drops what it sends before the subscriber's handshake: wait for it
        "post_init_sleep": 2.0,
        "zmq_linger": 5000,
        **extra,
    }
    path = folder / f"fedmsg-{certname or 'unsigned'}.py"
    path.write_text(f"config = {settings!r}\n")
    return path


def journaled(state: Path, config: Path, topic: str = TOPIC) -> list[dict]:
    result = bridge(
        "--config", str(config), "--state-dir", str(state), "query", "--json",
        "--topic", topic, "--limit", "100000",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def counters(state: Path, config: Path) -> dict[str, int]:
    result = bridge("--config", str(config), "--state-dir", str(state), "status", "--json")
    return json.loads(result.stdout)["counters"]


@pytest.mark.slow
@pytest.mark.timeout(900)  # the first run builds a fedmsg virtualenv
def test_fedmsg_logger_through_the_relay_to_fedmsg_tail_and_what_is_refused(tmp_path, fedmsg_bin):
    ca = CA(tmp_path)
    ca.issue("shell-app", 10)
    ca.issue("intruder", 11)
    ca_path, crl_path = ca.files()
    relay = f"tcp://127.0.0.1:{free_port()}"
    config = tmp_path / "bridge.toml"
    config.write_text(
        "[trust]\ndns = false\n"
        f'[relay]\nlisten = "{relay}"\nca_cert_location = "{ca_path}"\n'
        f'crl_location = "{crl_path}"\nrouting_nitpicky = true\n'
        f'[relay.routing_policy]\n"{TOPIC}" = ["shell-app"]\n'
    )
    state = tmp_path / "state"
    server = Server(state, config=config).start()
    tail_config = tmp_path / "tail.py"
    tail_config.write_text(
        "config = dict(topic_prefix='org.debian', environment='dev', validate_signatures=False,"
        f" endpoints={{'debian-bus-bridge.test': [{server.publish!r}]}})\n"
    )
    out = tmp_path / "fedmsg-tail.out"
    logger = str(fedmsg_bin / "fedmsg-logger")

    def log(certname: str | None, text: str) -> None:
        settings = fedmsg_config(tmp_path, relay, certname)
        done = subprocess.run(
            [logger, "--config-filename", str(settings), "--modname", "logger", "--topic",
             "log", "--message", text],
            capture_output=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr.decode()

    try:
        server.wait_for_smtp()
        with open(out, "wb") as sink:
            tail = subprocess.Popen(
                [str(fedmsg_bin / "fedmsg-tail"), "--no-validate", "--config-filename",
                 str(tail_config)], stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip
        time.sleep(2)  # fedmsg-tail joins the bus
        log("shell-app", "signed by an authorised certificate")
        wait_until(
            lambda: journaled(state, config), 30, f"the relayed message; {server.log_text()}"
        )
        wait_until(
            lambda: "signed by an authorised certificate" in accepted_messages(out),
            30,
            f"fedmsg-tail to see it; {out.read_text(errors='replace')[-2000:]}",
        )
        log(None, "unsigned")
        log("intruder", "signed by a certificate outside routing_policy")
        altered = run_altered_publish(fedmsg_bin, fedmsg_config(tmp_path, relay, "shell-app"))
        assert altered.returncode == 0, altered.stderr.decode()
        wait_until(
            lambda: sum(v for k, v in counters(state, config).items() if "refused" in k) >= 3,
            30,
            f"three refusals; {server.log_text()[-3000:]}",
        )
    finally:
        tail.terminate()
        tail.wait(10)
        server.stop()

    (message,) = journaled(state, config)
    assert message["msg"] == {"log": "signed by an authorised certificate"}
    assert message["origin"]["relay"] == "relay"
    assert message["origin"]["sender"] == "shell-app"
    assert message["origin"]["auth"]["verdict"] == "pass"
    assert message["origin"]["auth"]["method"] == "x509"
    assert message["origin"]["auth"]["selector"] == "shell-app"
    seen = accepted_messages(out)
    assert message["msg_id"] in seen and TOPIC in seen  # its own msg_id and topic
    found = counters(state, config)
    assert found["relay.accepted"] == 1
    assert found["relay.refused.unsigned"] == 1
    assert found["relay.refused.unauthorised"] == 1
    assert found["relay.refused.signature"] == 1
    text = server.log_text()
    assert "unsigned: no signature and certificate" in text
    assert "routing_policy does not let intruder send" in text
    assert "the signature by shell-app does not match the message" in text


ALTERED = textwrap.dedent(
    """
    import sys
    import fedmsg
    import fedmsg.config

    config = fedmsg.config.load_config(filenames=[sys.argv[1]])
    config.update(active=True, name="relay_inbound")
    fedmsg.init(**config)

    def alter(message):  # after fedmsg signed it: on the way, someone changes the body
        message["msg"]["log"] = "altered after signing"

    fedmsg.publish(topic="log", modname="logger", msg={"log": "as signed"}, pre_fire_hook=alter)
    fedmsg.destroy()
    """
)


def run_altered_publish(fedmsg_bin: Path, settings: Path) -> subprocess.CompletedProcess[bytes]:
    """fedmsg.publish(active=True), signed by an authorised certificate, its body altered
    after signing."""
    return subprocess.run(
        [str(fedmsg_bin / "python"), "-c", ALTERED, str(settings)],
        capture_output=True,
        timeout=60,
    )


PUBLISH_MANY = textwrap.dedent(
    """
    import sys
    import fedmsg
    import fedmsg.config

    config = fedmsg.config.load_config(filenames=[sys.argv[1]])
    config.update(active=True, name="relay_inbound", zmq_linger=60000)
    fedmsg.init(**config)
    sent = []
    for n in range(int(sys.argv[2])):
        fedmsg.publish(topic="load", modname="logger", msg={"publisher": sys.argv[3], "n": n},
                       pre_fire_hook=lambda message: sent.append(message["msg_id"]))
    fedmsg.destroy()
    with open(sys.argv[4], "w") as out:
        out.write("\\n".join(sent))
    """
)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ten_thousand_messages_from_four_publishers_are_each_journaled_once(tmp_path, fedmsg_bin):
    # unsigned: fedmsg 1.1.7 reads its key file again for every message it signs, which
    # would make this a test of fedmsg's speed (bench/relay.py times signed messages)
    relay = f"tcp://127.0.0.1:{free_port()}"
    config = tmp_path / "bridge.toml"
    config.write_text(
        "[trust]\ndns = false\n"
        f'[relay]\nlisten = "{relay}"\nvalidate_signatures = false\n'
        "rate_limit = 100000.0\nrate_burst = 100000\n"
    )
    state = tmp_path / "state"
    server = Server(state, config=config).start()
    per_publisher = 2500
    try:
        server.wait_for_smtp()
        publishers = []
        for n in range(4):
            settings = fedmsg_config(tmp_path, relay, None)
            publishers.append(
                subprocess.Popen(
                    [
                        str(fedmsg_bin / "python"),
                        "-c",
                        PUBLISH_MANY,
                        str(settings),
                        str(per_publisher),
                        str(n),
                        str(tmp_path / f"sent-{n}"),
                    ],
                    stderr=subprocess.PIPE,
                )  # fmt: skip
            )
        for publisher in publishers:
            _, err = publisher.communicate(timeout=300)
            assert publisher.returncode == 0, err.decode()
        sent = [i for n in range(4) for i in (tmp_path / f"sent-{n}").read_text().split()]
        assert len(sent) == len(set(sent)) == 4 * per_publisher

        def relayed() -> int:
            time.sleep(0.5)
            rows = sql(state / JOURNAL_FILE, "SELECT COUNT(*) FROM events WHERE source = 'relay'")
            return rows[0][0]

        wait_until(lambda: relayed() >= len(sent), 120, f"{len(sent)} messages")
        time.sleep(1)
        found = journaled(state, config, "org.debian.dev.logger.load")
    finally:
        server.stop()
    ids = [m["msg_id"] for m in found]
    assert len(ids) == len(set(ids)) == len(sent)  # none duplicated
    assert set(ids) == set(sent)  # none lost
    assert all(m["origin"]["auth"]["verdict"] == "none" for m in found)
    for n in range(4):  # each publisher's messages in the order it sent them
        mine = [m["msg"]["n"] for m in sorted(found, key=lambda m: m["seq_id"])
                if m["msg"]["publisher"] == str(n)]  # fmt: skip
        assert mine == list(range(per_publisher))


def test_the_relay_bounds_size_topic_and_rate_and_counts_what_it_refuses(tmp_path):
    import uuid

    import zmq

    relay = f"tcp://127.0.0.1:{free_port()}"
    config = tmp_path / "bridge.toml"
    config.write_text(
        "[trust]\ndns = false\n"
        f'[relay]\nlisten = "{relay}"\nvalidate_signatures = false\n'
        'topic_prefixes = ["org.debian.dev.mentors."]\nmax_message_bytes = 2048\n'
        "rate_limit = 0.01\nrate_burst = 3\n"
    )
    state = tmp_path / "state"
    server = Server(state, config=config).start()

    def message(topic: str, text: str) -> list[bytes]:
        body = {"topic": topic, "msg": {"text": text}, "msg_id": f"2026-{uuid.uuid4()}",
                "timestamp": int(time.time()), "i": 1, "username": "test"}  # fmt: skip
        return [topic.encode(), json.dumps(body).encode()]

    mentors = "org.debian.dev.mentors.upload"
    try:
        server.wait_for_smtp()
        sock = zmq.Context.instance().socket(zmq.PUB)
        sock.setsockopt(zmq.LINGER, 5000)
        sock.connect(relay)
        time.sleep(1.0)
        for frames in (
            message(mentors, "one"),
            message("org.example.prod.other", "outside the allowed prefixes"),
            message(mentors, "x" * 4000),  # above max_message_bytes
            [b"just one frame"],
            message(mentors, "two"),
            message(mentors, "three"),
            message(mentors, "four: over the rate"),  # the burst of 3 is spent
        ):
            sock.send_multipart(frames)
        sock.close()
        wait_until(
            lambda: (
                sum(v for k, v in counters(state, config).items() if k.startswith("relay.")) >= 7
            ),
            30,
            f"7 messages counted; {server.log_text()[-2000:]}",
        )
    finally:
        server.stop()
    found = counters(state, config)
    assert found["relay.accepted"] == 3
    assert found["relay.refused.topic"] == 1
    assert found["relay.refused.too_large"] == 1
    assert found["relay.refused.malformed"] == 1
    assert found["relay.refused.rate"] == 1
    texts = [m["msg"]["text"] for m in journaled(state, config, mentors)]
    assert sorted(texts) == ["one", "three", "two"]
    log = server.log_text()
    assert "is outside topic_prefixes" in log and "above max_message_bytes" in log

"""Finding the bus in DNS as fedmsg does (``_fedmsg._tcp.DOMAIN`` SRV records), against
Debian's dnsmasq on loopback serving the tests' own zone: ``bridge tail --srv`` finds the
bridge, shows a relayed message, and follows the bridge when it moves to other ports."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import uuid

import pytest
import zmq

from bridge.discovery import Discovery, DiscoveryError
from tests.helpers import Server, child_env, free_port, journal_events, require, wait_until

DOMAIN = "bus.test"


class Dnsmasq:
    """dnsmasq answering only for the test's records, on a free loopback port."""

    def __init__(self) -> None:
        require(shutil.which("dnsmasq") is not None, "dnsmasq is not installed (package dnsmasq)")
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def serve(self, *records: tuple[str, int]) -> Dnsmasq:
        """(Re)start with the SRV records given: (name, port), target 127.0.0.1."""
        self.stop()
        srv = [f"--srv-host={name},127.0.0.1,{port}" for name, port in records]
        self.proc = subprocess.Popen(
            ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
             "--no-hosts", "--local=/test/", "--bind-interfaces", "--listen-address=127.0.0.1",
             f"--port={self.port}", "--pid-file=", "--user=root", "--local-ttl=0", *srv],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        discovery = Discovery(["127.0.0.1"], self.port, timeout=1.0, cache_seconds=0)

        def answering() -> bool:
            try:
                return bool(discovery.lookup(records[0][0], fresh=True))
            except DiscoveryError:
                return False

        wait_until(answering, 20, "dnsmasq to answer")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def relay_message(endpoint: str, text: str, arrived) -> str:
    """One message as a fedmsg active publisher sends it (unsigned), to the relay, sent
    again until *arrived(msg_id)* says so: a PUB socket drops what it sends before the
    subscriber's handshake, and the journal keeps a msg_id once."""
    msg_id = f"2026-{uuid.uuid4()}"
    message = {
        "topic": "org.debian.dev.mentors.upload", "msg": {"text": text},
        "timestamp": int(time.time()), "msg_id": msg_id, "i": 1, "username": "test",
    }  # fmt: skip
    context = zmq.Context.instance()
    sock = context.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 5000)
    sock.connect(endpoint)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.5)  # as fedmsg's post_init_sleep
            sock.send_multipart([message["topic"].encode(), json.dumps(message).encode()])
            if arrived(msg_id):
                return msg_id
        raise AssertionError(f"{text!r} never arrived")
    finally:
        sock.close()


def test_an_unknown_name_and_an_unanswered_query_are_one_line_each():
    dns = Dnsmasq().serve(("_fedmsg._tcp.other.test", 9))
    try:
        discovery = Discovery(["127.0.0.1"], dns.port, timeout=1.0)
        with pytest.raises(DiscoveryError, match=r"_fedmsg\._tcp\.nowhere\.test does not exist"):
            discovery.endpoints("nowhere.test")
        assert discovery.endpoints("other.test") == ["tcp://127.0.0.1:9"]
    finally:
        dns.stop()
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a port nobody answers on
    silent.bind(("127.0.0.1", 0))
    try:
        slow = Discovery(["127.0.0.1"], silent.getsockname()[1], timeout=0.5)
        with pytest.raises(DiscoveryError, match=r"no answer for _fedmsg\._tcp\.bus\.test within"):
            slow.endpoints(DOMAIN)
    finally:
        silent.close()


@pytest.mark.slow
def test_tail_finds_the_bridge_by_srv_and_follows_it_when_it_moves(tmp_path):
    dns = Dnsmasq()
    relay = f"tcp://127.0.0.1:{free_port()}"
    config = tmp_path / "bridge.toml"
    config.write_text(
        "[trust]\ndns = false\n"
        f'[relay]\nlisten = "{relay}"\nvalidate_signatures = false\n'
        f'[discovery]\ndns_servers = ["127.0.0.1"]\ndns_port = {dns.port}\ntimeout = 2.0\n'
    )
    state = tmp_path / "state"
    first = Server(state, config=config).start()
    out = tmp_path / "tail.out"
    tail = None
    second = None
    try:
        first.wait_for_smtp()
        replay_port = int(first.replay.rsplit(":", 1)[1])
        dns.serve(
            ("_fedmsg._tcp.bus.test", int(first.publish.rsplit(":", 1)[1])),
            ("_fedmsg-replay._tcp.bus.test", replay_port),
        )
        with open(out, "wb") as sink:
            tail = subprocess.Popen(
                [sys.executable, "-m", "bridge", "-v", "--config", str(config), "tail",
                 "--srv", DOMAIN, "--json"],
                stdout=sink, stderr=subprocess.STDOUT, env=child_env(),
            )  # fmt: skip
        time.sleep(2)  # tail joins the bus

        def shown(msg_id: str) -> bool:
            return msg_id in out.read_text(errors="replace")

        relay_message(relay, "before the move", shown)
        assert f"{DOMAIN}: {first.publish}" in out.read_text()

        # the bridge moves: stopped, started on other ports, and journals a message before
        # it is announced anew, which tail, still asking for the old ports, cannot receive live
        first.stop()
        second = Server(state, config=config)
        assert second.publish != first.publish
        second.start().wait_for_smtp()

        def journaled(msg_id: str) -> bool:
            return any(e.msg_id == msg_id for e in journal_events(state))

        meanwhile = relay_message(relay, "while it moves", journaled)
        dns.serve(
            ("_fedmsg._tcp.bus.test", int(second.publish.rsplit(":", 1)[1])),
            ("_fedmsg-replay._tcp.bus.test", int(second.replay.rsplit(":", 1)[1])),
        )
        wait_until(lambda: shown(meanwhile), 30, "the message sent while it moved, replayed")
        relay_message(relay, "after the move", shown)
    finally:
        if tail is not None:
            tail.terminate()
            tail.wait(10)
        for server in (first, second):
            if server is not None and server.proc is not None:
                server.stop()
        dns.stop()
    text = out.read_text(errors="replace")
    assert f"now announces {second.publish}; following" in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert [m["msg"]["text"] for m in lines] == [
        "before the move",
        "while it moves",
        "after the move",
    ]
    assert [m["origin"]["relay"] for m in lines] == ["relay"] * 3
    assert "recovered 1 message(s) after seq_id 1" in text


def test_bridge_tail_says_in_one_line_that_a_name_does_not_exist(tmp_path):
    from tests.helpers import bridge

    dns = Dnsmasq().serve(("_fedmsg._tcp.other.test", 9))
    config = tmp_path / "bridge.toml"
    config.write_text(
        "[trust]\ndns = false\n"
        f'[discovery]\ndns_servers = ["127.0.0.1"]\ndns_port = {dns.port}\ntimeout = 1.0\n'
    )
    try:
        result = bridge("--config", str(config), "tail", "--srv", "nowhere.test")
    finally:
        dns.stop()
    err = result.stderr.decode()
    assert result.returncode == 1
    assert (
        err == "bridge: error: _fedmsg._tcp.nowhere.test does not exist (NXDOMAIN from"
        f" 127.0.0.1:{dns.port})\n"
    )

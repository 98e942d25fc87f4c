"""Services that push: ``POST /v1/publish`` with a token made by ``bridge web token add``,
the event journaled and published on the bus a ``bridge tail`` listens to; and the live
stream a browser follows, resumable with ``Last-Event-ID``."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from tests.helpers import OFFLINE_TRUST, Server, bridge, send, wait_until
from tests.mails import bug_report
from tests.test_tail import read_lines, tail_process
from tests.web import WebServer

UPLOAD = {
    "topic": "mentors.package.upload",
    "msg": {
        "summary": "hello 2.12-1 uploaded to mentors.debian.net by Jane Doe",
        "url": "https://mentors.debian.net/package/hello/",
        "packages": ["hello"],
        "agent": {"name": "Jane Doe", "email": "jane@example.org"},
        "version": "2.12-1",
    },
}


@pytest.fixture
def pushing(tmp_path: Path, state_dir: Path):
    """A bridge (serve and web on one journal) whose config holds a token for mentors.;
    the token, the servers and a ``bridge tail`` subscribed from the start."""
    config = tmp_path / "bridge.toml"
    config.write_text(f"{OFFLINE_TRUST}\n[web]\nmax_body_bytes = 4096\nrate_burst = 1000\n")
    made = bridge("--config", str(config), "web", "token", "add", "mentors", "--topics", "mentors.")
    assert made.returncode == 0, made.stderr.decode()
    token = made.stdout.decode().strip()
    assert token not in config.read_text()  # only its hash is kept
    server = Server(state_dir, config=config).start()
    web = WebServer(state_dir, config).start()
    server.wait_for_smtp()
    tail = tail_process(server, "--since", "0")
    yield token, server, web, tail
    tail.terminate()
    tail.wait(10)
    web.stop()
    server.stop()


def push(web: WebServer, token: str, body: object, key: str | None = None):
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if key:
        headers["Idempotency-Key"] = key
    return web.post("/v1/publish", json.dumps(body).encode(), headers)


def test_a_token_for_mentors_publishes_there_and_nowhere_else(pushing):
    token, server, web, tail = pushing
    reply = push(web, token, UPLOAD, key="hello_2.12-1")
    assert reply.status == 201, reply.body
    assert reply.json()["topic"] == "org.debian.dev.mentors.package.upload"
    (seen,) = read_lines(tail, 1, 30)
    assert seen["topic"] == "org.debian.dev.mentors.package.upload"
    assert seen["seq_id"] == reply.json()["seq_id"]
    assert {k: seen["msg"][k] for k in UPLOAD["msg"]} == UPLOAD["msg"]
    auth = seen["msg"]["origin"]["auth"]
    assert (auth["verdict"], auth["method"], auth["selector"]) == ("pass", "token", "mentors")
    assert "'mentors'" in auth["reason"]

    # the same request again (a retry): nothing new on the bus or in the journal
    again = push(web, token, UPLOAD, key="hello_2.12-1")
    assert again.status == 200 and again.json()["duplicate"] is True
    closed = {"topic": "debbugs.bug.closed", "msg": {"summary": "Bug#1 closed"}}
    refused = push(web, token, closed)
    assert refused.status == 403
    assert "mentors." in refused.json()["error"]
    marker = push(web, token, {**UPLOAD, "msg": {**UPLOAD["msg"], "version": "2.12-2"}})
    assert marker.status == 201
    (after,) = read_lines(tail, 1, 30)  # the next event on the bus is the marker, not a repeat
    assert after["msg"]["version"] == "2.12-2"
    journaled = bridge("--state-dir", str(server.state_dir), "query", "--json")
    topics = [json.loads(line)["topic"] for line in journaled.stdout.decode().splitlines()]
    assert topics == ["org.debian.dev.mentors.package.upload"] * 2


def test_bad_requests_get_their_status_and_a_json_error(pushing):
    token, _, web, _ = pushing
    cases = [
        (push(web, "dbb_not-a-token", UPLOAD), 401, "unknown token"),
        (web.post("/v1/publish", json.dumps(UPLOAD).encode()), 401, "Bearer"),
        (push(web, token, {**UPLOAD, "pad": "x" * 5000}), 413, "over the limit of 4096"),
        (
            web.post("/v1/publish", b"{not json", {"Authorization": f"Bearer {token}"}),
            400,
            "not JSON",
        ),
        (push(web, token, {"topic": "mentors.package.upload"}), 422, '"msg"'),
        (push(web, token, {"topic": "mentors.x", "msg": {"url": "u"}}), 422, "summary"),
    ]
    for reply, status, says in cases:
        assert reply.status == status, reply.body
        assert reply.headers["content-type"] == "application/json"
        assert says in reply.json()["error"] and reply.json()["status"] == status
    assert cases[0][0].headers["www-authenticate"].startswith("Bearer")


def test_a_body_sent_without_a_length_is_counted_too(pushing):
    token, _, web, _ = pushing
    request = (
        "POST /v1/publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    ).encode()
    chunk = b"x" * 3000
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(2)) + b"0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", web.port), timeout=10) as s:
        s.sendall(request + chunked)
        status_line = s.makefile("rb").readline()
    assert status_line.split()[1] == b"413"


def test_a_token_over_its_rate_is_told_when_to_come_back(tmp_path, state_dir):
    config = tmp_path / "bridge.toml"
    config.write_text(f"{OFFLINE_TRUST}\n[web]\nrate_limit = 6.0\nrate_burst = 2\n")
    token = bridge("--config", str(config), "web", "token", "add", "ci", "--topics", "ci.")
    secret = token.stdout.decode().strip()
    web = WebServer(state_dir, config).start()
    try:
        event = {"topic": "ci.build.done", "msg": {"summary": "build done"}}
        statuses = [push(web, secret, event).status for _ in range(3)]
        assert statuses == [201, 201, 429]
        limited = push(web, secret, event)
        assert limited.status == 429 and 1 <= int(limited.headers["retry-after"]) <= 10
    finally:
        web.stop()


def test_token_add_refuses_a_second_token_of_the_same_name_and_remove_deletes_it(tmp_path):
    config = tmp_path / "bridge.toml"
    config.write_text(OFFLINE_TRUST)
    assert (
        bridge("--config", str(config), "web", "token", "add", "a", "--topics", "a.").returncode
        == 0
    )
    twice = bridge("--config", str(config), "web", "token", "add", "a", "--topics", "a.")
    assert twice.returncode != 0 and b"exists" in twice.stderr
    assert (
        bridge("--config", str(config), "web", "token", "add", "b", "--topics", "b.").returncode
        == 0
    )
    assert bridge("--config", str(config), "web", "token", "remove", "a").returncode == 0
    listed = bridge("--config", str(config), "web", "token", "list").stdout.decode()
    assert listed == "b: b.\n"
    no_file = bridge("web", "token", "add", "c", "--topics", "c.", env={"PATH": "/usr/bin"})
    assert no_file.returncode != 0 and b"config file" in no_file.stderr


def _sse(web: WebServer, path: str, headers: dict[str, str], count: int, timeout: float):
    """The first *count* events of the stream at *path*: (id, envelope) each."""
    request = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection(("127.0.0.1", web.port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{request}\r\n".encode())
        stream = s.makefile("rb")
        found, current_id = [], None
        deadline = time.monotonic() + timeout
        while len(found) < count and time.monotonic() < deadline:
            line = stream.readline().decode().rstrip("\r\n")
            if line.startswith("id: "):
                current_id = int(line[4:])
            elif line.startswith("data: ") and current_id is not None:
                found.append((current_id, json.loads(line[6:])))
        return found


def test_the_stream_resumes_after_the_last_event_id_and_filters(pushing):
    token, server, web, _ = pushing
    for n in range(3):
        body = {**UPLOAD, "msg": {**UPLOAD["msg"], "version": f"1.{n}"}}
        assert push(web, token, body).status == 201
    send(server, bug_report(4242))
    wait_until(lambda: web.get("/raw?bug=4242").json()["total"] == 1, 20, "the bug report")
    everything = _sse(web, "/v1/stream?after=0", {}, 4, 20)
    assert [seq for seq, _ in everything] == [1, 2, 3, 4]
    resumed = _sse(web, "/v1/stream", {"Last-Event-ID": "2"}, 2, 20)
    assert [seq for seq, _ in resumed] == [3, 4]
    only_bugs = _sse(web, "/v1/stream?after=0&category=debbugs", {}, 1, 20)
    assert [e["msg"]["bug"] for _, e in only_bugs] == [4242]


def test_a_topic_a_parser_declares_keeps_its_schema_whoever_pushes(tmp_path, state_dir):
    config = tmp_path / "bridge.toml"
    config.write_text(OFFLINE_TRUST)
    made = bridge("--config", str(config), "web", "token", "add", "bts", "--topics", "debbugs.")
    web = WebServer(state_dir, config).start()
    try:
        closed = {"topic": "debbugs.bug.closed", "msg": {"summary": "Bug#1 closed"}}
        refused = push(web, made.stdout.decode().strip(), closed)
        assert refused.status == 422
        assert "not a debbugs.bug.closed body" in refused.json()["error"]
    finally:
        web.stop()

"""``bridge web`` under hostile requests: every one answered with a JSON 4xx (or 503 when
the journal is away), one odd stored event never breaks a page, streams are capped, and a
client that sends its request a byte at a time is cut. Each against the real server."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from bridge.events import Event, Naming
from bridge.journal import JOURNAL_FILE, SqliteJournal
from tests.helpers import OFFLINE_TRUST, bridge, postgres_schema, wait_until
from tests.tcpproxy import Proxy
from tests.test_hostile import damage_journal
from tests.web import WebServer

NAMING = Naming("org.debian", "dev", "bridge")


def report(n: int, date: object = "2024-01-02T10:00:00Z") -> Event:
    body = {
        "summary": f"bug {n} reported",
        "bug": n,
        "origin": {"date": date, "auth": {"verdict": "none", "reason": "no DKIM signature"}},
    }
    return Event("debbugs.bug.report", body, dedup_key=f"r{n}", packages=("hello",), bugs=(n,))


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory):
    """A web server over a small journal holding two events whose dates no parser makes,
    with a token for pushes under mentors."""
    tmp = tmp_path_factory.mktemp("hostile-web")
    state = tmp / "state"
    state.mkdir()
    with SqliteJournal(state / JOURNAL_FILE, NAMING) as journal:
        journal.append([report(n) for n in range(1, 6)], "smtp")
        journal.append([report(6, "9999-12-31T23:59:59-23:59"), report(7, 12345)], "http:x")
        journal.append([report(8)], "smtp")
    config = tmp / "bridge.toml"
    config.write_text(
        f"{OFFLINE_TRUST}\n[web]\nrate_burst = 1000\nmax_streams_per_client = 3\n"
        "request_timeout = 1.5\n"
    )
    made = bridge("--config", str(config), "web", "token", "add", "mentors", "--topics", "mentors.")
    assert made.returncode == 0, made.stderr.decode()
    server = WebServer(state, config).start()
    yield server, made.stdout.decode().strip()
    server.stop()


def is_json_4xx(reply) -> dict:
    assert 400 <= reply.status < 500, (reply.status, reply.body[:300])
    assert reply.headers.get("content-type", "").startswith("application/json"), reply.headers
    answer = reply.json()
    assert answer["status"] == reply.status and answer["error"]
    return answer


HOSTILE_ARGUMENTS = [
    "page=1000000000000000000",
    *(
        f"{name}={value}"
        for name in ("start", "end", "delta")
        for value in ("nan", "inf", "-inf", "1e300", "-1e300")
    ),  # fmt: skip
    "start=9999-12-31T23:59:59-23:59",
    "bug=%C2%B2",  # "²": str.isdigit() says yes, int() says no
    "bug=18446744073709551616",
    "rows_per_page=%C2%B2",
    "&".join(["topic=org.debian"] * 1500),  # SQLite's expression depth
    "&".join(["package=hello"] * 1500),
]


@pytest.mark.parametrize("path", ["/raw", "/v1/stats", "/", "/v1/stream"])
@pytest.mark.parametrize("arguments", HOSTILE_ARGUMENTS)
def test_hostile_arguments_are_a_json_4xx_on_every_endpoint(web, path, arguments):
    server, _ = web
    answer = is_json_4xx(server.get(f"{path}?{arguments}"))
    if arguments.count("=") > 100:
        assert "at most 100 values" in answer["error"]


def test_a_megabyte_query_string_gets_a_json_400_not_a_reset(web):
    server, _ = web
    answer = is_json_4xx(server.get("/raw?contains=" + "x" * 1_000_000))
    assert "over 16 KiB" in answer["error"]
    assert server.get("/healthz").status == 200


@pytest.mark.parametrize("header", ["²", "1" * 30, "-1", "12a"])
def test_a_hostile_stream_position_is_a_json_400(web, header):
    server, _ = web
    is_json_4xx(server.get("/v1/stream", {"Last-Event-ID": quote(header)}))
    is_json_4xx(server.get(f"/v1/stream?after={quote(header)}"))


def test_json_bombs_and_a_reused_idempotency_key_are_refused(web):
    server, token = web
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    big_number = b'{"topic": "mentors.x", "msg": {"summary": "s", "n": ' + b"9" * 5000 + b"}}"
    assert "5000 digits" in is_json_4xx(server.post("/v1/publish", big_number, headers))["error"]
    deep = b"[" * 30000 + b"]" * 30000
    answer = is_json_4xx(server.post("/v1/publish", deep, {**headers}))
    assert answer["status"] in (400, 413)
    nested = json.dumps({"topic": "mentors.x", "msg": {"summary": "s", "n": [[[[1]]]]}})
    deeper = nested.replace("[[[[1]]]]", "[" * 100 + "1" + "]" * 100)
    assert (
        "nests deeper" in is_json_4xx(server.post("/v1/publish", deeper.encode(), headers))["error"]
    )
    first = {"topic": "mentors.x", "msg": {"summary": "one thing"}}
    keyed = {**headers, "Idempotency-Key": "k-1"}
    assert server.post("/v1/publish", json.dumps(first).encode(), keyed).status == 201
    assert server.post("/v1/publish", json.dumps(first).encode(), keyed).json()["duplicate"]
    other = {"topic": "mentors.x", "msg": {"summary": "one thing", "more": "another"}}
    reply = server.post("/v1/publish", json.dumps(other).encode(), keyed)
    assert reply.status == 409 and "Idempotency-Key" in reply.json()["error"]


def test_one_odd_stored_event_never_breaks_the_page(web):
    server, _ = web
    page = server.get("/", {"Accept": "text/html"})
    assert page.status == 200, page.body[:300]
    text = page.body.decode()
    for n in (1, 5, 8):
        assert f"bug {n} reported" in text
    # the far-future date is shown as it was given; the number instead of a date too
    assert "9999-12-31" in text and "bug 7 reported" in text


def stream_socket(server: WebServer, path: str = "/v1/stream") -> tuple[socket.socket, bytes]:
    """An open stream and the start of its answer."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock, sock.recv(4096)


def test_streams_are_capped_per_client_with_a_json_503(web):
    server, _ = web
    opened = [stream_socket(server) for _ in range(3)]
    try:
        for _, head in opened:
            assert head.startswith(b"HTTP/1.1 200"), head
        refused = server.get("/v1/stream")
        assert refused.status == 503 and "3 live streams are open from" in refused.json()["error"]
    finally:
        for sock, _ in opened:
            sock.close()

    def slot_free() -> bool:  # closed streams give their slots back
        sock, head = stream_socket(server)
        sock.close()
        return head.startswith(b"HTTP/1.1 200")

    wait_until(slot_free, 20, "a slot given back")


def test_a_request_sent_a_byte_at_a_time_is_cut_and_others_are_answered(web):
    server, _ = web
    slow = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(20)]
    started = time.monotonic()
    try:
        for sock in slow:
            sock.sendall(b"GET /raw HTTP/1.1\r\nHost: x\r\n")  # the head never ends
        assert server.get("/healthz").status == 200
        for sock in slow:
            sock.settimeout(10)
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(100) == b""  # closed by the server
        waited = time.monotonic() - started
    finally:
        for sock in slow:
            sock.close()
    assert waited < 10, f"the slow requests were cut after {waited:.1f} s (request_timeout 1.5)"


def test_a_damaged_journal_is_a_json_503(tmp_path: Path):
    state = tmp_path / "state"
    state.mkdir()
    with SqliteJournal(state / JOURNAL_FILE, NAMING) as journal:  # closed: checkpointed
        journal.append([report(n) for n in range(1, 3000)], "smtp")
    server = WebServer(state).start()
    try:
        damage_journal(state / JOURNAL_FILE)
        # every page of it: a page on a damaged part of the file is a 503, the rest answer
        statuses = []
        urls = [f"/raw?rows_per_page=100&page={n}" for n in range(1, 31)] + ["/v1/stats"]
        for url in urls:
            reply = server.get(url)
            statuses.append(reply.status)
            assert reply.status in (200, 503), (url, reply.status, reply.body[:200])
            if reply.status == 503:
                assert "journal" in reply.json()["error"], reply.body[:200]
        assert 503 in statuses
    finally:
        server.stop()


@contextlib.contextmanager
def web_over_proxied_postgresql(tmp_path: Path) -> Iterator[tuple[WebServer, Proxy]]:
    """``bridge web`` on a PostgreSQL journal reached through a proxy the test controls."""
    url, drop = postgres_schema()
    proxy = Proxy(("127.0.0.1", 5432))
    proxied = url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    config = tmp_path / "bridge.toml"
    config.write_text(f'{OFFLINE_TRUST}\n[journal]\nurl = "{proxied}"\n')
    state = tmp_path / "state"
    state.mkdir()
    server = WebServer(state, config).start()
    try:
        assert server.get("/raw").status == 200
        yield server, proxy
    finally:
        server.stop()
        proxy.close()
        drop()


def test_a_postgresql_outage_is_a_json_503_and_healthz_says_why(tmp_path: Path):
    with web_over_proxied_postgresql(tmp_path) as (server, proxy):
        proxy.cut()
        for path in ("/raw", "/v1/stats", "/healthz/ready"):
            reply = server.get(path)
            assert reply.status == 503, (path, reply.status, reply.body[:200])
            assert "journal" in reply.json()["error"]
        proxy.restore()
        wait_until(lambda: server.get("/raw").status == 200, 30, "the journal back")


@pytest.mark.slow
def test_a_hung_postgresql_costs_healthz_seconds_and_is_cut_and_logged(tmp_path: Path):
    from bridge.journal.postgres import CLIENT_TIMEOUT

    with web_over_proxied_postgresql(tmp_path) as (server, proxy):
        proxy.hang()  # connections stay open; no answer comes back
        started = time.monotonic()
        reply = server.get("/healthz/ready")
        answered = time.monotonic() - started
        assert reply.status == 503 and "no answer in 5 s" in reply.json()["error"]
        assert answered < 8, answered
        wait_until(
            lambda: "gave no answer in" in server.log_text(),
            CLIENT_TIMEOUT + 15,
            "the hung connection cut and logged",
        )
        proxy.restore()
        wait_until(lambda: server.get("/healthz/ready").status == 200, 30, "the journal back")

"""What 100 notification rules cost catching up on a 100,000-event journal.

    python bench/notify.py [--events 100000] [--rules 100]

Builds a journal of synthetic bug and upload events over 1,000 packages (a tenth of them
failing trust), then, in the same run and to the same local webhook endpoint:

- ``bridge notify`` with every rule starting at the beginning (its own process, a thread
  and a journal connection a rule, each rule walking its matches from the journal's
  indexes), timed until every rule's cursor reaches the journal's end;
- the baseline: a naive consumer that reads every event once and tests every rule on it in
  Python, posting each match as it goes (what a hand-written bus consumer does).

Prints events per second (rules x events covered per second, and journal events a second
per rule set) and deliveries per second for both, and their ratio.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.events import Event, Naming  # noqa: E402
from bridge.journal import JOURNAL_FILE, SqliteJournal  # noqa: E402

SECRET = "whsec_" + base64.b64encode(b"bench secret, 32 bytes long ....").decode()
PACKAGES = 1000
PEOPLE = 200


class Endpoint:
    """A webhook receiver counting what it took (and checking nothing: not what is timed)."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                with endpoint.lock:
                    endpoint.count += 1
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def build_journal(state: Path, events: int) -> None:
    rng = random.Random(7)
    topics = ["debbugs.bug.report", "debbugs.bug.followup", "debbugs.bug.closed",
              "dak.upload.accepted"]  # fmt: skip
    with SqliteJournal(state / JOURNAL_FILE, Naming()) as journal:
        batch = []
        for n in range(events):
            package = f"pkg{rng.randrange(PACKAGES)}"
            person = f"dev{rng.randrange(PEOPLE)}@debian.org"
            verdict = "fail" if rng.random() < 0.1 else "pass"
            batch.append(
                Event(
                    rng.choice(topics),
                    {
                        "summary": f"#{n} {package}: something happened",
                        "url": f"https://bugs.debian.org/{n}",
                        "agent": {"name": None, "email": person},
                        "origin": {"auth": {"verdict": verdict, "reason": "bench"}},
                    },
                    dedup_key=f"event-{n}",
                    packages=(package,),
                    bugs=(n,),
                    people=(person,),
                )
            )
            if len(batch) == 5000:
                journal.append(batch, "bench", live=False)
                batch = []
        journal.append(batch, "bench", live=False)


def rules(count: int) -> list[dict]:
    """A mix of what people ask for: their packages, their packages' closures or uploads
    vouched for, and what a person did."""
    found = []
    for n in range(count):
        kind = n % 4
        rule: dict = {"deliver": "", "start": "beginning", "secret": SECRET}
        if kind == 0:
            rule["package"] = [f"pkg{n}", f"pkg{n + 500}"]
        elif kind == 1:
            rule["package"] = [f"pkg{n}"]
            rule["topic"] = ["debbugs.bug.closed", "dak.upload.accepted"]
            rule["auth"] = ["pass"]
        elif kind == 2:
            rule["user"] = [f"dev{n % PEOPLE}@debian.org"]
        else:
            rule["package"] = [f"pkg{n}"]
            rule["category"] = ["debbugs"]
        found.append(rule)
    return found


def matches(rule: dict, envelope: dict) -> bool:
    """The baseline's matcher: the same filters, tested in Python on each envelope."""
    msg = envelope["msg"]
    topic = envelope["topic"]
    if "package" in rule and not set(rule["package"]) & set(envelope["index"]["packages"]):
        return False
    if "topic" in rule and not any(f".{t}" in topic for t in rule["topic"]):
        return False
    if "category" in rule and not any(f".{c}." in topic for c in rule["category"]):
        return False
    if "user" in rule and (msg.get("agent") or {}).get("email") not in rule["user"]:
        return False
    return not ("auth" in rule and msg["origin"]["auth"]["verdict"] not in rule["auth"])


def post(connection: http.client.HTTPConnection, path: str, body: bytes, msg_id: str) -> None:
    stamp = str(int(time.time()))
    key = base64.b64decode(SECRET[6:])
    mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    connection.request("POST", path, body, {
        "content-type": "application/json", "webhook-id": msg_id, "webhook-timestamp": stamp,
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
    })  # fmt: skip
    connection.getresponse().read()


def naive(state: Path, rule_set: list[dict], port: int) -> tuple[float, int]:
    """Every event read once, every rule tested on it, each match posted at once."""
    started = time.perf_counter()
    sent = 0
    connection = http.client.HTTPConnection("127.0.0.1", port)
    with SqliteJournal(state / JOURNAL_FILE, Naming()) as journal:
        position = 0
        while rows := journal.rows_after(position, 2000):
            for row in rows:
                envelope = json.loads(row.envelope)
                for n, rule in enumerate(rule_set):
                    if matches(rule, envelope):
                        body = json.dumps({"type": envelope["topic"], "data": envelope}).encode()
                        post(connection, f"/rule{n}", body, f"{n}.{envelope['msg_id']}")
                        sent += 1
            position = rows[-1].seq_id
    return time.perf_counter() - started, sent


def bridge_notify(state: Path, rule_set: list[dict], port: int) -> tuple[float, int]:
    config = state.parent / "bench.toml"
    lines = ["[trust]\ndns = false\n", "[notify]\npoll_interval = 0.2\n"]
    for n, rule in enumerate(rule_set):
        rule = dict(rule, deliver=f"http://127.0.0.1:{port}/rule{n}")
        lines.append(f"[notify.rules.r{n}]\n" + "".join(
            f"{k} = {json.dumps(v)}\n" for k, v in rule.items()))  # fmt: skip
    config.write_text("".join(lines))
    with SqliteJournal(state / JOURNAL_FILE, Naming()) as journal:
        last = journal.last_seq_id()
    started = time.perf_counter()
    log = open(state.parent / "notify.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "--config", str(config), "--state-dir", str(state),
         "notify"], stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        with SqliteJournal(state / JOURNAL_FILE, Naming()) as journal:
            while True:
                behind = [n for n in range(len(rule_set)) if journal.cursor(f"notify.r{n}") < last]
                if not behind:
                    break
                if proc.poll() is not None:
                    sys.exit(f"bridge notify ended: see {log.name}")
                print(f"\r  bridge notify: {len(rule_set) - len(behind)}/{len(rule_set)} rules"
                      " caught up", end="", flush=True)  # fmt: skip
                time.sleep(0.2)
            elapsed = time.perf_counter() - started
            counters = journal.counters()
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    print()
    delivered = sum(v for k, v in counters.items() if k.endswith(".delivered"))
    return elapsed, delivered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rules", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-notify-") as tmp:
        state = Path(tmp) / "state"
        state.mkdir()
        print(f"building a journal of {args.events:,} events ...", flush=True)
        build_journal(state, args.events)
        rule_set = rules(args.rules)
        endpoint = Endpoint()
        print(f"{args.rules} rules, cores: {os.cpu_count()}")
        base_time, base_sent = naive(state, rule_set, endpoint.port)
        print(f"  baseline (one pass, every rule in Python): {base_time:.1f} s, {base_sent} posts")
        ours_time, ours_sent = bridge_notify(state, rule_set, endpoint.port)
        print(f"  bridge notify: {ours_time:.1f} s, {ours_sent} deliveries")
        if ours_sent != base_sent:
            print(f"  MISMATCH: the baseline posted {base_sent}, bridge notify {ours_sent}")
        covered = args.events * args.rules
        for name, elapsed, sent in (("baseline", base_time, base_sent),
                                    ("bridge notify", ours_time, ours_sent)):  # fmt: skip
            print(f"{name:>14}: {args.events / elapsed:>10,.0f} journal events/s,"
                  f" {covered / elapsed:>12,.0f} rule-events/s, {sent / elapsed:>8,.0f}"
                  " deliveries/s")  # fmt: skip
        print(f"ratio (bridge notify / baseline, same run): {base_time / ours_time:.2f}x")


if __name__ == "__main__":
    main()

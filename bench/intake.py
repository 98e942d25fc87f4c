"""SMTP intake benchmark: the bridge against a naive spool, measured in the same run.

    python bench/intake.py [--mails 2000] [--rounds 3]

Prints mails/s for 1 and 8 concurrent clients sending 5 KB mails to `bridge serve` and to a
naive aiosmtpd spool (one file per mail, file and directory fsync'd inside the handler), the
ratio between them, and mail-to-subscriber latency (SMTP send start to the event arriving on
a SUB socket) for the bridge, flat out and paced at 100 mails/s. Each round runs the naive
spool and then the bridge, afresh; the disk's fsync time drifts by 2x from minute to minute on
a shared machine, so each round's ratio is printed and the median of the rounds summed up.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.mails import bug_report  # noqa: E402

MAIL_BYTES = 5 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


def sender(port: int, bugs: list[int], pace: float, out: multiprocessing.Queue) -> None:
    starts = {}
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        next_at = time.time()
        for bug in bugs:
            if pace:
                time.sleep(max(0.0, next_at - time.time()))
                next_at += pace
            raw = bug_report(bug, body_bytes=MAIL_BYTES - 600)
            started = time.time()
            smtp.sendmail("lists@example.org", ["bridge@localhost"], raw)
            starts[bug] = (started, (time.time() - started) * 1000)
    out.put(starts)


def run_clients(port: int, bugs: list[int], clients: int, pace: float = 0.0) -> tuple[float, dict]:
    out: multiprocessing.Queue = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(target=sender, args=(port, bugs[i::clients], pace * clients, out))
        for i in range(clients)
    ]
    started = time.perf_counter()
    for p in procs:
        p.start()
    starts: dict = {}
    for _ in procs:
        starts.update(out.get())
    for p in procs:
        p.join()
    return time.perf_counter() - started, starts


class Receiver(threading.Thread):
    def __init__(self, endpoint: str):
        super().__init__(daemon=True)
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.setsockopt_string(zmq.SUBSCRIBE, "")
        self.sock.connect(endpoint)
        self.arrivals: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        import json

        while not self.stop.is_set():
            if self.sock.poll(100):
                _, body = self.sock.recv_multipart()
                self.arrivals[json.loads(body)["msg"]["bug"]] = time.time()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_bridge(tmp: Path, mails: int) -> dict:
    port, pub = free_port(), f"tcp://127.0.0.1:{free_port()}"
    state = tmp / "bridge-state"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bridge",
            "--state-dir",
            str(state),
            "serve",
            "--smtp",
            f"127.0.0.1:{port}",
            "--publish",
            pub,
            "--replay",
            f"tcp://127.0.0.1:{free_port()}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    receiver = Receiver(pub)
    receiver.start()
    time.sleep(1.0)
    results = {}
    base = 1_000_000
    try:
        for label, clients, pace, count in (
            ("1 client", 1, 0.0, mails // 4),
            ("8 clients", 8, 0.0, mails),
            ("100 mails/s", 2, 0.01, 500),
        ):
            bugs = list(range(base, base + count))
            base += count
            elapsed, starts = run_clients(port, bugs, clients, pace)
            deadline = time.time() + 30
            while time.time() < deadline and not all(b in receiver.arrivals for b in bugs):
                time.sleep(0.05)
            latencies = [
                (receiver.arrivals[b] - starts[b][0]) * 1000 for b in bugs if b in receiver.arrivals
            ]
            results[label] = {
                "rate": count / elapsed,
                "p50": percentile(latencies, 0.5),
                "p99": percentile(latencies, 0.99),
                "missing": count - len(latencies),
                "smtp_p99": percentile([starts[b][1] for b in bugs], 0.99),
            }
    finally:
        receiver.stop.set()
        proc.terminate()
        proc.wait(30)
    return results


def bench_naive(tmp: Path, mails: int) -> dict:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "naive_spool.py"), str(tmp / "naive"), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    try:
        one, _ = run_clients(port, list(range(mails // 4)), 1)
        eight, _ = run_clients(port, list(range(mails)), 8)
    finally:
        proc.terminate()
        proc.wait(30)
    return {"1 client": (mails // 4) / one, "8 clients": mails / eight}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mails", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(
        "mail-to-subscriber: SMTP send start to the event on a SUB socket; "
        "SMTP p99: the whole MAIL/RCPT/DATA transaction"
    )
    ratios: dict[str, list[float]] = {"1 client": [], "8 clients": []}
    missing = 0
    for round_number in range(1, args.rounds + 1):
        tmp = Path(tempfile.mkdtemp(prefix="bridge-bench-"))
        try:
            naive = bench_naive(tmp, args.mails)
            bridge = bench_bridge(tmp, args.mails)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"round {round_number} of {args.rounds}")
        print_round(naive, bridge)
        for label, found in ratios.items():
            found.append(bridge[label]["rate"] / naive[label])
        missing += sum(b["missing"] for b in bridge.values())
    for label, found in ratios.items():
        print(
            f"{label}: bridge / naive spool, median of {len(found)} rounds "
            f"{statistics.median(found):.2f} (each: {', '.join(f'{r:.2f}' for r in found)})"
        )
    print(f"events that never reached the subscriber: {missing}")


def print_round(naive: dict, bridge: dict) -> None:
    header = ("naive mails/s", "bridge mails/s", "ratio", "p50 ms", "p99 ms", "SMTP p99")
    print(f"{'':12} " + " ".join(f"{h:>14}" for h in header))
    for label in ("1 client", "8 clients", "100 mails/s"):
        b = bridge[label]
        base = naive.get(label)
        cells = [
            f"{base:.0f}" if base else "-",
            f"{b['rate']:.0f}",
            f"{b['rate'] / base:.2f}" if base else "-",
            f"{b['p50']:.1f}",
            f"{b['p99']:.1f}",
            f"{b['smtp_p99']:.1f}",
        ]
        print(f"{label:12} " + " ".join(f"{c:>14}" for c in cells))


if __name__ == "__main__":
    main()

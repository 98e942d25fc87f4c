"""What the relay inbound takes: signed fedmsg messages from several publishers, checked and
journaled by ``bridge serve``, beside a bare ZeroMQ SUB socket that only receives them.

    python bench/relay.py [--messages 10000] [--publishers 4]

Signs every message in advance (fedmsg's X.509 scheme, a certificate per publisher, the
bench's own CA), then, in the same run, sends them from one PUB socket a publisher,
connected as fedmsg's active publishers connect: first to a bare SUB socket that counts
them (the baseline: what the transport carries), then to ``bridge serve``'s ``[relay]``,
timed until every message is journaled. Prints messages per second and the ratio.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import zmq
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.events import dumps  # noqa: E402

DAY = datetime.timedelta(days=1)
TOPIC = "org.debian.dev.bench.relayed"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def certificate(common_name: str, key, issuer_key, issuer_name, serial: int, ca: bool = False):
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name or name)
        .public_key(key.public_key()).serial_number(serial)
        .not_valid_before(now - DAY).not_valid_after(now + DAY)
    )  # fmt: skip
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    return builder.sign(issuer_key, hashes.SHA256())


def signed_messages(folder: Path, publishers: int, each: int) -> tuple[Path, list[list[bytes]]]:
    """The CA's certificate file, and each publisher's messages as (topic, JSON) frames."""
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = certificate("bench CA", ca_key, ca_key, None, 1, ca=True)
    ca_path = folder / "ca.crt"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    batches = []
    for p in range(publishers):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = certificate(f"publisher-{p}", key, ca_key, ca.subject, 10 + p)
        pem = base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode()
        frames = []
        for n in range(each):
            message = {
                "topic": TOPIC, "msg": {"publisher": p, "n": n}, "timestamp": int(time.time()),
                "msg_id": f"2026-{uuid.uuid4()}", "i": n + 1, "username": "bench",
                "crypto": "x509",
            }  # fmt: skip
            signature = key.sign(dumps(message).encode(), padding.PKCS1v15(), hashes.SHA1())
            message["signature"] = base64.b64encode(signature).decode()
            message["certificate"] = pem
            frames.append([TOPIC.encode(), dumps(message).encode()])
        batches.append(frames)
    return ca_path, batches


def send_all(endpoint: str, batches: list[list[list[bytes]]]) -> None:
    """One PUB socket a publisher, connected to *endpoint*, each sending its messages."""
    context = zmq.Context.instance()

    def publish(frames: list[list[bytes]]) -> None:
        sock = context.socket(zmq.PUB)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.LINGER, 60_000)
        sock.connect(endpoint)
        time.sleep(1.0)  # fedmsg's post_init_sleep: let the connection form
        for message in frames:
            sock.send_multipart(message)
        sock.close()

    threads = [threading.Thread(target=publish, args=(frames,)) for frames in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def bare(batches: list[list[list[bytes]]], total: int) -> float:
    """Seconds a bare SUB socket takes to receive every message (from the first one)."""
    context = zmq.Context.instance()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVHWM, 100_000)
    port = sub.bind_to_random_port("tcp://127.0.0.1")
    sender = threading.Thread(target=send_all, args=(f"tcp://127.0.0.1:{port}", batches))
    sender.start()
    sub.recv_multipart()
    started = time.perf_counter()
    for _ in range(total - 1):
        sub.recv_multipart()
    elapsed = time.perf_counter() - started
    sender.join()
    sub.close()
    return elapsed


def through_bridge(folder: Path, ca_path: Path, batches, total: int) -> float:
    """Seconds from the first message journaled to the last, through bridge serve."""
    relay = f"tcp://127.0.0.1:{free_port()}"
    config = folder / "bridge.toml"
    config.write_text(
        "[trust]\ndns = false\n"
        f'[relay]\nlisten = "{relay}"\nca_cert_location = "{ca_path}"\n'
        "rate_limit = 1000000.0\nrate_burst = 1000000\n"
    )
    state = folder / "state"
    log = open(folder / "serve.log", "wb")  # noqa: SIM115 - closed below
    serve = subprocess.Popen(
        [sys.executable, "-m", "bridge", "--config", str(config), "--state-dir", str(state),
         "serve", "--smtp", f"127.0.0.1:{free_port()}",
         "--publish", f"tcp://127.0.0.1:{free_port()}",
         "--replay", f"tcp://127.0.0.1:{free_port()}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        time.sleep(3)  # the relay binds once the pipeline process is up
        sender = threading.Thread(target=send_all, args=(relay, batches))
        sender.start()
        journal = state / "journal.sqlite3"
        first = None
        while True:
            count = 0
            if journal.exists():
                db = sqlite3.connect(journal, timeout=30)
                count = db.execute("SELECT COUNT(*) FROM events WHERE source='relay'").fetchone()[0]
                db.close()
            if count and first is None:
                first = time.perf_counter()
            print(f"\r  bridge serve: {count:,}/{total:,} journaled", end="", flush=True)
            if count >= total:
                break
            if serve.poll() is not None:
                sys.exit(f"bridge serve ended: see {log.name}")
            time.sleep(0.05)
        print()
        sender.join()
        return time.perf_counter() - (first or time.perf_counter())
    finally:
        serve.terminate()
        serve.wait(30)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--publishers", type=int, default=4)
    args = parser.parse_args()
    each = args.messages // args.publishers
    total = each * args.publishers
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as tmp:
        folder = Path(tmp)
        print(f"signing {total:,} messages from {args.publishers} publishers ...", flush=True)
        ca_path, batches = signed_messages(folder, args.publishers, each)
        baseline = bare(batches, total)
        print(f"  bare SUB socket: {total / baseline:,.0f} messages/s")
        ours = through_bridge(folder, ca_path, batches, total)
        print(f"  bridge relay (checked, journaled): {total / ours:,.0f} messages/s")
        print(f"ratio (bridge / bare socket, same run): {baseline / ours:.3f}x")
        print(json.dumps({"messages": total, "bare_per_s": total / baseline,
                          "bridge_per_s": total / ours}))  # fmt: skip


if __name__ == "__main__":
    main()

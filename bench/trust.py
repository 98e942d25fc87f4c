"""Trust verification cost: replay-mbox --jobs 1 with verification off and on, one run.

    python bench/trust.py [--mails 3000]

Builds the mixed mbox of bench/replay.py, signs every mail with a DKIM key of the bench's
own (as bugs.debian.org or ftp-master.debian.org, published in a key file: no DNS), and
prints mails/s of `replay-mbox --jobs 1` into a fresh journal with [trust] verify = false,
with DKIM verification, and with DKIM plus gpgv on every upload's .changes (Debian's
keyrings, when installed), each as a ratio to the run without verification.
"""

from __future__ import annotations

import argparse
import json
import mailbox
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import replay  # noqa: E402

from bridge.journal import JOURNAL_FILE, SqliteJournal  # noqa: E402
from tests import dkimkit  # noqa: E402

KEYRINGS = [
    k
    for k in (
        "/usr/share/keyrings/debian-keyring.gpg",
        "/usr/share/keyrings/debian-maintainers.gpg",
    )
    if os.path.exists(k)
]


def signed_mbox(source: Path, target: Path) -> int:
    bts = dkimkit.key("bugs.debian.org", "bench")
    ftp = dkimkit.key("ftp-master.debian.org", "bench")
    count = 0
    with open(target, "wb") as out:
        for message in mailbox.mbox(str(source), create=False):
            raw = message.as_bytes()
            signer = ftp if b"X-DAK" in raw.split(b"\n\n", 1)[0] else bts
            body = dkimkit.sign(raw, signer).replace(b"\nFrom ", b"\n>From ")
            out.write(replay.FROM_LINE + body.rstrip(b"\n") + b"\n\n")
            count += 1
    dkimkit.key_file(target.with_suffix(".keys"), bts, ftp)
    return count


def run(tmp: Path, mbox: Path, label: str, trust: str) -> dict:
    config = tmp / f"{label}.toml"
    config.write_text(f"[trust]\n{trust}\n")
    cmd = [
        sys.executable, "-m", "bridge", "--config", str(config), "--state-dir", str(tmp / label),
        "replay-mbox", "--json-summary", "--no-publish", "--jobs", "1", str(mbox),
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, check=True).stdout.decode()
    lines = [line for line in out.splitlines() if line.startswith('{"by_topic"')]
    summary = json.loads(lines[-1])
    with SqliteJournal(tmp / label / JOURNAL_FILE) as journal:
        rows = journal.rows_after(0, limit=10 * summary["mails"])
        summary["verdicts"] = Counter(
            e.msg["origin"]["auth"]["verdict"] for e in journal.envelopes(rows)
        )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mails", type=int, default=3000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bridge-trust-bench-"))
    try:
        plain = tmp / "plain.mbox"
        replay.build_mbox(plain, args.mails)
        mbox = tmp / "signed.mbox"
        count = signed_mbox(plain, mbox)
        keys = mbox.with_suffix(".keys")
        print(f"mbox: {count} DKIM-signed mails, {mbox.stat().st_size / 1e6:.1f} MB")
        runs = [
            ("verification off", run(tmp, mbox, "off", "verify = false")),
            (
                "DKIM (key file, no DNS)",
                run(tmp, mbox, "dkim", f'dns = false\ndkim_keys = "{keys}"\nkeyrings = []'),
            ),
        ]
        if KEYRINGS:
            rings = json.dumps(KEYRINGS)
            runs.append(
                (
                    "DKIM + gpgv on uploads",
                    run(
                        tmp, mbox, "gpgv", f'dns = false\ndkim_keys = "{keys}"\nkeyrings = {rings}'
                    ),
                )
            )
        else:
            print("(Debian's keyrings are not installed: no gpgv run)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = runs[0][1]["rate"]
    print(f"{'replay-mbox --jobs 1':28} {'mails/s':>9} {'vs off':>7}  verdicts")
    for label, summary in runs:
        verdicts = ", ".join(f"{k} {v}" for k, v in sorted(summary["verdicts"].items()))
        print(f"{label:28} {summary['rate']:9.0f} {summary['rate'] / base:7.2f}  {verdicts}")


if __name__ == "__main__":
    main()

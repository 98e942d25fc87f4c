"""replay-mbox benchmark: the bridge's replay against bare mailbox + email parsing, one run.

    python bench/replay.py [--mails 20000]
    python bench/replay.py --memory 100 400     # peak RSS of --jobs 1 and 2 by archive size

Builds a mixed mbox of real mail: the corpus's (../shared/corpus, 611 bug-tracker and archive
mails) cycled, each copy made a fact of its own; without the corpus, the project's fixtures
(reports, follow-ups with patches, closures, control transcripts, uploads), each copy with
its own bug number or version. Then prints
mails/s for: bare `mailbox.mbox` + `email.message_from_bytes` (the floor), `replay-mbox
--dry-run`, and `replay-mbox` into a fresh journal with --jobs 1 and --jobs 2, with each
run's peak RSS.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import mailbox
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.mail import strip_from_line  # noqa: E402

FIXTURES = ROOT / "fixtures"
FROM_LINE = b"From archive@lists.debian.org Mon Jan  1 00:00:00 2024\n"
TEMPLATES = {  # fixture, the strings that must differ between copies
    "debbugs/report.eml": [b"1056001"],
    "debbugs/followup-modern-quirks.eml": [b"1054644"],
    "debbugs/closed-marked-as-done.eml": [b"476162"],
    "debbugs/control-transcript.eml": [b"1073831", b"17188348112844082"],
    "dak/accepted-2008-latin1-qp.eml": [b"2.10-3"],
}
WEIGHTS = [40, 25, 20, 5, 10]
PARAGRAPH = (
    b"When I run the program with the default configuration it prints a warning\n"
    b"and then exits; the log shows the lines quoted below.\n\n"
)
PATCH = b"".join(b"+    line %d of a patch that changes the build\n" % n for n in range(120))


CORPUS = ROOT.parent / "shared" / "corpus"
_HANDLER = re.compile(rb"(handler\.[^@\s>]*?)(\d{10,})")
_MESSAGE_ID = re.compile(rb"^(Message-ID:\s*<)", re.I | re.M)
_VERSIONS = (  # where an upload's version shows: its .changes, its file names
    re.compile(rb"^Version: (\S+)", re.M),
    re.compile(rb"[a-z0-9][a-z0-9.+-]+_([0-9][A-Za-z0-9.+:~-]*)_[a-z0-9-]+\.changes"),
)


def build_mbox(path: Path, count: int) -> None:
    """The corpus's real mail when it is there (each copy its own fact), else the fixtures."""
    if CORPUS.is_dir():
        corpus_mbox(path, count)
    else:
        fixture_mbox(path, count)


def corpus_mbox(path: Path, count: int) -> None:
    """*count* mails cycling through the corpus in a shuffled order, copy n of each made a
    new fact: its debbugs handler id, Message-ID and (uploads) version carry n."""
    mails = [strip_from_line(p.read_bytes()) for p in sorted(CORPUS.glob("mails/*/*.eml"))]
    random.Random(7).shuffle(mails)
    with open(path, "wb") as out:
        for n in range(count):
            raw, copy = mails[n % len(mails)], n // len(mails)
            if copy:
                raw = _HANDLER.sub(lambda m, c=copy: m[1] + str(int(m[2]) + c).encode(), raw)
                raw = _MESSAGE_ID.sub(b"\\1copy%d." % copy, raw)
                versions = {v for pattern in _VERSIONS for v in pattern.findall(raw)}
                for version in versions:  # an upload's key is its source and version
                    raw = raw.replace(version, version + b"+copy%d" % copy)
            body = raw.replace(b"\nFrom ", b"\n>From ")
            out.write(FROM_LINE + body.rstrip(b"\n") + b"\n\n")


def average_mail_bytes() -> float:
    """About how large a mail of build_mbox's is (to build an mbox of a given size)."""
    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(tmp) / "sample.mbox"
        build_mbox(sample, 1000)
        return sample.stat().st_size / 1000


def fixture_mbox(path: Path, count: int) -> None:
    rng = random.Random(7)
    templates = [strip_from_line((FIXTURES / name).read_bytes()) for name in TEMPLATES]
    keys = list(TEMPLATES.values())
    with open(path, "wb") as out:
        for n in range(count):
            index = rng.choices(range(len(templates)), WEIGHTS)[0]
            raw = templates[index]
            for key in keys[index]:
                raw = raw.replace(key, _unique(key, n))
            if index == 0:  # reports: a few KB of text
                raw += PARAGRAPH * rng.randint(2, 40)
            if index == 1 and n % 3 == 0:  # some follow-ups carry a larger patch
                raw = raw.replace(
                    b"LS0tIGEvZGViaWFuL2NvbnRyb2wKKysrIGIvZGViaWFuL2NvbnRyb2wK", _base64(PATCH)
                )
            body = raw.replace(b"\nFrom ", b"\n>From ")
            out.write(FROM_LINE + body.rstrip(b"\n") + b"\n\n")


def _unique(key: bytes, n: int) -> bytes:
    if key == b"2.10-3":
        return b"2.10-%d" % (n + 10)
    return str(int(key) + n + 1).encode()


def _base64(data: bytes) -> bytes:
    import base64

    return base64.encodebytes(data).rstrip(b"\n")


def floor_rate(path: Path) -> float:
    started = time.perf_counter()
    count = 0
    for message in mailbox.mbox(str(path), create=False):
        email.message_from_bytes(message.as_bytes(), policy=email.policy.compat32)
        count += 1
    return count / (time.perf_counter() - started)


def floor_in_child(path: Path) -> tuple[float, float]:
    """The floor, measured in a child: a child forked from a big parent inherits its RSS."""
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import replay; "
        f"print(replay.floor_rate(__import__('pathlib').Path({str(path)!r})))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    out = proc.stdout.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError("the floor measurement failed")
    return float(out), usage.ru_maxrss / 1024


def run_replay(state: Path, path: Path, *args: str) -> tuple[dict, float]:
    cmd = [
        sys.executable,
        "-m",
        "bridge",
        "--state-dir",
        str(state),
        "replay-mbox",
        "--json-summary",
        *args,
        str(path),
    ]
    # With --dry-run the events go to stdout (discarded here: read into this process, they
    # would swell every child forked after it) and the summary to stderr.
    dry = "--dry-run" in args
    with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as err_file:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL if dry else out_file, stderr=err_file
        )
        _, status, usage = os.wait4(proc.pid, 0)
        out_file.seek(0)
        err_file.seek(0)
        out = out_file.read() + b"\n" + err_file.read()
    if status != 0:
        raise RuntimeError(f"replay-mbox failed: {cmd}: {out[-2000:]!r}")
    lines = [line for line in out.decode().splitlines() if line.startswith('{"by_topic"')]
    return json.loads(lines[-1]), usage.ru_maxrss / 1024


def memory_table(sizes_mb: list[int]) -> None:
    """Peak RSS of replay-mbox by archive size: flat is the target, whatever --jobs."""
    print(f"{'mbox MB':>8} {'mails':>8} {'jobs':>5} {'mails/s':>9} {'peak RSS MB':>12}")
    for size_mb in sizes_mb:
        tmp = Path(tempfile.mkdtemp(prefix="bridge-replay-mem-"))
        try:
            mbox = tmp / "mixed.mbox"
            build_mbox(mbox, int(size_mb * 1e6 / average_mail_bytes()))
            real_mb = mbox.stat().st_size / 1e6
            for jobs in ("1", "2"):
                summary, rss = run_replay(tmp / f"jobs{jobs}", mbox, "--no-publish", "--jobs", jobs)
                print(
                    f"{real_mb:8.0f} {summary['mails']:8} {jobs:>5} {summary['rate']:9.0f}"
                    f" {rss:12.0f}",
                    flush=True,
                )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mails", type=int, default=20_000)
    parser.add_argument("--memory", type=int, nargs="+", metavar="MB", help="archive sizes")
    args = parser.parse_args()
    if args.memory:
        memory_table(args.memory)
        return
    tmp = Path(tempfile.mkdtemp(prefix="bridge-replay-bench-"))
    try:
        mbox = tmp / "mixed.mbox"
        build_mbox(mbox, args.mails)
        size = mbox.stat().st_size
        print(f"mbox: {args.mails} mails, {size / 1e6:.1f} MB")
        floor, floor_rss = floor_in_child(mbox)
        dry, dry_rss = run_replay(tmp / "dry", mbox, "--dry-run")
        one, one_rss = run_replay(tmp / "jobs1", mbox, "--jobs", "1")
        two, two_rss = run_replay(tmp / "jobs2", mbox, "--jobs", "2")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'':32} {'mails/s':>9} {'vs floor':>9} {'peak RSS MB':>12}")
    print(f"{'floor: mailbox + message_from_bytes':32} {floor:9.0f} {1.0:9.2f} {floor_rss:12.0f}")
    for label, summary, rss in (
        ("replay-mbox --dry-run", dry, dry_rss),
        ("replay-mbox --jobs 1 (journal)", one, one_rss),
        ("replay-mbox --jobs 2 (journal)", two, two_rss),
    ):
        print(f"{label:32} {summary['rate']:9.0f} {summary['rate'] / floor:9.2f} {rss:12.0f}")
    print(
        f"events journaled: {one['events']} ({json.dumps(one['by_topic'], sort_keys=True)}); "
        f"failed {one['failed']}, ignored {one['ignored']}, duplicates {one['duplicates']}"
    )


if __name__ == "__main__":
    main()

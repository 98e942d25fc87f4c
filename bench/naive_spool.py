"""Baseline for bench/intake.py: aiosmtpd with one fsync'd file per mail inside the handler."""

from __future__ import annotations

import os
import signal
import sys
import threading
import uuid
from pathlib import Path

from aiosmtpd.controller import Controller


class NaiveSpool:
    def __init__(self, root: Path):
        self.tmp = root / "tmp"
        self.new = root / "new"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.new.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server, session, envelope) -> str:
        name = f"{uuid.uuid4().hex}.eml"
        with open(self.tmp / name, "wb") as fh:
            fh.write(envelope.original_content)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(self.tmp / name, self.new / name)
        fd = os.open(self.new, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        return "250 OK"


def main() -> None:
    root, port = Path(sys.argv[1]), int(sys.argv[2])
    controller = Controller(NaiveSpool(root), hostname="127.0.0.1", port=port)
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()

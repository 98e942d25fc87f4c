"""Mail the spool keeps aside, in one layout whatever the folder (``inbox/``, ``failed/``,
``held/``, ``rejected/``, ``ignored/``, ``damaged/``): the mail as ``<id>.eml`` (damaged
bytes as ``<id>.bin``), and beside it ``<id>.reason``, why it was kept, first line first.

Everything that lists, shows, moves or removes such a mail goes through here, so the layout
is known in one place.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.files import write_private

MAIL = ".eml"
REASON = ".reason"


@dataclass(frozen=True)
class Kept:
    """One kept mail: its id, file, when it was kept, and the first line of its reason."""

    id: str
    path: Path
    kept_at: float
    reason: str

    @property
    def kept_at_iso(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.kept_at))


def store(folder: Path, name: str, raw: bytes, reason: str, meta: dict[str, Any]) -> Path:
    """Keep *raw* in *folder* as *name* (``<id>.eml`` or ``<id>.bin``), synced, with its
    reason and the SMTP envelope *meta* beside it."""
    path = folder / name
    write_private(path, raw, sync=True)
    text = f"{reason}\n\nenvelope: {json.dumps(meta, sort_keys=True)}\n"
    write_private(path.with_suffix(REASON), text.encode("utf-8"))
    return path


def reason_of(path: Path) -> str:
    """The whole reason kept beside *path* ("" when there is none)."""
    beside = path.with_suffix(REASON)
    return beside.read_text(encoding="utf-8") if beside.exists() else ""


def listed(folder: Path) -> list[Kept]:
    """Every mail kept in *folder*, by id."""
    return [
        Kept(path.stem, path, path.stat().st_mtime, reason_of(path).split("\n", 1)[0])
        for path in sorted(folder.glob(f"*{MAIL}"))
    ]


def find(folder: Path, kept_id: str) -> Path | None:
    """The mail *kept_id* (an id, or a file name) in *folder*, or None."""
    path = folder / f"{Path(kept_id).stem}{MAIL}"
    return path if path.is_file() else None


def shown(path: Path) -> str:
    """A kept mail as an operator reads it: the reason, a blank line, the mail."""
    reason = reason_of(path).rstrip("\n")
    mail = path.read_bytes().decode("utf-8", "replace")
    return f"{reason}\n\n{mail}" if reason else f"\n{mail}"


def remove(path: Path) -> None:
    """Forget a kept mail and its reason (it was published after all)."""
    path.unlink(missing_ok=True)
    path.with_suffix(REASON).unlink(missing_ok=True)


def move(path: Path, folder: Path, why: str) -> Path:
    """Move a kept mail to *folder*, its reason headed by *why*."""
    reason = reason_of(path)
    write_private(folder / f"{path.stem}{REASON}", f"{why}\n{reason}".encode())
    moved = folder / path.name
    path.replace(moved)
    path.with_suffix(REASON).unlink(missing_ok=True)
    return moved

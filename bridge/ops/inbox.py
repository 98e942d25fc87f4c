"""The operator's inbox: mail no parser wanted, kept with its reason in ``spool/inbox/``.

After subscribing the bridge's address to a list, the first mail is the list server's
confirmation request; later come welcome notices and bounce reports. None is Debian's
news, all may need a person. ``bridge inbox`` lists and shows them and forwards one through
the host's MTA; ``[inbox] forward_to`` forwards each as it arrives.
"""

from __future__ import annotations

import logging
import smtplib
import time
from dataclasses import dataclass
from email.utils import formatdate, make_msgid
from pathlib import Path

from bridge.config import InboxConfig, parse_hostport
from bridge.intake import kept
from bridge.mail import header, parse_message

log = logging.getLogger(__name__)

FORWARDED = ".forwarded"  # beside a mail: to whom and when it was forwarded


@dataclass(frozen=True)
class Entry:
    id: str
    path: Path
    received: float
    subject: str
    sender: str
    reason: str
    forwarded: str  # "" or "to <address> at <time>", one line per forward


def entries(folder: Path) -> list[Entry]:
    found = []
    for path in sorted(folder.glob("*.eml")):
        message = parse_message(path.read_bytes())
        note = path.with_suffix(FORWARDED)
        found.append(
            Entry(
                path.stem,
                path,
                path.stat().st_mtime,
                header(message, "Subject"),
                header(message, "From"),
                kept.reason_of(path).split("\n", 1)[0],
                note.read_text(encoding="utf-8").strip() if note.exists() else "",
            )
        )
    return found


def forward(path: Path, to: str, config: InboxConfig) -> None:
    """Hand the kept mail to the MTA for *to*, whole, with Resent-* headers on top (RFC 5322
    §3.6.6), and note it beside the mail."""
    raw = path.read_bytes()
    sender = config.sender
    resent = (
        f"Resent-From: {sender}\r\nResent-To: {to}\r\nResent-Date: {formatdate()}\r\n"
        f"Resent-Message-ID: {make_msgid('inbox')}\r\n"
    ).encode()
    host, port = parse_hostport(config.smtp)
    with smtplib.SMTP(host, port, timeout=60) as smtp:
        smtp.sendmail(sender, [to], resent + raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    note = path.with_suffix(FORWARDED)
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    previous = note.read_text(encoding="utf-8") if note.exists() else ""
    note.write_text(f"{previous}to {to} at {when}\n", encoding="utf-8")


class AutoForward:
    """``[inbox] forward_to``: forward each new inbox mail once, as it is kept."""

    def __init__(self, config: InboxConfig):
        self.config = config

    def __call__(self, path: Path) -> None:
        if path.with_suffix(FORWARDED).exists():
            return  # kept again after a retried batch: forwarded already
        try:
            forward(path, self.config.forward_to, self.config)
            log.info("inbox: forwarded %s to %s", path.name, self.config.forward_to)
        except (OSError, smtplib.SMTPException) as e:
            log.warning(
                "inbox: could not forward %s to %s (%s); 'bridge inbox forward' can retry",
                path.name,
                self.config.forward_to,
                e,
            )

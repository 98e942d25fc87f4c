"""Mails the tests build: debbugs reports with their own bug number and handler id."""

from __future__ import annotations


def bug_report(
    bug: int, *, body_bytes: int = 0, subject: str = "crashes on start", package: str = "hello"
) -> bytes:
    """A debbugs list copy of a new report for *bug* against *package* (a source package of
    the same name); each bug number is one dedup key."""
    line = "lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod\r\n"
    filler = (line * (body_bytes // len(line) + 1))[:body_bytes]
    lines = [
        "X-Loop: owner@bugs.debian.org",
        f"Subject: Bug#{bug}: {package}: {subject}",
        f"Resent-Message-ID: <handler.{bug}.B.17{bug:011d}@bugs.debian.org>",
        f"X-Debian-PR-Message: report {bug}",
        f"X-Debian-PR-Package: {package}",
        "X-Debian-PR-Keywords: ",
        f"X-Debian-PR-Source: {package}",
        "From: Jane Doe <jane@example.org>",
        f"Message-ID: <report-{bug}@example.org>",
        "Date: Tue, 14 Nov 2023 23:13:00 +0100",
        "Content-Type: text/plain; charset=utf-8",
        "",
        f"Package: {package}",
        "Version: 2.10-3",
        "",
        f"Bug {bug} body. {filler}",
        "",
    ]
    return "\r\n".join(lines).encode()

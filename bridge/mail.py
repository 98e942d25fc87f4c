"""Reading mail safely: the helpers every parser needs, written once.

Headers are decoded (RFC 2047, any declared charset, raw 8-bit bytes, invalid sequences
replaced) and unfolded; bodies are decoded on demand. Nothing here raises on odd input.
"""

from __future__ import annotations

import codecs
import email
import email.header
import email.parser
import email.policy
import email.utils
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.feedparser import FeedParser
from email.message import Message
from typing import Any

_FOLD = re.compile(r"\r?\n[ \t]*")
_SPACES = re.compile(r"[ \t]+")
_SURROGATE = re.compile("[\ud800-\udfff]")
PATCH_SUFFIXES = (".patch", ".diff", ".debdiff", ".dpatch")
PATCH_TYPES = (
    "text/x-diff",
    "text/x-patch",
    "text/x-debdiff",
    "application/x-patch",
    "application/x-diff",
)


def strip_from_line(raw: bytes) -> bytes:
    """Drop a leading mbox ``From `` separator line, if there is one."""
    if raw.startswith(b"From "):
        end = raw.find(b"\n")
        return raw[end + 1 :] if end >= 0 else b""
    return raw


_HEADER_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+):")
_BLANK_LINE = re.compile(rb"\n\r?\n")
_BARE_CR = re.compile(rb"\r(?!\n)")


def header_block(raw: bytes) -> bytes:
    """*raw*'s header block as RFC 5322 reads it: up to the first empty line (a line ends
    at CRLF or LF), without that last line end. The body is never looked at."""
    start = raw.find(b"\n") + 1 if raw.startswith(b"From ") else 0  # an mbox From_ line
    if start == 0 and raw.startswith(b"From "):
        return b""
    if raw.startswith((b"\n", b"\r\n"), start):
        return b""
    blank = _BLANK_LINE.search(raw, start)  # no copy of the whole mail: it may be large
    return raw[start : blank.start() if blank else len(raw)].removesuffix(b"\r")


def header_block_problem(raw: bytes) -> str | None:
    """Why the header block of *raw* could be read two ways, or None when it cannot.

    RFC 5322 ends a line at CRLF, and mail arrives with CRLF or LF line ends: that is how
    DKIM verifiers read a header block. The stdlib's parser also ends a line at a bare CR,
    so a bare CR inside a header line makes a header that only the parsers see (a
    ``Subject:``, a ``DKIM-Signature:`` that shifts every other one). Such a mail has no
    single reading and is refused before anything looks at it.
    """
    head = header_block(raw)
    if head.count(b"\r") == head.count(b"\r\n"):
        return None
    bare = _BARE_CR.search(head)
    number = head.count(b"\n", 0, bare.start() if bare else len(head)) + 1
    return (
        f"header line {number} holds a bare CR (RFC 5322 forbids it; mail readers split"
        " such a line differently)"
    )


def header_field_count(raw: bytes) -> int:
    """How many fields *raw*'s header block holds as RFC 5322 reads it (its lines that do
    not continue another): a cheap first comparison with a parser's count."""
    head = header_block(raw)
    if not head:
        return 0
    return head.count(b"\n") + 1 - head.count(b"\n ") - head.count(b"\n\t")


def header_names(raw: bytes) -> list[str] | None:
    """The names of *raw*'s header fields, in order, as RFC 5322 reads the block (lines end
    at CRLF or LF, a line starting with white space continues a field); None when a line of
    the block is neither a field nor a continuation."""
    head = header_block(raw)
    names: list[str] = []
    for line in head.split(b"\n") if head else []:
        if line[:1] in (b" ", b"\t") and names:
            continue
        match = _HEADER_NAME.match(line)
        if match is None:
            return None
        names.append(match.group(1).decode("ascii").lower())
    return names


def parse_message(raw: bytes) -> Message:
    """Parse raw mail bytes (stdlib ``compat32``: the fastest full parse, tolerant of defects)."""
    return Mail(raw).message()


_BODY_HEADERS = ("content-type", "content-transfer-encoding")  # what email.feedparser reads


class Mail:
    """One mail, its headers read first and its body parsed only when :meth:`message` is
    asked for: most of a mail's parsing cost is its body, and a mail no parser accepts
    needs none of it. :meth:`message` is exactly what :func:`parse_message` gives.
    """

    def __init__(self, raw: bytes):
        self._text = strip_from_line(raw).decode("ascii", "surrogateescape")
        self._message: Message | None = None
        self._body_at = 0
        self.headers = self._read_headers()

    def message(self) -> Message:
        """The whole mail, parsed."""
        if self._message is None:
            self._message = self._with_body()
        return self._message

    def _read_headers(self) -> Message:
        end = _header_end(self._text)
        if end is not None:
            head, self._body_at = end
            headers = email.parser.HeaderParser(policy=email.policy.compat32).parsestr(
                self._text[:head], headersonly=True
            )
            if not headers.get_payload():  # the stdlib took every line there as a header
                return headers
        # An odd header block (bare CR line ends, a line that is no header, no blank line):
        # the stdlib decides where it ends, on the whole mail.
        self._message = email.message_from_string(self._text, policy=email.policy.compat32)
        return self._message

    def _with_body(self) -> Message:
        """The body parsed under the headers the stdlib's parse of a body reads, then given
        all the mail's headers as they were read."""
        parser = FeedParser(policy=email.policy.compat32)
        for name in _BODY_HEADERS:
            value = next((v for k, v in self.headers.raw_items() if k.lower() == name), None)
            if value is not None:
                parser.feed(f"{name}: {value}\n")
        parser.feed("\n")
        parser.feed(self._text[self._body_at :])
        message = parser.close()
        for name in _BODY_HEADERS:
            del message[name]
        for name, value in self.headers.raw_items():
            message.set_raw(name, value)
        message.set_unixfrom(self.headers.get_unixfrom())
        message.defects[:0] = self.headers.defects
        return message


def _header_end(text: str) -> tuple[int, int] | None:
    """Where a mail's header block ends and its body begins, when its line ends are plain
    LF or CRLF; None when the stdlib's own reading is needed."""
    found = [
        (at, at + len(blank) - len(blank) // 2, at + len(blank))
        for blank in ("\n\n", "\r\n\r\n")
        if (at := text.find(blank)) >= 0
    ]
    if not found:
        return None
    _, head, body = min(found)
    if text.startswith(("\n", "\r\n")):
        return None  # no headers at all
    if text.count("\r", 0, head) != text.count("\r\n", 0, head):
        return None  # a bare CR ends a line for the stdlib
    return head, body


def decode_bytes(data: bytes, charset: str | None = None) -> str:
    """Decode *data* in its declared *charset*; undeclared or unusable, try UTF-8 then cp1252.

    Only text codecs are honoured (a mail may declare ``zlib_codec`` or ``idna``), a codec
    that fails is treated as undeclared, and the result never holds a lone surrogate.
    """
    codec = _text_codec(charset)
    if codec is not None:
        try:
            return without_surrogates(data.decode(codec, errors="replace"))
        except Exception:  # a codec that cannot "replace" (idna) or fails on odd input
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _text_codec(charset: str | None) -> str | None:
    if not charset or charset.lower() in ("unknown-8bit", "x-unknown", "8bit"):
        return None
    try:
        info = codecs.lookup(charset)
    except (LookupError, ValueError, TypeError):
        return None
    return info.name if getattr(info, "_is_text_encoding", True) else None


def without_surrogates(text: str) -> str:
    """*text* with lone surrogates (UTF-7 and surrogate-escape leftovers) replaced by U+FFFD."""
    if text.isascii():  # most text, known without a copy: Python marks ASCII strings
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)


def decode_header_value(value: Any) -> str:
    """A header's text: encoded words decoded, folding removed, never raising."""
    if value is None:
        return ""
    if isinstance(value, email.header.Header):
        # compat32 wraps headers holding raw 8-bit bytes in a Header of unknown-8bit chunks.
        parts = email.header.decode_header(value)
        text = "".join(_chunk_text(data, charset) for data, charset in parts)
        return decode_header_value(text) if "=?" in text else _tidy(text)
    text = str(value)
    if "=?" not in text:
        return _tidy(_unsurrogate(text))
    try:
        parts = email.header.decode_header(_FOLD.sub(" ", text))
    except Exception:  # any malformed encoded word: keep the text as it stands
        return _tidy(_unsurrogate(text))
    out = []
    for data, charset in parts:
        out.append(data if isinstance(data, str) else decode_bytes(data, charset))
    return _tidy("".join(_join_encoded(parts, out)))


def _join_encoded(parts: list[tuple[Any, str | None]], texts: list[str]) -> list[str]:
    # decode_header drops the space between an encoded word and plain text; put it back.
    result: list[str] = []
    for index, ((_, charset), text) in enumerate(zip(parts, texts, strict=True)):
        switched = index > 0 and (charset is None) != (parts[index - 1][1] is None)
        if switched and result and not result[-1].endswith(" ") and not text.startswith(" "):
            result.append(" ")
        result.append(text)
    return result


def _chunk_text(value: Any, charset: Any) -> str:
    if isinstance(value, bytes):
        return decode_bytes(value, str(charset) if charset else None)
    return _unsurrogate(str(value))


def _unsurrogate(text: str) -> str:
    # compat32 keeps raw 8-bit header bytes as surrogate escapes; decode them for real.
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return decode_bytes(text.encode("ascii", "surrogateescape"))
    except UnicodeEncodeError:  # a surrogate that is no escaped byte
        return without_surrogates(text)


def _tidy(text: str) -> str:
    return without_surrogates(_SPACES.sub(" ", _FOLD.sub(" ", text)).strip())


def header(message: Message, name: str) -> str:
    """The decoded value of header *name*, or ``""``."""
    return decode_header_value(message.get(name))


def address(value: str) -> dict[str, str | None]:
    """``{"name", "email"}`` of one address header value (already decoded)."""
    name, mail = email.utils.parseaddr(value)
    return {"name": name.strip() or None, "email": mail.strip() or None}


def message_id(message: Message) -> str | None:
    value = header(message, "Message-ID")
    return value or None


def iso_date(value: str) -> str | None:
    """An RFC 2822 date as ISO 8601 UTC (``2008-04-20T19:27:29Z``), or None."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError):
        return None


def utc_iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def part_text(part: Message) -> str:
    """The decoded text of a non-multipart *part*, with ``\n`` line ends.

    Mail arrives over SMTP with CRLF line ends and from archives with LF; events must not
    depend on which.
    """
    payload = part.get_payload(decode=True)
    if payload is None:
        raw = part.get_payload()
        text = raw if isinstance(raw, str) else ""
    else:
        text = decode_bytes(payload, part.get_content_charset())
    return text.replace("\r\n", "\n")


def is_attachment(part: Message) -> bool:
    disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
    return disposition == "attachment" or bool(part.get_filename())


def first_text_part(message: Message) -> Message | None:
    """The first inline text/plain part, not descending into attached messages."""
    if not message.is_multipart():
        return message if message.get_content_type() in ("text/plain", "text") else None
    for part in message.get_payload():
        if not isinstance(part, Message) or part.get_content_type() == "message/rfc822":
            continue
        if part.is_multipart():
            found = first_text_part(part)
            if found is not None:
                return found
        elif part.get_content_type() == "text/plain" and not is_attachment(part):
            return part
    return None


def text_body(message: Message, cap: int) -> str:
    """The decoded text/plain body, at most *cap* characters."""
    part = first_text_part(message)
    return part_text(part)[:cap] if part is not None else ""


def patches(message: Message) -> list[dict[str, Any]]:
    """Attachments that are patches: ``filename``, ``content_type``, ``size`` (decoded bytes)."""
    found = []
    for part in message.walk():
        if part.is_multipart() or part is message:
            continue
        filename = decode_header_value(part.get_filename() or "") or None
        ctype = part.get_content_type()
        by_name = bool(filename) and filename.lower().endswith(PATCH_SUFFIXES)
        if by_name or ctype in PATCH_TYPES:
            payload = part.get_payload(decode=True) or b""
            found.append({"filename": filename, "content_type": ctype, "size": len(payload)})
    return found


SIGNED_START = b"-----BEGIN PGP SIGNED MESSAGE-----"
SIGNATURE_START = b"-----BEGIN PGP SIGNATURE-----"
SIGNATURE_END = b"-----END PGP SIGNATURE-----"


@dataclass(frozen=True)
class Clearsigned:
    """An OpenPGP clearsigned block as it stands in a mail part's bytes (armour included:
    what gpgv checks) and the charset that part declares."""

    block: bytes
    charset: str | None

    def text(self) -> str:
        """The signed text itself, decoded: what the signature covers and nothing else."""
        return decode_bytes(cleartext(self.block), self.charset)


def clearsigned(message: Message) -> Clearsigned | None:
    """The first clearsigned block in the bytes of the mail's text parts (transfer encoding
    undone, nothing else): a block that only shows after decoding a charset (UTF-16, UTF-7)
    is none, for no OpenPGP tool would check it."""
    for part in message.walk():
        if part.is_multipart() or part.get_content_type() != "text/plain":
            continue
        try:
            data = part.get_payload(decode=True) or b""
        except Exception:  # a broken transfer encoding: nothing verifiable here
            continue
        start = data.find(SIGNED_START)
        end = data.find(SIGNATURE_END, start)
        if start >= 0 and end > start:
            block = data[start : end + len(SIGNATURE_END)] + b"\n"
            return Clearsigned(block, part.get_content_charset())
    return None


def cleartext(block: bytes) -> bytes:
    """The text a clearsigned *block* signs, as OpenPGP hashes it (RFC 4880 §7.1): after
    the armour headers, up to the signature, dash-escapes undone, trailing white space
    dropped from each line, lines joined by LF."""
    lines = block.split(b"\n")
    at = 1
    while at < len(lines) and lines[at].strip():
        at += 1  # the armour headers (Hash: ...), up to the blank line
    text = []
    for line in lines[at + 1 :]:
        if line.rstrip(b"\r").startswith(SIGNATURE_START):
            break
        text.append(line.removeprefix(b"- ").rstrip(b" \t\r"))
    return b"\n".join(text)


def list_id(message: Message) -> str | None:
    value = header(message, "List-Id")
    if not value:
        return None
    match = re.search(r"<([^>]+)>", value)
    return match.group(1) if match else value

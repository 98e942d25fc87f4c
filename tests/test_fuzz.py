"""Fuzzing: real mails, mutated as a hostile sender would, through the pipeline and the journal.

Seeds are the project's fixtures and, when present, the shared corpus. Mutations touch
headers (encoded words in every kind of codec, numbers beyond 64 bits), MIME structure
(boundaries, nesting, charsets, transfer encodings) and raw bytes (insertions,
truncation). The property: nothing escapes ``Pipeline.process``, every mail ends as
events, ``failed`` or ``ignored``, and the journal takes every event produced.

``BRIDGE_FUZZ_EXAMPLES`` sets how many mails are tried (CI runs the default).
"""

from __future__ import annotations

import base64
import email
import email.policy
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.journal import SqliteJournal
from bridge.mail import Mail, strip_from_line
from bridge.pipeline import FAILED, IGNORED, PUBLISHED, Pipeline
from bridge.pipeline.plugins import discover
from tests.helpers import CORPUS, FIXTURES, bridge

EXAMPLES = int(os.environ.get("BRIDGE_FUZZ_EXAMPLES", "300"))


def seeds() -> list[bytes]:
    paths = sorted(FIXTURES.glob("*/*.eml"))
    paths += sorted(CORPUS.glob("mails/*/*.eml"))[::7]  # a spread of every kind, when present
    return [p.read_bytes() for p in paths]


SEEDS = seeds()
CODECS = ["utf-8", "idna", "zlib_codec", "utf-7", "rot13", "base64_codec", "x-nonsense", "utf-16"]
HEADERS = [
    "Message-ID",
    "Resent-Message-ID",
    "Subject",
    "From",
    "Date",
    "X-Debian-PR-Message",
    "X-Debian-PR-Package",
    "X-Debian-PR-Keywords",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Debian-Suite",
    "List-Id",
]
NUMBERS = [b"0", b"-1", b"9" * 23, b"18446744073709551616", b"1e999", b"\xd9\xa3"]


def encoded_word(codec: str, payload: bytes, q: bool) -> bytes:
    if q:
        text = b"".join(b"=%02X" % c if c > 126 or c < 33 else bytes([c]) for c in payload)
        return b"=?" + codec.encode() + b"?q?" + text + b"?="
    return b"=?" + codec.encode() + b"?b?" + base64.b64encode(payload) + b"?="


@st.composite
def header_value(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["encoded", "bytes", "number", "empty", "long"]))
    if kind == "encoded":
        payload = draw(st.binary(max_size=40))
        return encoded_word(draw(st.sampled_from(CODECS)), payload, draw(st.booleans()))
    if kind == "bytes":
        return draw(st.binary(max_size=80)).replace(b"\n", b" ").replace(b"\r", b" ")
    if kind == "number":
        return b"report " + draw(st.sampled_from(NUMBERS))
    if kind == "long":
        return b"x" * draw(st.integers(1000, 100_000))
    return b""


def set_header(raw: bytes, name: str, value: bytes) -> bytes:
    pattern = re.compile(rb"^" + name.encode() + rb":[^\n]*", re.MULTILINE | re.IGNORECASE)
    line = name.encode() + b": " + value
    if pattern.search(raw):
        return pattern.sub(lambda _: line, raw, count=1)
    return line + b"\n" + raw


@st.composite
def mutation(draw: st.DrawFn, raw: bytes) -> bytes:
    kind = draw(
        st.sampled_from(["header", "numbers", "insert", "truncate", "mime", "nest", "charset"])
    )
    if kind == "header":
        return set_header(raw, draw(st.sampled_from(HEADERS)), draw(header_value()))
    if kind == "numbers":
        huge = draw(st.sampled_from(NUMBERS))
        return re.sub(rb"\b\d{4,}\b", lambda _: huge, raw, count=draw(st.integers(1, 5)))
    if kind == "insert":
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(st.binary(min_size=1, max_size=64)) + raw[at:]
    if kind == "truncate":
        return raw[: draw(st.integers(0, len(raw)))]
    if kind == "mime":
        boundary = draw(st.sampled_from([b"", b'"', b"x" * 200, b"--", b"\xff"]))
        value = b"multipart/mixed; boundary=" + boundary
        return set_header(raw, "Content-Type", value)
    if kind == "nest":
        depth = draw(st.integers(1, 200))
        part = b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n'
        opening = b"".join(part % (i, i) for i in range(depth))
        return raw.replace(b"\n\n", b"\n" + opening, 1)
    charset = draw(st.sampled_from([c.encode() for c in CODECS]))
    encoding = draw(st.sampled_from([b"base64", b"quoted-printable", b"8bit", b"x-uue"]))
    raw = set_header(raw, "Content-Type", b"text/plain; charset=" + charset)
    return set_header(raw, "Content-Transfer-Encoding", encoding)


@st.composite
def hostile_mail(draw: st.DrawFn) -> bytes:
    raw = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        raw = draw(mutation(raw))
    return raw


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return Pipeline(discover(only=["debbugs", "dak"]).parsers)


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory):
    journal = SqliteJournal(tmp_path_factory.mktemp("fuzz") / "journal.sqlite3", durable=False)
    yield journal
    journal.close()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
@given(raw=hostile_mail())
def test_no_mutated_mail_escapes_the_pipeline_or_upsets_the_journal(pipeline, journal, raw):
    outcome = pipeline.process(raw)
    assert outcome.status in (PUBLISHED, IGNORED, FAILED)
    assert outcome.status != IGNORED or outcome.reason
    assert outcome.status != FAILED or outcome.reason
    with journal.batch() as batch:  # raises if any event cannot be stored
        batch.append(outcome.events, "fuzz")


def test_the_seeds_include_every_kind_of_fixture():
    kinds = {p.parent.name for p in FIXTURES.glob("*/*.eml")}
    assert {"debbugs", "dak", "dak-broken"} <= kinds
    assert len(SEEDS) >= 20


def test_bridge_parse_of_mutated_seeds_prints_no_traceback(tmp_path: Path):
    mails = []
    for n, raw in enumerate(SEEDS[:40]):
        word = encoded_word(CODECS[n % len(CODECS)], b"\xff\x00<>", n % 2 == 0)
        mutated = set_header(raw, "Message-ID", word)
        mutated = re.sub(rb"\b\d{6,7}\b", b"9" * 25, mutated, count=2)
        path = tmp_path / f"{n}.eml"
        path.write_bytes(mutated)
        mails.append(str(path))
    result = bridge("parse", "--explain", *mails)
    assert "Traceback" not in result.stderr.decode() and result.returncode in (0, 1)


def stdlib_shape(message: email.message.Message) -> list[tuple]:
    """Everything a parse decides, part by part: headers, type, payload, defects."""
    shape = []
    for part in message.walk():
        try:
            payload = None if part.is_multipart() else part.get_payload()
        except Exception as e:  # compat32 decodes 8-bit payloads in their charset: may fail
            payload = f"get_payload raises {type(e).__name__}"
        shape.append(
            (
                part.raw_items() and list(part.raw_items()),
                part.get_unixfrom(),
                part.get_content_type(),
                payload,
                [type(d).__name__ for d in part.defects],
                part.preamble,
                part.epilogue,
            )
        )
    return shape


LINE_ENDS = [b"\n", b"\r\n", b"\r"]


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
@given(raw=hostile_mail(), line_end=st.sampled_from(LINE_ENDS), blank=st.booleans())
def test_a_mail_read_headers_first_is_the_mail_the_stdlib_reads(raw, line_end, blank):
    raw = raw.replace(b"\n", line_end)
    if blank:  # a header block ending in odd ways: a lone CR, an LF after CRLF
        raw = raw.replace(line_end + line_end, b"\r\n\n", 1)
    whole = email.message_from_bytes(strip_from_line(raw), policy=email.policy.compat32)
    mail = Mail(raw)
    assert list(mail.headers.raw_items()) == list(whole.raw_items())
    assert stdlib_shape(mail.message()) == stdlib_shape(whole)

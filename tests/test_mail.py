from __future__ import annotations

import collections
import contextlib
import email
import email.policy

from bridge.errors import ParseError, SkipMessage
from bridge.mail import (
    Mail,
    address,
    decode_header_value,
    iso_date,
    parse_message,
    strip_from_line,
    text_body,
)
from bridge.pipeline import FAILED, IGNORED, Pipeline
from bridge.pipeline.plugins import discover


def test_encoded_words_in_any_declared_charset_are_decoded():
    assert decode_header_value("=?iso-8859-2?q?=A3=F3d=BC?= report") == "Łódź report"
    assert decode_header_value("=?windows-1251?B?z/Du4uXw6uA=?=") == "Проверка"
    assert (
        decode_header_value("Re: =?UTF-8?Q?caf=C3=A9?=\n =?UTF-8?Q?_cr=C3=A8me?=")
        == "Re: café crème"
    )


def test_an_unknown_charset_or_broken_encoded_word_never_raises():
    assert decode_header_value("=?x-no-such-charset?q?caf=C3=A9?=") == "café"
    assert decode_header_value("=?utf-8?q?unterminated") == "=?utf-8?q?unterminated"
    assert decode_header_value("=?utf-8?b?!!!notbase64?=") != ""


def test_a_body_in_an_unknown_charset_falls_back_without_crashing():
    raw = b"Content-Type: text/plain; charset=x-bogus\n\ncaf\xc3\xa9 and \xff\n"
    body = text_body(parse_message(raw), 100)
    assert body.startswith("caf")


def test_dates_become_utc_iso_and_nonsense_becomes_none():
    assert iso_date("Sun, 20 Apr 2008 21:27:29 +0200") == "2008-04-20T19:27:29Z"
    assert iso_date("Sun, 20 Apr 2008 21:27:29") == "2008-04-20T21:27:29Z"
    assert iso_date("the day after tomorrow") is None
    assert iso_date("") is None


def test_addresses_split_into_name_and_email():
    assert address("Jane Doe <jane@example.org>") == {
        "name": "Jane Doe",
        "email": "jane@example.org",
    }
    assert address("jane@example.org") == {"name": None, "email": "jane@example.org"}
    assert address("") == {"name": None, "email": None}


def test_undeclared_8bit_text_is_utf8_if_it_decodes_else_windows_1252():
    # Windows-1252 rather than ISO-8859-1, as the WHATWG encoding standard reads a latin-1
    # label: the bytes 0x80-0x9F are curly quotes and dashes in real mail, never C1 controls.
    assert decode_header_value(b"caf\xc3\xa9".decode("ascii", "surrogateescape")) == "café"
    assert decode_header_value(b"caf\xe9".decode("ascii", "surrogateescape")) == "café"
    raw = b"Subject: x\n\n\x93quoted\x94 \x96 na\xefve\n"
    assert text_body(parse_message(raw), 100) == "\u201cquoted\u201d \u2013 na\u00efve\n"


def test_codecs_that_are_not_text_or_cannot_replace_never_raise():
    for codec in ("idna", "zlib_codec", "rot13", "base64_codec", "uu_codec"):
        assert decode_header_value(f"=?{codec}?q?abc?=") == "abc"
    assert decode_header_value("=?utf-7?q?+2D0-?=") == "\ufffd"  # a lone surrogate


class Recorder:
    """A parser that notes the message accepts() was given and wants the mail or not."""

    name = "recorder"
    topics = ("test.seen",)
    schemas = "."

    def __init__(self, wants: bool):
        self.wants = wants
        self.offered: list = []

    def accepts(self, message):
        self.offered.append(message)
        return self.wants

    def parse(self, message):
        raise SkipMessage("seen")


MAIL = (
    b"From: someone@example.org\nSubject: hello\nMessage-ID: <m1@example.org>\n"
    b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nhi\n--b--\n"
)


def test_accepts_is_offered_the_headers_alone():
    recorder = Recorder(wants=False)
    outcome = Pipeline([recorder]).process(MAIL)
    (offered,) = recorder.offered
    assert offered["Subject"] == "hello" and offered["Message-ID"] == "<m1@example.org>"
    assert offered.get_payload() == ""  # the body was not parsed for it
    assert outcome.status == IGNORED and "no parser accepted" in outcome.reason
    assert outcome.message_id == "<m1@example.org>"


def test_the_body_is_parsed_only_for_a_mail_a_parser_accepts(monkeypatch):
    def unreadable(self):
        raise ValueError("the body was parsed")

    monkeypatch.setattr(Mail, "_with_body", unreadable)
    assert Pipeline([Recorder(wants=False)]).process(MAIL).status == IGNORED
    wanted = Pipeline([Recorder(wants=True)]).process(MAIL)
    assert wanted.status == FAILED and "the body was parsed" in wanted.reason


def test_a_mail_read_headers_first_parses_as_the_stdlib_does():
    # edge cases of where a header block ends; the fuzz suite varies many more
    for raw in (
        MAIL,
        MAIL.replace(b"\n", b"\r\n"),
        MAIL.replace(b"\n", b"\r"),
        b"no header at all\n\nbody\n",
        b"\nbody after an empty first line\n",
        b"Subject: headers only",
        b"Subject: a\nnot a header line\nX-Later: b\n\nbody\n",
        b"From sender Mon Jan  1 00:00:00 2024\n" + MAIL,
    ):
        whole = email.message_from_bytes(strip_from_line(raw), policy=email.policy.compat32)
        message = Mail(raw).message()
        assert message.as_bytes() == whole.as_bytes(), raw
        assert [type(d) for d in message.defects] == [type(d) for d in whole.defects], raw


def test_the_corpus_gives_the_events_of_a_whole_parse_offered_to_every_parser(corpus):
    # The reference reads each mail whole with the stdlib and calls the plugins directly,
    # as the pipeline did before it read headers first.
    parsers = discover(only=["debbugs", "dak"]).parsers
    pipeline = Pipeline(parsers)
    ours: collections.Counter[str] = collections.Counter()
    reference: collections.Counter[str] = collections.Counter()
    for path in sorted(corpus.glob("mails/*/*.eml")):
        raw = path.read_bytes()
        whole = email.message_from_bytes(strip_from_line(raw), policy=email.policy.compat32)
        expected = []
        for parser in parsers:
            if parser.accepts(whole):
                with contextlib.suppress(SkipMessage, ParseError):
                    expected += [(e.topic, e.dedup_key) for e in parser.parse(whole)]
        # a key the parser left out the pipeline derives from the raw mail
        got = [(e.topic, e.dedup_key) for e in pipeline.process(raw).events]
        assert len(got) == len(expected), path
        pairs = zip(got, expected, strict=True)
        assert [(t, k if k0 else None) for (t, k), (_, k0) in pairs] == expected, path
        ours.update(topic for topic, _ in got)
        reference.update(topic for topic, _ in expected)
    assert ours == reference and sum(ours.values()) > 400

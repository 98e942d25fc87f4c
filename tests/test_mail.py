from __future__ import annotations

from bridge.mail import address, decode_header_value, iso_date, parse_message, text_body


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

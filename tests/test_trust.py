"""Who vouches for an event: DKIM, trusted Authentication-Results, and the rule that a
signature must confirm what the event asserts. The tests sign with their own keys and
publish them in a key file; no real DNS server is ever asked."""

from __future__ import annotations

import collections
import email
import email.policy
import re
import socket
from pathlib import Path

import pytest

from bridge.config import TrustConfig
from bridge.pipeline import Pipeline
from bridge.testing import validate
from bridge.trust import Trust
from parsers.dak import DakParser
from parsers.debbugs import DebbugsParser
from tests import dkimkit
from tests.helpers import FIXTURES, ROOT

SCHEMAS = ROOT / "parsers" / "schemas"

BTS = dkimkit.key("bugs.debian.org", "smtpauto.buxtehude")
FTP = dkimkit.key("ftp-master.debian.org", "smtpauto.usper")
STRANGER = dkimkit.key("example.org", "s1")
CLOSURE = (FIXTURES / "debbugs" / "closed-marked-as-done.eml").read_bytes()
FOLLOWUP = b"""From: Jane Doe <jane@example.org>
To: 1056001@bugs.debian.org
Subject: Re: Bug#1056001: hello: segfaults on start
Message-ID: <reply-1@example.org>
Date: Tue, 02 Jan 2024 10:00:00 +0000
X-Debian-PR-Message: followup 1056001
X-Debian-PR-Package: hello
X-Debian-PR-Source: hello
Content-Type: text/plain; charset=utf-8

It still crashes with 2.10-3.
"""


def pipeline(tmp_path: Path, **trust: object) -> Pipeline:
    keys = dkimkit.key_file(tmp_path / "dkim.keys", BTS, FTP, STRANGER)
    config = TrustConfig(dkim_keys=str(keys), dns=False, keyrings=[], **trust)
    return Pipeline([DebbugsParser(), DakParser()], Trust(config))


def auth_of(pipe: Pipeline, raw: bytes) -> dict:
    outcome = pipe.process(raw)
    assert not outcome.failures, outcome.reason
    (event,) = outcome.events
    return event.body["origin"]["auth"]


def test_a_closure_signed_by_the_bug_tracker_passes(tmp_path):
    auth = auth_of(pipeline(tmp_path), dkimkit.sign(CLOSURE, BTS))
    assert auth["verdict"] == "pass", auth
    assert (auth["method"], auth["domain"], auth["selector"]) == (
        "dkim",
        "bugs.debian.org",
        "smtpauto.buxtehude",
    )
    assert "confirms" in auth["reason"]


def test_an_unsigned_closure_is_none_and_says_so(tmp_path):
    auth = auth_of(pipeline(tmp_path), CLOSURE)
    assert (auth["verdict"], auth["reason"]) == ("none", "no DKIM signature")


def test_a_signature_by_a_domain_not_trusted_for_the_parser_vouches_for_nothing(tmp_path):
    auth = auth_of(pipeline(tmp_path), dkimkit.sign(CLOSURE, STRANGER))
    assert auth["verdict"] == "none"
    assert "example.org" in auth["reason"] and "bugs.debian.org" in auth["reason"]
    # the same domain is fine for a parser the operator trusts it for
    trusting = pipeline(tmp_path, domains={"debbugs": ["example.org"]})
    assert auth_of(trusting, dkimkit.sign(CLOSURE, STRANGER))["verdict"] == "pass"


def test_a_body_changed_after_signing_fails(tmp_path):
    signed = dkimkit.sign(CLOSURE, BTS)
    altered = signed.replace(b"which is due to be installed", b"which is due to be removed")
    assert altered != signed
    auth = auth_of(pipeline(tmp_path), altered)
    assert auth["verdict"] == "fail"
    assert "body was changed after signing" in auth["reason"]


def test_an_x_debian_pr_message_edited_after_signing_fails(tmp_path):
    pipe = pipeline(tmp_path)
    signed = dkimkit.sign(FOLLOWUP, BTS)
    assert auth_of(pipe, signed)["verdict"] == "pass"
    # the header is not signed: the mail still verifies, but nothing signed says "closed"
    closed = signed.replace(b"X-Debian-PR-Message: followup", b"X-Debian-PR-Message: closed")
    auth = auth_of(pipe, closed)
    assert auth["verdict"] == "fail"
    assert "#1056001 was closed, but no signed header does" in auth["reason"]
    other_bug = signed.replace(b"followup 1056001", b"followup 1056002")
    auth = auth_of(pipe, other_bug)
    assert auth["verdict"] == "fail" and "names #1056002" in auth["reason"]


def test_a_signature_whose_h_omits_from_fails(tmp_path):
    headers = [h for h in dkimkit.SIGNED_HEADERS if h != "From"]
    auth = auth_of(pipeline(tmp_path), dkimkit.sign_without_from(CLOSURE, BTS, headers))
    assert auth["verdict"] == "fail"
    assert "does not cover from" in auth["reason"]


def test_an_unsigned_second_subject_above_the_signed_one_fails(tmp_path):
    signed = dkimkit.sign(FOLLOWUP, BTS)
    # DKIM covers the bottom-most Subject; a reader of the first one would be fooled
    doubled = b"Subject: Bug#999999: marked as done (forged)\n" + signed
    auth = auth_of(pipeline(tmp_path), doubled)
    assert auth["verdict"] == "fail"
    assert "2 subject headers" in auth["reason"]


def border_header(authserv: str, key: dkimkit.Key, signed: bytes) -> bytes:
    b = re.search(rb"b=([A-Za-z0-9+/]{8})", signed.split(b"bh=", 1)[1]).group(1).decode()
    return (
        f"Authentication-Results: {authserv}; dkim=pass (2048-bit key)"
        f' header.d={key.domain} header.i=@{key.domain} header.b="{b}"\n'
    ).encode()


def test_authentication_results_count_only_from_a_trusted_authserv_id(tmp_path):
    # signed by the bug tracker with a key the bridge cannot fetch (DNS is off): only the
    # border MTA's word can vouch
    unknown = dkimkit.key("bugs.debian.org", "rotated")
    signed = dkimkit.sign(CLOSURE, unknown)
    untrusted = border_header("mx.example.net", unknown, signed) + signed
    pipe = pipeline(tmp_path, authserv_ids=["mx.debian-bridge.example"])
    auth = auth_of(pipe, untrusted)
    assert auth["verdict"] == "none" and auth["reason"].startswith("no key:")
    trusted = border_header("mx.debian-bridge.example", unknown, signed) + signed
    auth = auth_of(pipe, trusted)
    assert (auth["verdict"], auth["method"]) == ("pass", "authres"), auth
    assert "mx.debian-bridge.example verified" in auth["reason"]


def test_a_dns_timeout_is_temperror_and_the_pipeline_keeps_moving(tmp_path):
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a resolver that never answers
    silent.bind(("127.0.0.1", 0))
    try:
        config = TrustConfig(
            dns=True,
            dns_servers=["127.0.0.1"],
            dns_port=silent.getsockname()[1],
            dns_timeout=0.5,
            keyrings=[],
        )
        pipe = Pipeline([DebbugsParser(), DakParser()], Trust(config))
        auth = auth_of(pipe, dkimkit.sign(CLOSURE, BTS))
        assert auth["verdict"] == "none"
        assert auth["reason"].startswith("temperror: DNS lookup of smtpauto.buxtehude._domainkey")
        # the next mail goes through; the failed lookup is cached, not repeated for each mail
        assert auth_of(pipe, dkimkit.sign(FOLLOWUP, BTS))["verdict"] == "none"
    finally:
        silent.close()


DAK_ACCEPTED = (FIXTURES / "dak" / "accepted-2022-pgp-mime.eml").read_bytes()


def test_a_dak_acceptance_passes_only_when_the_signed_subject_names_the_upload(tmp_path):
    pipe = pipeline(tmp_path)
    signed = dkimkit.sign(DAK_ACCEPTED, FTP)
    assert auth_of(pipe, signed)["verdict"] == "pass"
    # a .changes for another version under the same signed subject
    swapped = signed.replace(b"Version: 4.31-1", b"Version: 4.32-1")
    auth = auth_of(pipe, swapped)
    assert auth["verdict"] == "fail"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ("dkim=pass header.d=bugs.debian.org", "pass"),
        ("dkim=fail header.d=bugs.debian.org", "none"),
        ("dkim=pass header.d=evil.example", "none"),
    ],
)
def test_a_trusted_border_result_needs_a_signature_by_that_domain_to_show_coverage(
    tmp_path, headers, expected
):
    unknown = dkimkit.key("bugs.debian.org", "rotated")
    signed = dkimkit.sign(CLOSURE, unknown)
    raw = f"Authentication-Results: mx.local; {headers}\n".encode() + signed
    assert auth_of(pipeline(tmp_path, authserv_ids=["mx.local"]), raw)["verdict"] == expected
    # without any DKIM-Signature, a pass claim alone cannot show what was covered
    bare = f"Authentication-Results: mx.local; {headers}\n".encode() + CLOSURE
    auth = auth_of(pipeline(tmp_path, authserv_ids=["mx.local"]), bare)
    assert auth["verdict"] == ("fail" if expected == "pass" else "none")


def border_passes(raw: bytes) -> set[str]:
    """The domains smtp.subspace.kernel.org says passed DKIM, read without authres."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    found = set()
    for value in message.get_all("Authentication-Results") or []:
        text = " ".join(str(value).split())
        if text.startswith("smtp.subspace.kernel.org;"):
            found |= set(re.findall(r"dkim=pass .*?header\.d=([\w.-]+)", text))
    return found


def test_the_corpus_mails_a_trusted_border_mta_vouched_for_pass(corpus: Path, capsys):
    # no key file: the corpus's real signatures cannot be checked here, only the border's word
    config = TrustConfig(dns=False, keyrings=[], authserv_ids=["smtp.subspace.kernel.org"])
    pipe = Pipeline([DebbugsParser(), DakParser()], Trust(config))
    trusted = {"debbugs": "bugs.debian.org", "dak": "ftp-master.debian.org"}
    vouched = passed = 0
    verdicts: collections.Counter[str] = collections.Counter()
    for path in sorted(corpus.glob("mails/*/*.eml")):
        raw = path.read_bytes()
        for event in pipe.process(raw).events:
            validate(event, SCHEMAS)  # verdicts and signed_by fit the contract
            auth = event.body["origin"]["auth"]
            verdicts[f"{auth['verdict']}/{auth['method']}"] += 1
            if trusted[event.topic.split(".")[0]] in border_passes(raw):
                vouched += 1
                passed += auth["verdict"] == "pass"
                assert auth["method"] == "authres", (path, auth)
    with capsys.disabled():
        print(f"\ncorpus verdicts, DNS off: {dict(verdicts)}; vouched {vouched}, pass {passed}")
    assert vouched == passed == 43


def test_signatures_by_domains_no_parser_trusts_cost_no_key_lookup(tmp_path):
    from bridge.trust.keys import KeyStore, Lookup
    from bridge.trust.signatures import verify_all

    asked: list[str] = []

    class CountingKeys(KeyStore):
        def lookup(self, name: str, deadline: float | None = None) -> Lookup:
            asked.append(name)
            return super().lookup(name, deadline)

    raw = dkimkit.sign(CLOSURE, BTS)
    for _ in range(30):  # a hostile sender piles on signatures of its own
        raw = dkimkit.sign(raw, STRANGER)
    keys = CountingKeys({BTS.name: BTS.record.encode()}, dns=False, timeout=1)
    results = verify_all(raw, keys, {"bugs.debian.org"}, budget=5)
    assert [r.result for r in results] == ["skipped"] * 30 + ["pass"]
    assert asked == [BTS.name]


def test_the_mails_spared_dkimpy_are_those_it_finds_no_signature_in(corpus: Path):
    """A mail with no DKIM-Signature line skips dkimpy: over the corpus (and a signed
    fixture), exactly the mails dkimpy's own reading finds no signature in."""
    import dkim

    from bridge.trust.signatures import names_a_signature

    mails = [p.read_bytes() for p in sorted(corpus.glob("mails/*/*.eml"))]
    mails.append(dkimkit.sign((FIXTURES / "debbugs" / "report.eml").read_bytes(), BTS))
    signed = 0
    for raw in mails:
        found = [n for n, _ in dkim.DKIM(raw).headers if n.lower() == b"dkim-signature"]
        assert names_a_signature(raw) == bool(found)
        signed += bool(found)
    assert 0 < signed < len(mails)

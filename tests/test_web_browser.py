"""The live page in a real browser: Debian's headless Chromium, driven by Selenium through
Debian's chromium-driver. The page loads without a console error and without a request
leaving this machine, a mail sent over SMTP appears on the open page within two seconds,
and a filter narrows the list; the events are in journal order with UTC times, the mail's
late date, links to bugs and packages, long ones folded, and older pages by a plain link.
The tests leave screenshots in tests/artifacts/."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, urlsplit

from tests.helpers import Server, bridge, send, wait_until
from tests.mails import bug_report
from tests.test_replay_mbox import write_mbox
from tests.web import WebServer

ARTIFACTS = Path(__file__).parent / "artifacts"


def requested_urls(driver) -> list[str]:
    """Every URL the page asked for, from Chromium's DevTools network log."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def listed(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#events li.event")]


def replay_corpus(corpus: Path, tmp_path: Path, state_dir: Path, leave_out: Path | None = None):
    """The corpus's mail (but *leave_out*) backfilled into *state_dir*'s journal."""
    mails = [p for p in sorted(corpus.glob("mails/*/*.eml")) if p != leave_out]
    mbox = write_mbox(tmp_path / "corpus.mbox", [p.read_bytes() for p in mails])
    replayed = bridge("--state-dir", str(state_dir), "replay-mbox", str(mbox), timeout=300)
    assert replayed.returncode == 0, replayed.stderr.decode()


def test_the_live_page_shows_mail_as_it_arrives_and_filters(browser, tmp_path, state_dir, corpus):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    replay_corpus(corpus, tmp_path, state_dir)
    server = Server(state_dir).start()
    web = WebServer(state_dir).start()
    try:
        server.wait_for_smtp()
        browser.get(web.base + "/")
        wait = WebDriverWait(browser, 10)
        wait.until(lambda d: d.find_element(By.ID, "live").text == "live")
        assert len(listed(browser)) == 50  # the newest, rendered by the server

        send(server, bug_report(777001, subject="the page shows me"))
        sent = time.monotonic()
        WebDriverWait(browser, 10, poll_frequency=0.05).until(
            lambda d: "#777001" in (listed(d) or [""])[0]
        )
        assert time.monotonic() - sent < 2.0, "the mail took over two seconds to appear"
        first = browser.find_element(By.CSS_SELECTOR, "#events li.event")
        assert first.find_element(By.CSS_SELECTOR, "a.summary").get_attribute("href") == (
            "https://bugs.debian.org/777001"
        )
        assert first.find_element(By.CSS_SELECTOR, ".trust").text == "unverified"

        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "live-page.png"))

        field = browser.find_element(By.NAME, "package")
        field.send_keys("hello")
        browser.find_element(By.CSS_SELECTOR, "#filters button").click()
        wait.until(lambda d: "package=hello" in d.current_url)
        narrowed = listed(browser)
        assert narrowed and len(narrowed) < 50
        assert all(" hello " in f" {text} " for text in narrowed), narrowed
        hello = bridge("--state-dir", str(state_dir), "query", "--package", "hello", "--json")
        assert len(narrowed) == min(50, len(hello.stdout.splitlines()))

        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        urls = requested_urls(browser)
        assert urls, "the DevTools log recorded the page's requests"
        elsewhere = [u for u in urls if not u.startswith((web.base + "/", "data:"))]
        assert elsewhere == []
    finally:
        web.stop()
        server.stop()


def envelopes_of(state: Path, *args: str) -> list[dict]:
    """What ``bridge query --json`` finds, newest first."""
    found = bridge("--state-dir", str(state), "query", "--json", *args)
    assert found.returncode == 0, found.stderr.decode()
    return [json.loads(line) for line in found.stdout.decode().splitlines()]


def utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def day_of(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


def check_events_match(driver, envelopes: list[dict]) -> None:
    """The page lists exactly *envelopes*, in their order, each with its received time in
    UTC, its bugs and packages linked (folded past six), and a trust badge in words."""
    from selenium.webdriver.common.by import By

    items = driver.find_elements(By.CSS_SELECTOR, "#events li.event")
    assert [int(li.get_attribute("data-seq-id")) for li in items] == [
        e["seq_id"] for e in envelopes
    ]
    for li, envelope in zip(items, envelopes, strict=True):
        received = li.find_element(By.CSS_SELECTOR, "time")
        assert received.text == utc(envelope["timestamp"])
        index = envelope["index"]
        bugs = [a.get_attribute("href") for a in li.find_elements(By.CSS_SELECTOR, "a.bug")]
        assert bugs == [f"https://bugs.debian.org/{b}" for b in index.get("bugs", [])]
        packages = [a.get_attribute("href") for a in li.find_elements(By.CSS_SELECTOR, "a.package")]
        assert packages == [
            f"https://tracker.debian.org/pkg/{quote(p, safe='')}" for p in index.get("packages", [])
        ]
        references = len(bugs) + len(packages)
        folded = li.find_elements(By.CSS_SELECTOR, "details.more")
        assert len(folded) == (1 if references > 6 else 0)
        if folded:  # closed: only the first six show, the rest are counted
            shown = [a for a in li.find_elements(By.CSS_SELECTOR, ".refs a") if a.is_displayed()]
            assert len(shown) == 6
            assert folded[0].find_element(By.TAG_NAME, "summary").text == (f"{references - 6} more")
        verdict = envelope["msg"]["origin"]["auth"]["verdict"]
        word = {"pass": "verified", "fail": "forged or altered", "none": "unverified"}[verdict]
        assert li.find_element(By.CSS_SELECTOR, ".trust").text.startswith(word)


def test_the_dashboard_orders_by_journal_links_says_utc_and_pages_without_javascript(
    browser, tmp_path, state_dir, corpus
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # the archive, but for one report, which then arrives live today: years after its Date
    late_mail = corpus / "mails" / "bts-report" / "001.eml"
    replay_corpus(corpus, tmp_path, state_dir, leave_out=late_mail)
    server = Server(state_dir).start()
    web = WebServer(state_dir).start()
    try:
        server.wait_for_smtp()
        newest_before = envelopes_of(state_dir, "--limit", "1")[0]["seq_id"]
        assert send(server, late_mail.read_bytes()) == {}
        wait_until(
            lambda: envelopes_of(state_dir, "--limit", "1")[0]["seq_id"] > newest_before,
            20,
            "the late report to be journaled",
        )
        first_page = envelopes_of(state_dir, "--limit", "50")
        second_page = envelopes_of(state_dir, "--limit", "50", "--page", "2")
        page_day = day_of(time.time())
        browser.get(web.base + "/")
        wait = WebDriverWait(browser, 10)
        wait.until(lambda d: d.find_element(By.ID, "live").text == "live")
        check_events_match(browser, first_page)

        arrived = browser.find_element(By.CSS_SELECTOR, "#events li.event")
        mail_date = first_page[0]["msg"]["origin"]["date"]
        dated = datetime.fromisoformat(mail_date.replace("Z", "+00:00")).timestamp()
        late_note = arrived.find_element(By.CSS_SELECTOR, ".late").text
        assert late_note.startswith(f"mail dated {utc(dated)}, ")
        assert late_note.endswith("before it arrived")
        assert first_page[0]["timestamp"] - dated > 365 * 86400  # it is years late

        legend = browser.find_element(By.CSS_SELECTOR, "details.legend")
        legend.find_element(By.TAG_NAME, "summary").click()
        assert "anyone could have sent it" in legend.text  # what "unverified" means
        # the chart ends on the day the page was drawn (midnight may fall between the two reads)
        axis = browser.find_element(By.CSS_SELECTOR, "#charts .axis").text
        assert any(axis.endswith(f"{day} (today)") for day in (page_day, day_of(time.time())))
        # the live report is the one bar of its topic's chart, on the day it arrived
        chart = browser.find_element(
            By.CSS_SELECTOR, "svg[aria-label^='debbugs.bug.report:'] rect title"
        )
        assert chart.get_attribute("textContent") == f"{day_of(first_page[0]['timestamp'])}: 1"
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))

        browser.find_element(By.ID, "older").click()
        wait.until(lambda d: "before=" in d.current_url)
        check_events_match(browser, second_page)
        assert browser.find_element(By.ID, "live").text == "older events: not live"
        assert browser.find_elements(By.CSS_SELECTOR, "#events details.more")  # folded ones
        assert browser.find_element(By.CSS_SELECTOR, "a[rel=first]").get_attribute("href") == (
            web.base + "/?"
        )

        # the same page with no JavaScript at all: a plain GET of the link's address
        plain = web.get(
            urlsplit(browser.current_url).path + "?" + urlsplit(browser.current_url).query,
            {"Accept": "text/html"},
        )
        seq_ids = [
            int(n)
            for n in re.findall(r'<li class="event" data-seq-id="(\d+)"', plain.body.decode())
        ]
        assert seq_ids == [e["seq_id"] for e in second_page]
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
    finally:
        web.stop()
        server.stop()

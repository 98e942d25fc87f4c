"""The live page in a real browser: Debian's headless Chromium, driven by Selenium through
Debian's chromium-driver. The page loads without a console error and without a request
leaving this machine, a mail sent over SMTP appears on the open page within two seconds,
and a filter narrows the list. The test leaves a screenshot in tests/artifacts/."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.helpers import Server, bridge, send
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


def test_the_live_page_shows_mail_as_it_arrives_and_filters(browser, tmp_path, state_dir, corpus):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    mails = sorted(corpus.glob("mails/*/*.eml"))
    mbox = write_mbox(tmp_path / "corpus.mbox", [p.read_bytes() for p in mails])
    replayed = bridge("--state-dir", str(state_dir), "replay-mbox", str(mbox), timeout=300)
    assert replayed.returncode == 0, replayed.stderr.decode()
    server = Server(state_dir).start()
    web = WebServer(state_dir).start()
    try:
        server.wait_for_smtp()
        browser.get(web.base + "/")
        wait = WebDriverWait(browser, 10)
        wait.until(lambda d: d.find_element(By.ID, "live").text == "live")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#charts svg"))
        assert len(listed(browser)) == 50  # the newest, rendered by the server

        send(server, bug_report(777001, subject="the page shows me"))
        sent = time.monotonic()
        WebDriverWait(browser, 10, poll_frequency=0.05).until(
            lambda d: "#777001" in (listed(d) or [""])[0]
        )
        assert time.monotonic() - sent < 2.0, "the mail took over two seconds to appear"
        first = browser.find_element(By.CSS_SELECTOR, "#events li.event")
        assert first.find_element(By.CSS_SELECTOR, "a").get_attribute("href") == (
            "https://bugs.debian.org/777001"
        )
        assert first.find_element(By.CSS_SELECTOR, ".trust").text.startswith("none")

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

"""
The web console at /console, in a real browser (headless Chromium driven
by Selenium) against a real C{twistd -n kaf}; puts and reads around it go
through curl, as a user's would.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from typing import Any, Iterator, List

import pytest

import browser
from server import KafServer, free_port, self_signed

CURL = shutil.which("curl") or "curl"

if browser.missing() and not os.environ.get("CI"):
    pytest.skip("browser tests: %s" % (browser.missing(),), allow_module_level=True)


@pytest.fixture(scope="module")
def server() -> Iterator[KafServer]:
    with tempfile.TemporaryDirectory(prefix="kaf-console-") as folder:
        with KafServer(os.path.join(folder, "data"), ["--stats-interval", "1"]) as s:
            yield s


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    d = browser.start()
    try:
        yield d
    finally:
        browser.stop(d)


def curl(*args: str) -> bytes:
    done = subprocess.run([CURL, "-s", "-f", "--max-time", "20"] + list(args),
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    assert done.returncode == 0, (args, done.returncode, done.stderr)
    return done.stdout


def put(server: KafServer, log: str, body: bytes) -> bytes:
    done = subprocess.run([CURL, "-s", "-f", "--data-binary", "@-", server.url("/put/" + log)],
                          input=body, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def by_id(driver: Any, element_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def rows(driver: Any) -> List[List[str]]:
    from selenium.webdriver.common.by import By

    return [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in driver.find_elements(By.CSS_SELECTOR, "#logs-body tr")]


def open_log(driver: Any, server: KafServer, log: str) -> None:
    driver.get(server.url("/console#/log/" + log))
    browser.until(driver, lambda d: by_id(d, "log-title").text == "Log " + log)


def test_a_browser_opening_the_server_is_sent_to_the_console(
        server: KafServer, driver: Any) -> None:
    driver.get(server.url("/"))
    browser.until(driver, lambda d: d.current_url.endswith("/console#/") or
                  d.current_url.endswith("/console"))
    assert driver.title == "Kaf console"
    # curl, asking for anything, still gets the API's 404 line.
    done = subprocess.run([CURL, "-s", server.url("/")], capture_output=True, timeout=30)
    assert done.stdout.startswith(b"unknown path '/'")


def test_the_console_lists_a_log_after_a_put_made_with_curl(
        server: KafServer, driver: Any) -> None:
    put(server, "orders", b"first order")
    put(server, "orders", b"second order")
    driver.get(server.url("/console"))
    found = browser.until(driver, lambda d: [r for r in rows(d) if r and r[0] == "orders"])
    [row] = found
    assert row[1] == "2"            # last message number
    assert row[3] == "%d B" % (len(b"KAF_DB|v1|0\nKAF_MSG|1|11\nfirst order"
                                   b"\nKAF_MSG|2|12\nsecond order"),)
    browser.screenshot(driver, "logs")


def test_a_message_put_from_the_page_reads_back_with_the_same_bytes(
        server: KafServer, driver: Any) -> None:
    open_log(driver, server, "notes")
    message = 'héllo, wörld — {"a": [1, 2]}\nsecond line'
    by_id(driver, "put-body").send_keys(message)
    by_id(driver, "put-send").click()
    result = browser.until(driver, lambda d: by_id(d, "put-result").text)
    assert result == "Put as message 1."
    assert curl(server.url("/get/notes?from=1&format=raw")) == message.encode("utf-8") + b"\n"


def test_archive_from_the_page_says_how_many_messages_stay_and_archives(
        server: KafServer, driver: Any) -> None:
    for i in range(1, 6):
        put(server, "old", b"message %d" % (i,))
    open_log(driver, server, "old")
    by_id(driver, "archive-upto").send_keys("3")
    by_id(driver, "archive-ask").click()
    question = browser.until(driver, lambda d: by_id(d, "archive-question").text)
    assert "up to 3?" in question and "2 messages stay" in question
    assert json.loads(curl(server.url("/logs")))[0:0] == []
    assert [l for l in json.loads(curl(server.url("/logs"))) if l["name"] == "old"][0]["first"] == 1
    by_id(driver, "archive-yes").click()
    result = browser.until(driver, lambda d: by_id(d, "archive-result").text)
    assert result.startswith("Archived up to 3 into --old--") and result.endswith("; 2 kept.")
    [entry] = [l for l in json.loads(curl(server.url("/logs"))) if l["name"] == "old"]
    assert (entry["first"], entry["last"], entry["count"]) == (4, 5, 2)


def test_cancelling_an_archive_archives_nothing(server: KafServer, driver: Any) -> None:
    put(server, "kept", b"one")
    open_log(driver, server, "kept")
    by_id(driver, "archive-upto").send_keys("1")
    by_id(driver, "archive-ask").click()
    browser.until(driver, lambda d: by_id(d, "archive-confirm").is_displayed())
    by_id(driver, "archive-no").click()
    assert not by_id(driver, "archive-confirm").is_displayed()
    [entry] = [l for l in json.loads(curl(server.url("/logs"))) if l["name"] == "kept"]
    assert entry["count"] == 1


def test_the_console_is_usable_375_pixels_wide(server: KafServer) -> None:
    put(server, "narrow", b"x")
    small = browser.start()
    try:
        # A phone's viewport (a window cannot be made that narrow).
        small.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": 375, "height": 812, "deviceScaleFactor": 1, "mobile": True})
        small.get(server.url("/console"))
        assert small.execute_script("return window.innerWidth") == 375
        browser.until(small, lambda d: [r for r in rows(d) if r and r[0] == "narrow"])
        page_width = small.execute_script("return document.documentElement.scrollWidth")
        assert page_width <= 375
        for element_id in ("token", "token-use", "nav-logs", "nav-stats"):
            assert by_id(small, element_id).is_displayed()
        browser.screenshot(small, "logs-375px")
    finally:
        browser.stop(small)


def test_every_control_has_a_label_and_is_reached_with_the_keyboard(
        server: KafServer, driver: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    open_log(driver, server, "orders")
    for field in driver.find_elements(By.CSS_SELECTOR, "input, textarea"):
        field_id = field.get_attribute("id")
        assert driver.find_elements(By.CSS_SELECTOR, "label[for='%s']" % (field_id,)), field_id
    for button in driver.find_elements(By.TAG_NAME, "button"):
        if button.is_displayed():
            assert button.text.strip(), button.get_attribute("id")
    # Tab from the top reaches the put form's text box, and typing there works.
    body = driver.find_element(By.TAG_NAME, "body")
    body.click()
    reached = []
    for _ in range(40):
        driver.switch_to.active_element.send_keys(Keys.TAB)
        reached.append(driver.switch_to.active_element.get_attribute("id"))
        if reached[-1] == "put-body":
            break
    assert reached[-1] == "put-body", reached


def shown(driver: Any, num: int) -> Any:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, "#messages li[data-num='%d']" % (num,))
    return found[0] if found else None


def test_the_live_tail_shows_a_message_put_after_the_page_opened_within_1s(
        server: KafServer, driver: Any) -> None:
    put(server, "live", b"before")
    open_log(driver, server, "live")
    browser.until(driver, lambda d: shown(d, 1))
    started = time.monotonic()
    assert put(server, "live", b"after the page opened") == b"2"
    item = browser.until(driver, lambda d: shown(d, 2), timeout=1.0)
    assert time.monotonic() - started <= 1.0
    assert item.text.endswith("after the page opened")


def test_each_message_is_shown_as_json_text_or_hex(server: KafServer, driver: Any) -> None:
    put(server, "kinds", b'{"user":7,"tags":["a","b"]}')
    put(server, "kinds", b"plain words")
    put(server, "kinds", b"\x00\x01\xfe\xffbin")
    open_log(driver, server, "kinds")
    items = browser.until(driver, lambda d: [shown(d, n) for n in (1, 2, 3)]
                          if all(shown(d, n) for n in (1, 2, 3)) else None)
    kinds = [i.get_attribute("data-kind") for i in items]
    assert kinds == ["json", "text", "hex"]
    from selenium.webdriver.common.by import By
    texts = [i.find_element(By.TAG_NAME, "pre").text for i in items]
    assert texts[0] == '{\n  "user": 7,\n  "tags": [\n    "a",\n    "b"\n  ]\n}'
    assert texts[1] == "plain words"
    assert texts[2] == "000000  00 01 fe ff 62 69 6e"
    browser.screenshot(driver, "log")


def test_pause_holds_the_tail_and_resume_catches_up(server: KafServer, driver: Any) -> None:
    put(server, "paused", b"one")
    open_log(driver, server, "paused")
    browser.until(driver, lambda d: shown(d, 1))
    by_id(driver, "pause").click()
    assert by_id(driver, "pause").text == "Resume"
    put(server, "paused", b"two")
    by_id(driver, "pause").click()
    browser.until(driver, lambda d: shown(d, 2))
    assert by_id(driver, "pause").text == "Pause"


def test_jump_to_a_number_shows_the_log_from_there(server: KafServer, driver: Any) -> None:
    for i in range(1, 11):
        put(server, "jumps", b"j%d" % (i,))
    open_log(driver, server, "jumps")
    browser.until(driver, lambda d: shown(d, 10))
    by_id(driver, "jump-to").send_keys("7")
    by_id(driver, "jump-go").click()
    browser.until(driver, lambda d: shown(d, 7) and not shown(d, 6))


def test_the_console_works_behind_tls(tmp_path: Any) -> None:
    # A self-signed certificate for 127.0.0.1; the browser is told to take it.
    key, cert = self_signed(str(tmp_path))
    port = free_port()
    listen = "ssl:%d:interface=127.0.0.1:privateKey=%s:certKey=%s" % (port, key, cert)
    # Two plain ports as well: the server is ready once they answer, and
    # every listener starts before the server serves.
    with KafServer(str(tmp_path / "data"), ["--listen", listen], ports=2) as server:
        secure = browser.start(flags=["--ignore-certificate-errors"])
        try:
            secure.get("https://127.0.0.1:%d/console#/log/tls" % (port,))
            browser.until(secure, lambda d: by_id(d, "log-title").text == "Log tls")
            by_id(secure, "put-body").send_keys("over tls")
            by_id(secure, "put-send").click()
            assert browser.until(secure, lambda d: by_id(d, "put-result").text) == (
                "Put as message 1.")
            item = browser.until(secure, lambda d: shown(d, 1))
            assert item.text.endswith("over tls")
        finally:
            browser.stop(secure)
        assert curl(server.url("/get/tls?from=1&format=raw")) == b"over tls\n"


def test_with_auth_a_wrong_token_shows_a_clear_message_and_the_right_one_works(
        tmp_path: Any, driver: Any) -> None:
    rules = tmp_path / "auth.json"
    rules.write_text(json.dumps({"tokens": [
        {"name": "web", "token": "console-token-1", "read": ["*"], "write": ["*"]}]}))
    with KafServer(str(tmp_path / "data"), ["--auth", str(rules)]) as secured:
        done = subprocess.run([CURL, "-s", "-f", "-H", "Authorization: Bearer console-token-1",
                               "--data-binary", "x", secured.url("/put/guarded")],
                              capture_output=True, timeout=30)
        assert done.stdout == b"1"
        driver.get(secured.url("/console"))
        status = browser.until(driver, lambda d: by_id(d, "status").text)
        assert status == "This server wants a token: enter it above."
        by_id(driver, "token").send_keys("not-the-token")
        by_id(driver, "token-use").click()
        assert browser.until(driver, lambda d: by_id(d, "status").text.startswith(
            "The token was refused")) is True
        browser.screenshot(driver, "wrong-token")
        token = by_id(driver, "token")
        token.clear()
        token.send_keys("console-token-1")
        by_id(driver, "token-use").click()
        browser.until(driver, lambda d: [r for r in rows(d) if r and r[0] == "guarded"])
        assert driver.execute_script("return sessionStorage.getItem('kaf-token')") == (
            "console-token-1")
        assert driver.execute_script("return localStorage.length") == 0
        driver.execute_script("sessionStorage.clear()")


def kaf_records_of(server: KafServer, log: str) -> List[dict]:
    """The _kaf records (as the console reads them: JSON) that name C{log}."""
    records = json.loads(curl(server.url("/get/_kaf?from=1&format=json")))
    return [e for r in records for e in r["logs"] if e["name"] == log]


def test_the_statistics_chart_and_the_sparkline_come_from_the_kaf_history(
        server: KafServer, driver: Any) -> None:
    from selenium.webdriver.common.by import By

    for i in range(4):
        put(server, "charted", b"c%d" % (i,))
    # With --stats-interval 1 the puts reach _kaf within a few seconds.
    deadline = time.monotonic() + 10
    while sum(e.get("puts", 0) for e in kaf_records_of(server, "charted")) < 4:
        assert time.monotonic() < deadline, "no _kaf record of the puts"
        time.sleep(0.2)
    entries = kaf_records_of(server, "charted")
    top = max(max(e.get("puts", 0), e.get("gets", 0)) for e in entries)
    driver.get(server.url("/console#/stats"))
    section = browser.until(driver, lambda d: d.find_elements(
        By.CSS_SELECTOR, "#charts section[data-log='charted']"))[0]
    assert section.find_element(By.TAG_NAME, "h3").text == (
        "charted (at most %d an interval)" % (top,))
    chart = section.find_element(By.CSS_SELECTOR, "svg.chart")
    assert chart.get_attribute("aria-label") == (
        "puts and gets per interval of charted, at most %d" % (top,))
    assert len(chart.find_elements(By.TAG_NAME, "polyline")) == 2   # puts and gets
    browser.screenshot(driver, "stats")
    # The list of logs draws the same puts as a sparkline in the log's row.
    driver.get(server.url("/console#/"))
    row = browser.until(driver, lambda d: d.find_elements(
        By.CSS_SELECTOR, "#logs-body tr[data-log='charted']"))[0]
    spark = row.find_element(By.CSS_SELECTOR, "svg.spark")
    assert spark.get_attribute("aria-label") == "puts per interval of charted"
    points = spark.find_element(By.TAG_NAME, "polyline").get_attribute("points").split()
    assert len(points) >= len(entries)

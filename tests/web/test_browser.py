"""The web view in a real headless Chromium (Debian's chromium + chromedriver, driven by selenium) against a
seeded store: login by the one-time link, the records table, a filter, the chart, the scanner found from the
chart in three clicks, its inspect page, and attacker text shown as text. A screenshot per page is kept."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import web_seed as seed

from support import IN_CI, require, wait_until

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCANNER_SIGNATURE = "4:255:1240:1024:-:M:-"
SCREENSHOTS: list[Path] = []


def artifact_dir(tmp_path: Path) -> Path:
    """Under the test's tmp dir; in CI also a stable path (printed in pytest's summary)."""
    if IN_CI:
        path = Path(os.environ.get("AUTHWIRE_ARTIFACTS", "/tmp/authwire-test-artifacts")) / "web"
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path


@pytest.fixture
def browser(tmp_path):
    require(Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists() and shutil.which("chromium") is not None,
            "needs Debian's chromium and chromium-driver (scripts/setup-system.sh installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1600",
                f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver, tmp_path: Path, name: str) -> None:
    path = artifact_dir(tmp_path) / f"{name}.png"
    driver.save_screenshot(str(path))
    SCREENSHOTS.append(path)


def rows(driver, table_id: str) -> list[list[str]]:
    return driver.execute_script(
        "return [...document.querySelectorAll(`#${arguments[0]} tbody tr:not(.empty)`)]"
        ".map(tr => [...tr.cells].map(td => td.textContent))", table_id)


def console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_web_view(web_server, browser, tmp_path):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    d = browser
    d.get(web_server.new_login())
    wait_until(lambda: len(rows(d, "records")) == web_server.records, 20, "the seeded records in the table")
    assert d.current_url == web_server.base + "/"  # the one-time value left the address bar
    assert d.execute_script("return document.cookie") == ""  # the session cookie is HttpOnly
    ids = {row[-1] for row in rows(d, "records")}
    assert {"alice-0", "scan-0", "carol-3"} <= ids

    # The chart is drawn: bars in an SVG, one series per failure reason.
    wait_until(lambda: d.find_elements(By.CSS_SELECTOR, "#chart svg rect.bar"), 10, "bars in the chart")
    legend = [li.text for li in d.find_elements(By.CSS_SELECTOR, "#legend li")]
    assert legend == ["bad_signature (12)", "invalid_credentials (12)", "expired (1)"]  # by count, then name
    assert [r[0] for r in rows(d, "alerts")] and rows(d, "alerts")[0][1] == "stack_stuffing"

    # An attacker's user agent is text, not markup: shown verbatim, no script ran, no element was made.
    agents = [row[13] for row in rows(d, "records")]
    assert seed.XSS_AGENT in agents
    with pytest.raises(NoAlertPresentException):
        d.switch_to.alert.text  # noqa: B018
    assert d.execute_script("return document.querySelectorAll('script').length") == 1
    shot(d, tmp_path, "dashboard")

    # A filter changes the rows (and the address bar, so the view can be shared).
    box = d.find_element(By.NAME, "client_ip")
    box.send_keys(seed.SCANNER)
    d.find_element(By.ID, "apply").click()
    wait_until(lambda: len(rows(d, "records")) == 24, 10, "24 scanner rows after filtering")
    assert {row[1] for row in rows(d, "records")} == {seed.SCANNER} and "client_ip=" in d.current_url
    shot(d, tmp_path, "dashboard-filtered")
    d.find_element(By.ID, "clear").click()
    wait_until(lambda: len(rows(d, "records")) == web_server.records, 10, "all rows again")

    # From the failures chart to the scanner's inspect page in three clicks.
    d.find_element(By.CSS_SELECTOR, "[data-split='syn.signature']").click()                  # 1: split by stack
    bar = f"#chart rect.bar[data-value='{SCANNER_SIGNATURE}']"
    wait_until(lambda: d.find_elements(By.CSS_SELECTOR, bar), 10, "the scanner's stack in the chart")
    d.find_element(By.CSS_SELECTOR, bar).click()                                             # 2: its bar
    wait_until(lambda: rows(d, "top-ips") == [[seed.SCANNER, "24"]], 10, "the scanner as the top failing IP")
    d.find_element(By.CSS_SELECTOR, "#top-ips a.ip").click()                                 # 3: the IP
    wait_until(lambda: d.current_url.endswith(f"/inspect?ip={seed.SCANNER}"), 10, "the inspect page")

    # The inspect page lists its stacks, connections, credentials (ids) and the alert naming it.
    wait_until(lambda: rows(d, "inspect-stacks"), 10, "the stacks of the scanner")
    assert rows(d, "inspect-stacks") == [[SCANNER_SIGNATURE, "network_device", "0", "24"]]
    assert len(rows(d, "inspect-connections")) == 24
    assert {r[0] for r in rows(d, "inspect-credentials")} == {"admin", "kid-forged"}
    assert rows(d, "inspect-alerts")[0][1] == "stack_stuffing"
    assert seed.XSS_AGENT in [r[0] for r in rows(d, "inspect-agents")]
    shot(d, tmp_path, "inspect")
    assert console_errors(d) == []  # no CSP violation, no script error
    d.find_element(By.ID, "inspect-all").click()  # back to the records, filtered on this address
    wait_until(lambda: len(rows(d, "records")) == 24, 10, "the scanner's records on the dashboard")


def test_without_a_session_the_page_says_how_to_log_in(web_server, browser, tmp_path):
    browser.get(web_server.base + "/")
    assert "login link" in browser.find_element("tag name", "body").text
    assert "scan-" not in browser.page_source
    shot(browser, tmp_path, "no-session")

"""Done when: after the demo (`make run`), its store opens in the web view (`authwire web --db`, as the demo
prints), and the demo's brute-force scanner is found from the failures chart to its inspect page in three
clicks — in a real headless Chromium."""

from __future__ import annotations

import os
import re
import signal
import subprocess

import pytest
from test_browser import browser, rows, shot  # noqa: F401  (browser is a fixture)

from authwire.demo.envoy_runner import EnvoyUnavailable, envoy_binary
from support import AUTHWIRE, require, wait_until

pytestmark = [pytest.mark.gateway, pytest.mark.kernel]


def test_demo_scanner_in_three_clicks(tmp_path, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    require(os.geteuid() == 0, "the demo needs root (network namespaces, eBPF)")
    try:
        envoy_binary()
    except EnvoyUnavailable as exc:
        require(False, str(exc))
    out = tmp_path / "demo"
    demo = subprocess.run([AUTHWIRE, "demo", "--output", str(out)], capture_output=True, text=True, timeout=240)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert re.search(r"authwire web --db \S*authwire\.db` prints a one-time login link", demo.stdout), demo.stdout
    scanner_net = re.search(r"scanner\s+(10\.\d+\.\d+)\.\d+", demo.stdout).group(1)  # [1/5]'s host table

    log = tmp_path / "web.out"
    with open(log, "wb") as f:
        web = subprocess.Popen([AUTHWIRE, "web", "--db", str(out / "authwire.db")], stdout=f, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        link = wait_until(lambda: re.search(r"http://127\.0\.0\.1:\d+/\?login=\S+", log.read_text()), 30,
                          "the login link of `authwire web`").group(0)
        d = browser
        d.get(link)
        wait_until(lambda: rows(d, "records"), 20, "records of the demo")
        d.find_element(By.CSS_SELECTOR, "[data-split='syn.signature']").click()           # 1: failures by stack
        wait_until(lambda: d.find_elements(By.CSS_SELECTOR, "#legend button"), 10, "the chart's legend")
        shot(d, tmp_path, "demo-failures-by-stack")
        biggest = d.find_element(By.CSS_SELECTOR, "#legend li button")
        signature = biggest.text.rsplit(" (", 1)[0]
        assert signature.startswith("4:255:")                                              # the bare scanner stack
        biggest.click()                                                                    # 2: its stack
        wait_until(lambda: "syn_signature=" in d.current_url and rows(d, "top-ips")
                   and all(r[0].startswith(scanner_net + ".") for r in rows(d, "top-ips")), 10,
                   "the scanner's addresses as the top failing IPs")
        ip = rows(d, "top-ips")[0][0]
        d.find_element(By.CSS_SELECTOR, "#top-ips a.ip").click()                           # 3: an address
        wait_until(lambda: rows(d, "inspect-stacks"), 10, "the scanner's inspect page")
        assert d.current_url.endswith(f"/inspect?ip={ip}")
        assert rows(d, "inspect-stacks")[0][0] == signature
        assert any(r[1] == "stack_stuffing" for r in rows(d, "inspect-alerts"))
        shot(d, tmp_path, "demo-scanner-inspect")
    finally:
        web.send_signal(signal.SIGTERM)
        web.wait(15)

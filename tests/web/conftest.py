from __future__ import annotations

import os
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import web_seed as seed

from support import AUTHWIRE, wait_until


@dataclass
class WebServer:
    """A real `authwire web --db` process on a seeded store."""
    process: subprocess.Popen
    base: str          # http://127.0.0.1:PORT
    login: str         # the one-time link it printed
    token: str
    db: Path
    output: Path
    records: int

    def get(self, path: str, token: str | None = "", **kw) -> requests.Response:
        headers = kw.pop("headers", {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token or self.token}"
        return requests.get(self.base + path, headers=headers, timeout=30, allow_redirects=False, **kw)

    def new_login(self) -> str:
        """A fresh one-time link, the way a user gets one (`authwire web-url`)."""
        out = subprocess.run([AUTHWIRE, "web-url", "--db", str(self.db), "--url", self.base + "/"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        return out.strip()


def start_web(tmp: Path) -> WebServer:
    db = tmp / "authwire.db"
    n = seed.build(db)
    output = tmp / "web.out"
    with open(output, "wb") as out:
        process = subprocess.Popen([AUTHWIRE, "web", "--db", str(db), "--http-listen", "127.0.0.1:0"],
                                   stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def link() -> str | None:
        if process.poll() is not None:
            raise AssertionError(f"authwire web exited {process.returncode}: {output.read_text()}")
        m = re.search(r"(http://127\.0\.0\.1:\d+)/\?login=(\S+)", output.read_text())
        return m and m.group(0)

    url = wait_until(link, 30, "authwire web to print its login link")
    base = url.split("/?", 1)[0]
    token = (tmp / "token").read_text().strip()
    return WebServer(process, base, url, token, db, output, n)


@pytest.fixture(scope="package")
def web_server(tmp_path_factory) -> WebServer:
    server = start_web(tmp_path_factory.mktemp("web"))
    try:
        yield server
    finally:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def pytest_terminal_summary(terminalreporter):
    from test_browser import SCREENSHOTS

    if SCREENSHOTS:
        terminalreporter.write_line("web view screenshots: " + ", ".join(str(p) for p in SCREENSHOTS))

"""`authwire serve` puts the API and the web view on its HTTP listener and logs a one-time login link."""

from __future__ import annotations

import re

import requests

from authwire.v1 import ingest_pb2
from support import auth_event, start_sidecar, wait_until


def test_serve_registers_the_api_and_logs_a_login_link(tmp_path):
    sidecar = start_sidecar(tmp_path, "--http-listen", "127.0.0.1:0")
    try:
        link = wait_until(lambda: re.search(r"web view: ((http://127\.0\.0\.1:\d+)/\?login=\S+)", sidecar.log_text()),
                          20, "the web view's login link in the log")
        base = link.group(2)
        token = (tmp_path / "token").read_text().strip()
        assert token not in sidecar.log_text()  # the link is not the token, and the token is never logged
        assert sidecar.ingest().Report(ingest_pb2.ReportRequest(events=[auth_event("via-serve")])).accepted == 1
        r = requests.get(f"{base}/v1/records?request_id=via-serve", headers={"Authorization": f"Bearer {token}"},
                         timeout=10)
        assert [rec["event"]["request_id"] for rec in r.json()["records"]] == ["via-serve"]
        assert requests.get(f"{base}/v1/records", timeout=10).status_code == 401
        stats = requests.get(f"{base}/v1/stats", headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
        assert stats["store_records"] == "1" and stats["counters"]  # the sidecar's own Stats: its counters too
        s = requests.Session()
        assert s.get(link.group(1), timeout=10).status_code == 200  # login, redirect, the page
        assert s.get(f"{base}/v1/records?limit=1", timeout=10).status_code == 200
    finally:
        sidecar.stop()

"""Alerts through a real `authwire serve`: raised from ingested reports, queried, followed, kept across kill -9."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time

from authwire.v1 import auth_event_pb2 as ae
from authwire.v1 import ingest_pb2
from tests.support import AUTHWIRE, auth_event, start_sidecar, wait_until


def keepalive_attack(prefix: str, conn_id: int, n: int = 30) -> list[ae.AuthEvent]:
    """n failed Basic logins with different usernames on one gateway connection (no kernel needed)."""
    now = time.time()
    events = []
    for i in range(n):
        e = auth_event(f"{prefix}-{i}", client=("203.0.113.50", 41000), start=now - 1 + i * 0.01,
                       method=ae.AUTH_METHOD_BASIC, outcome=ae.AUTH_OUTCOME_FAILURE, consumer="",
                       credential_id=f"user{i}", reason=ae.FAILURE_REASON_INVALID_CREDENTIALS)
        e.gateway_connection_id = conn_id
        e.connection_requests = i + 1
        events.append(e)
    return events


def alerts_json(sidecar, *args: str) -> list[dict]:
    out = sidecar.cli("alerts", "--format", "json", *args).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_alert_is_raised_queried_and_survives_kill_9(tmp_path):
    jsonl = tmp_path / "records.jsonl"
    sidecar = start_sidecar(tmp_path, "--jsonl", str(jsonl))
    try:
        response = sidecar.ingest().Report(ingest_pb2.ReportRequest(events=keepalive_attack("ka", 7)), timeout=10)
        assert response.accepted == 30
        found = wait_until(lambda: alerts_json(sidecar), 10, "the keep-alive stuffing alert")
        assert len(found) == 1
        alert = found[0]
        assert alert["detection"] == "keepalive_stuffing" and alert["severity"] == "ALERT_SEVERITY_WARNING"
        assert alert["key"] == "conn=gw-1#7" and alert["clients"] == ["203.0.113.50"]
        assert "ka-0" in alert["request_ids"] and set(alert["credentials"]) >= {"user0", "user29"}
        # filters: by detection, severity and client
        assert alerts_json(sidecar, "--detection", "stack_stuffing") == []
        assert alerts_json(sidecar, "--severity", "critical") == []
        assert [a["id"] for a in alerts_json(sidecar, "--client-ip", "203.0.113.50")] == [alert["id"]]
        table = sidecar.cli("alerts").stdout
        assert "keepalive_stuffing" in table and alert["id"] in table
        stats = json.loads(sidecar.cli("stats", "--format", "json").stdout)
        assert stats["store_alerts"] == "1"
        assert "; 1 alerts" in sidecar.cli("stats").stdout.splitlines()[0]
        counters = {(c["name"], c.get("label", "")): int(c["value"]) for c in stats["counters"]}
        assert counters[("alerts.raised", "keepalive_stuffing")] == 1
        assert counters[("detect.records", "")] == 30
        # the alerts JSONL file beside the records' one has it too
        lines = wait_until(lambda: (tmp_path / "records.alerts.jsonl").read_text().splitlines(), 5, "alerts JSONL")
        assert json.loads(lines[0])["id"] == alert["id"]
        wait_until(lambda: any(c["name"] == "alerts.jsonl_written" for c in json.loads(
            sidecar.cli("stats", "--format", "json").stdout)["counters"]), 5, "alerts.jsonl_written counted")
        db_alerts = tmp_path / "authwire.alerts.db"
        assert stat.S_IMODE(os.stat(db_alerts).st_mode) == 0o600
    finally:
        sidecar.kill()  # kill -9: no shutdown path runs

    # read beside nothing (the writer is gone), then by a new sidecar on the same store
    offline = subprocess.run([AUTHWIRE, "alerts", "--db", str(sidecar.db), "--format", "json"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    assert [json.loads(line)["id"] for line in offline.splitlines()] == [alert["id"]]
    again = start_sidecar(tmp_path, db=sidecar.db)
    try:
        assert [a["id"] for a in alerts_json(again)] == [alert["id"]]
    finally:
        again.stop()


def test_alerts_follow_sees_new_alerts(tmp_path):
    sidecar = start_sidecar(tmp_path)
    sidecar.ingest().Report(ingest_pb2.ReportRequest(events=keepalive_attack("old", 8)), timeout=10)
    wait_until(lambda: alerts_json(sidecar), 10, "the first alert")
    follower = subprocess.Popen([AUTHWIRE, "alerts", "-f", "-n", "1", "--format", "json", "--server",
                                 sidecar.address], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # the backlog line proves the follower is connected; what comes after it is new
        assert json.loads(follower.stdout.readline())["key"] == "conn=gw-1#8"
        sidecar.ingest().Report(ingest_pb2.ReportRequest(events=keepalive_attack("new", 9)), timeout=10)
        alert = json.loads(follower.stdout.readline())
        assert alert["detection"] == "keepalive_stuffing" and alert["key"] == "conn=gw-1#9"
    finally:
        follower.kill()
        follower.wait()
        sidecar.stop()


def test_detections_off_keeps_the_alert_api(tmp_path):
    sidecar = start_sidecar(tmp_path, "--detections", "off")
    try:
        sidecar.ingest().Report(ingest_pb2.ReportRequest(events=keepalive_attack("off", 3)), timeout=10)
        assert alerts_json(sidecar) == []
        stats = json.loads(sidecar.cli("stats", "--format", "json").stdout)
        assert not any(c["name"] == "detect.records" for c in stats["counters"])
    finally:
        sidecar.stop()


def test_sigterm_writes_the_alerts_of_the_last_batches(tmp_path):
    sidecar = start_sidecar(tmp_path)
    sidecar.ingest().Report(ingest_pb2.ReportRequest(events=keepalive_attack("term", 11)), timeout=10)
    assert sidecar.stop() == 0  # at once: the detections finish the queued batch before exiting
    offline = subprocess.run([AUTHWIRE, "alerts", "--db", str(sidecar.db), "--format", "json"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    assert [json.loads(line)["key"] for line in offline.splitlines()] == ["conn=gw-1#11"]


def test_alert_retention_follows_the_records_age(tmp_path):
    from authwire.store.alerts import AlertStore
    from authwire.v1 import query_pb2, record_pb2

    store = AlertStore(tmp_path / "a.alerts.db")
    old, new = record_pb2.Alert(id="old", detection="x"), record_pb2.Alert(id="new", detection="x")
    old.last_time.FromSeconds(int(time.time()) - 3 * 86400)
    new.last_time.FromSeconds(int(time.time()))
    store.upsert([old, new])
    assert store.apply_retention(2 * 86400) == 1
    assert [a.id for a in store.query(query_pb2.AlertFilters()).alerts] == ["new"]

"""Querying through the real CLI (subprocess) against a real sidecar: every filter, every format."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import threading
import time

import pytest

from authwire.v1 import auth_event_pb2 as pb
from authwire.v1 import ingest_pb2, query_pb2
from support import AUTHWIRE, auth_event, start_sidecar, wait_until

NOW = time.time()


def _events() -> list[pb.AuthEvent]:
    f = pb.AUTH_OUTCOME_FAILURE
    return [
        auth_event("ok-alice", client=("10.1.0.5", 41000), start=NOW - 60),
        auth_event("ok-bob", client=("10.1.0.6", 41001), start=NOW - 50, consumer="bob", credential_id="key-bob"),
        auth_event("bad-basic", client=("10.2.0.7", 41002), start=NOW - 40, method=pb.AUTH_METHOD_BASIC,
                   outcome=f, reason=pb.FAILURE_REASON_INVALID_CREDENTIALS, consumer="", credential_id="mallory"),
        auth_event("bad-jwt", client=("2001:db8::7", 41003), start=NOW - 30, outcome=f,
                   reason=pb.FAILURE_REASON_EXPIRED, consumer=""),
        auth_event("old", client=("10.1.0.5", 41004), start=NOW - 7200),
    ]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    sidecar = start_sidecar(tmp_path_factory.mktemp("query"))
    events = _events()
    events[2].http.status = 401
    events[3].http.status = 401
    events[1].route_id = "payments"
    try:
        response = sidecar.ingest().Report(ingest_pb2.ReportRequest(events=events))
        assert response.accepted == len(events)
        yield sidecar
    finally:
        sidecar.kill()


def _ids(sidecar, *args: str) -> list[str]:
    out = sidecar.cli("query", "--format", "json", *args).stdout
    return [json.loads(line)["event"]["request_id"] for line in out.splitlines()]


@pytest.mark.parametrize("args, expected", [
    ((), ["bad-jwt", "bad-basic", "ok-bob", "ok-alice", "old"]),  # newest first
    (("--since", "15m"), ["bad-jwt", "bad-basic", "ok-bob", "ok-alice"]),
    (("--until", "1h"), ["old"]),
    (("--consumer", "bob"), ["ok-bob"]),
    (("--credential", "mallory"), ["bad-basic"]),
    (("--client-ip", "10.1.0.0/16"), ["ok-bob", "ok-alice", "old"]),
    (("--client-ip", "10.2.0.7"), ["bad-basic"]),
    (("--client-ip", "2001:db8::/32"), ["bad-jwt"]),
    (("--outcome", "failure"), ["bad-jwt", "bad-basic"]),
    (("--method", "basic"), ["bad-basic"]),
    (("--reason", "expired"), ["bad-jwt"]),
    (("--route", "payments"), ["ok-bob"]),
    (("--status", "401"), ["bad-jwt", "bad-basic"]),
    (("--request-id", "ok-alice"), ["ok-alice"]),
    (("--join-status", "inspector_off", "--limit", "2"), ["bad-jwt", "bad-basic"]),
    (("--outcome", "success", "--client-ip", "10.1.0.6"), ["ok-bob"]),
])
def test_filters(loaded, args, expected):
    assert _ids(loaded, *args) == expected


def test_table_and_csv_show_the_same_records(loaded):
    table = loaded.cli("query", "--outcome", "failure").stdout.splitlines()
    assert table[0].split()[:3] == ["TIME", "CLIENT", "METHOD"]
    assert any("bad-basic" in line and "invalid_credentials" in line and "10.2.0.7:41002" in line for line in table)
    rows = list(csv.DictReader(io.StringIO(loaded.cli("query", "--format", "csv", "--outcome", "failure").stdout)))
    assert [r["request_id"] for r in rows] == ["bad-jwt", "bad-basic"]
    assert rows[0]["reason"] == "expired" and rows[0]["client"] == "2001:db8::7:41003"


def test_group_by_counts(loaded):
    out = loaded.cli("query", "--group-by", "auth.outcome,client_ip", "--format", "json").stdout
    groups = [json.loads(line) for line in out.splitlines()]
    assert {"count": 2, "auth.outcome": "success", "client_ip": "10.1.0.5"} in groups
    assert sum(g["count"] for g in groups) == 5
    bad = loaded.cli("query", "--group-by", "shoe_size", check=False)
    assert bad.returncode == 2 and "shoe_size" in bad.stderr


def test_db_flag_reads_the_store_file_directly(loaded):
    out = subprocess.run([AUTHWIRE, "query", "--db", str(loaded.db), "--format", "json", "--consumer", "bob"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["event"]["request_id"] for line in out.stdout.splitlines()] == ["ok-bob"]
    missing = subprocess.run([AUTHWIRE, "query", "--db", str(loaded.db) + ".nope"], capture_output=True,
                             text=True, timeout=30)
    assert missing.returncode == 2 and "no authwire store" in missing.stderr


def test_pages_cover_everything_once(loaded):
    seen, token = [], ""
    while True:
        page = loaded.query().Query(query_pb2.QueryRequest(limit=2, page_token=token))
        seen += [r.event.request_id for r in page.records]
        token = page.next_page_token
        if not token:
            break
    assert seen == ["bad-jwt", "bad-basic", "ok-bob", "ok-alice", "old"]


def test_bad_filter_values_are_named(loaded):
    for args, words in [(("--outcome", "maybe"), "--outcome"), (("--since", "yesterday-ish"), "--since"),
                        (("--client-ip", "10.0.0.0/99"), "--client-ip"),
                        (("--limit", "-1"), "--limit"), (("--group-by", "nope"), "--group-by")]:
        result = loaded.cli("query", *args, check=False)
        assert result.returncode == 2 and words in result.stderr, result.stderr


def test_unreachable_sidecar_is_a_clear_error(tmp_path):
    result = subprocess.run([AUTHWIRE, "stats", "--server", f"unix:{tmp_path}/none.sock"], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2 and "UNAVAILABLE" in result.stderr


def test_ingest_command_reports_accepted_and_rejected_lines(sidecar, tmp_path):
    good = json.dumps({"request_id": "cli-1", "start_time": "2026-01-01T00:00:00Z",
                       "client": {"ip": "10.9.9.9", "port": 1234}, "server": {"ip": "10.9.9.1", "port": 443},
                       "auth": {"method": "AUTH_METHOD_KEY_AUTH", "outcome": "AUTH_OUTCOME_SUCCESS"}})
    bad_port = good.replace('"port": 1234', '"port": 0').replace("cli-1", "cli-2")
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join([good, "{not json", bad_port, ""]))
    result = sidecar.cli("ingest", str(path), check=False)
    assert result.returncode == 1
    assert "rejected line 2: not an AuthEvent" in result.stdout
    assert "rejected line 3: client.port: 0 is outside 1..65535" in result.stdout
    assert "accepted 1, rejected 2" in result.stdout
    piped = sidecar.cli("ingest", "-", input=good.replace("cli-1", "cli-3") + "\n")
    assert "accepted 1, rejected 0" in piped.stdout
    assert _ids(sidecar, "--method", "key_auth") == ["cli-3", "cli-1"]


def test_tail_follow_sees_new_records_once_each(sidecar):
    f = pb.AUTH_OUTCOME_FAILURE
    sidecar.ingest().Report(ingest_pb2.ReportRequest(events=[
        auth_event("fail-before", outcome=f, reason=pb.FAILURE_REASON_EXPIRED, start=NOW - 5)]))
    proc = subprocess.Popen([AUTHWIRE, "tail", "-f", "--format", "json", "--outcome", "failure", "--server",
                             sidecar.address], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        # the backlog line proves the follow has started; everything after it must arrive exactly once
        wait_until(lambda: lines, 20, "tail -f to print its backlog")
        for i in range(20):
            sidecar.ingest().Report(ingest_pb2.ReportRequest(events=[
                auth_event(f"ok-{i}"), auth_event(f"fail-{i}", outcome=f, reason=pb.FAILURE_REASON_EXPIRED)]))
        wait_until(lambda: len(lines) >= 21, 10, "tail -f to print 20 new failures")
        ids = [json.loads(line)["event"]["request_id"] for line in lines]
        assert ids == ["fail-before", *(f"fail-{i}" for i in range(20))]
    finally:
        proc.terminate()
        proc.wait(10)


def test_tail_without_follow_prints_the_latest_oldest_first(loaded):
    out = loaded.cli("tail", "-n", "2", "--format", "json").stdout
    assert [json.loads(line)["event"]["request_id"] for line in out.splitlines()] == ["bad-basic", "bad-jwt"]


def test_stats_json_and_connections_without_inspector(loaded):
    stats = json.loads(loaded.cli("stats", "--format", "json").stdout)
    assert int(stats["store_records"]) == 5
    assert stats.get("inspector_running", False) is False
    assert {"name": "ingest.accepted", "label": "grpc", "value": "5"} in stats["counters"]
    result = loaded.cli("connections", check=False)
    assert result.returncode == 2
    assert "FAILED_PRECONDITION" in result.stderr and "--no-inspector" in result.stderr

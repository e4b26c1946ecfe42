"""Real Envoy (child process) -> ALS -> real `authwire serve` (no inspector) -> store, on loopback.

The kernel-joined version of this runs in network namespaces (test_envoy_netns.py); this one proves the
Envoy path alone, fast: every auth case becomes exactly one stored record with the right outcome, reason
and consumer, and no secret (token, password, Authorization header) reaches the store.
"""

from __future__ import annotations

import copy
import json
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from google.protobuf import json_format

from authwire.demo.credentials import DemoCredentials, basic_header
from authwire.demo.envoy_runner import EnvoyProcess, EnvoyUnavailable, GatewaySpec, envoy_binary
from authwire.v1 import auth_event_pb2 as ae
from authwire.v1 import query_pb2, record_pb2
from support import free_port, require, start_sidecar, wait_until

pytestmark = pytest.mark.gateway


def get(url: str, headers: dict[str, str]) -> tuple[int, str]:
    """(status, x-request-id we sent)"""
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, headers["x-request-id"]
    except urllib.error.HTTPError as exc:
        return exc.code, headers["x-request-id"]


CASES = {
    # name: (path, credential kind, expected status, method, outcome, reason, consumer)
    "jwt_valid": ("/jwt/orders", "jwt", 200, ae.AUTH_METHOD_JWT, ae.AUTH_OUTCOME_SUCCESS,
                  ae.FAILURE_REASON_UNSPECIFIED, "alice"),
    "jwt_missing": ("/jwt/orders", None, 401, ae.AUTH_METHOD_JWT, ae.AUTH_OUTCOME_FAILURE,
                    ae.FAILURE_REASON_MISSING_CREDENTIALS, ""),
    "jwt_expired": ("/jwt/orders", "jwt_expired", 401, ae.AUTH_METHOD_JWT, ae.AUTH_OUTCOME_FAILURE,
                    ae.FAILURE_REASON_EXPIRED, ""),
    "jwt_bad_signature": ("/jwt/orders", "jwt_bad_signature", 401, ae.AUTH_METHOD_JWT, ae.AUTH_OUTCOME_FAILURE,
                          ae.FAILURE_REASON_BAD_SIGNATURE, ""),
    "basic_valid": ("/basic/orders", "basic", 200, ae.AUTH_METHOD_BASIC, ae.AUTH_OUTCOME_SUCCESS,
                    ae.FAILURE_REASON_UNSPECIFIED, "bob"),
    "basic_wrong_password": ("/basic/orders", "basic_wrong", 401, ae.AUTH_METHOD_BASIC, ae.AUTH_OUTCOME_FAILURE,
                             ae.FAILURE_REASON_INVALID_CREDENTIALS, ""),
}


def credential_header(creds: DemoCredentials, kind: str | None) -> dict[str, str]:
    if kind is None:
        return {}
    value = {
        "jwt": lambda: "Bearer " + creds.token("alice", jti="jti-secret-1"),
        "jwt_expired": lambda: "Bearer " + creds.token("alice", expired=True),
        "jwt_bad_signature": lambda: "Bearer " + creds.token("mallory", bad_signature=True),
        "basic": lambda: basic_header("bob", creds.users["bob"]),
        "basic_wrong": lambda: basic_header("bob", "not-builder"),
    }[kind]()
    return {"Authorization": value}


@pytest.fixture
def envoy_and_sidecar(tmp_path):
    try:
        envoy_binary()
    except EnvoyUnavailable as exc:
        require(False, str(exc))
    sidecar = start_sidecar(tmp_path, "--jsonl", str(tmp_path / "records.jsonl"))
    creds = DemoCredentials()
    port = free_port()
    spec = GatewaySpec(listen=f"127.0.0.1:{port}", als_target=sidecar.address,
                       admin_socket=str(tmp_path / "envoy-admin.sock"), node_id="envoy-live-test")
    envoy = EnvoyProcess(spec, creds, tmp_path / "envoy")
    try:
        envoy.wait_ready()
        yield envoy, sidecar, creds, f"http://127.0.0.1:{port}"
    finally:
        envoy.stop()
        sidecar.kill()


def test_every_auth_case_becomes_one_record_with_outcome_reason_and_consumer(envoy_and_sidecar, tmp_path):
    envoy, sidecar, creds, base = envoy_and_sidecar
    sent: dict[str, tuple[str, dict[str, str]]] = {}
    for name, (path, kind, status, *_rest) in CASES.items():
        headers = {"x-request-id": f"live-{name}", "x-consumer": "spoofed", **credential_header(creds, kind)}
        got, request_id = get(base + path, headers)
        assert got == status, f"{name}: Envoy answered {got}, expected {status}"
        sent[name] = (request_id, headers)

    def stored() -> dict[str, record_pb2.EnrichedRecord] | None:
        response = sidecar.query().Query(query_pb2.QueryRequest(limit=100), timeout=5)
        by_id = {r.event.request_id: r for r in response.records}
        return by_id if len(by_id) >= len(CASES) else None

    records = wait_until(stored, 15, "all ALS entries to be stored")
    assert len(records) == len(CASES)
    for name, (_path, _kind, status, method, outcome, reason, consumer) in CASES.items():
        record = records[sent[name][0]]
        auth = record.event.auth
        assert (auth.method, auth.outcome, auth.reason) == (method, outcome, reason), name
        assert auth.consumer == consumer, name  # never the client's spoofed x-consumer
        assert record.event.http.status == status
        assert record.event.gateway.kind == ae.GATEWAY_KIND_ENVOY
        assert record.event.gateway.node == "envoy-live-test"
        assert record.event.client.ip == "127.0.0.1" and record.event.client.port > 0
        assert record.join.status == record_pb2.JOIN_STATUS_INSPECTOR_OFF
    jwt = records["live-jwt_valid"].event.auth.jwt
    assert (jwt.iss, jwt.sub, jwt.kid, jwt.alg) == (creds.issuer, "alice", creds.kid, "RS256")
    assert jwt.jti_hash and jwt.jti_hash != "jti-secret-1"

    # No secret anywhere authwire writes.
    blobs = [sidecar.db.read_bytes(), (tmp_path / "records.jsonl").read_bytes()]
    for wal in sidecar.db.parent.glob(sidecar.db.name + "-wal"):
        blobs.append(wal.read_bytes())
    for name, (_request_id, headers) in sent.items():
        secret = headers.get("Authorization", "").split(" ", 1)[-1]
        if secret:
            for blob in blobs:
                assert secret.encode() not in blob, f"{name}: credential found in authwire's files"
    for blob in blobs:
        assert b"jti-secret-1" not in blob and b"builder" not in blob

    stats = sidecar.cli("stats", "--format", "json").stdout
    assert "envoy-als" in stats
    assert envoy.stats("access_logs.grpc_access_log.logs_dropped").get(
        "access_logs.grpc_access_log.logs_dropped", 0) == 0


def test_unmappable_entries_are_counted_by_reason_and_their_neighbours_stored(tmp_path):
    """Speaking Envoy's ALS protocol directly (as Envoy does): a batch with a unix-socket peer, a TCP log and
    a good entry stores the good one and counts the others under envoy_als.unmapped{reason}."""
    capture = json.loads((Path(__file__).parent / "data" / "als_capture.json").read_text())
    good = copy.deepcopy(capture)
    good["httpLogs"]["logEntry"] = capture["httpLogs"]["logEntry"][:1]
    bad = copy.deepcopy(capture["httpLogs"]["logEntry"][1])
    bad["commonProperties"]["downstreamDirectRemoteAddress"] = {"pipe": {"path": "/run/gw.sock"}}
    good["httpLogs"]["logEntry"].append(bad)
    first = json_format.Parse(json.dumps(good), als_pb2.StreamAccessLogsMessage())
    second = als_pb2.StreamAccessLogsMessage()
    second.tcp_logs.log_entry.add()

    sidecar = start_sidecar(tmp_path)
    try:
        with grpc.insecure_channel(sidecar.address) as channel:
            als_pb2_grpc.AccessLogServiceStub(channel).StreamAccessLogs(iter([first, second]), timeout=10)

        def counters() -> dict[tuple[str, str], int] | None:
            stats = sidecar.query().Stats(query_pb2.StatsRequest(), timeout=5)
            found = {(c.name, c.label): c.value for c in stats.counters}
            return found if stats.store_records >= 1 else None

        found = wait_until(counters, 10, "the good entry to be stored")
        assert found[("envoy_als.unmapped", "downstream_remote_not_ip")] == 1
        assert found[("envoy_als.unmapped", "tcp_entry")] == 1
        assert found[("ingest.accepted", "envoy-als")] == 1
        records = sidecar.query().Query(query_pb2.QueryRequest(), timeout=5).records
        assert [r.event.request_id for r in records] == [capture["httpLogs"]["logEntry"][0]["request"]["requestId"]]
        assert "downstream_remote_not_ip" in sidecar.log_text()  # explained, not dropped silently
    finally:
        sidecar.kill()

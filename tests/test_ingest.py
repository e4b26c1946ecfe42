"""Ingest over real gRPC into a real `authwire serve`: validation, acknowledgement, durability, shutdown."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from authwire.v1 import auth_event_pb2 as pb
from authwire.v1 import ingest_pb2, query_pb2, record_pb2
from support import AUTHWIRE, auth_event, start_sidecar, wait_until


def _stored_ids(sidecar) -> set[str]:
    response = sidecar.query().Query(query_pb2.QueryRequest(limit=1000))
    return {r.event.request_id for r in response.records}


def _bad(mutate) -> pb.AuthEvent:
    event = auth_event("bad")
    mutate(event)
    return event


def _set_future(event: pb.AuthEvent) -> None:
    event.start_time.FromSeconds(int(time.time()) + 3600)


BAD_EVENTS = [
    # (what, mutation, field named in the rejection, words the reason must contain)
    ("unparsable client ip", lambda e: setattr(e.client, "ip", "10.0.0.256"), "client.ip", "not an IP address"),
    ("unparsable server ip", lambda e: setattr(e.server, "ip", "not-an-ip"), "server.ip", "not an IP address"),
    ("IPv6 zone id", lambda e: setattr(e.client, "ip", "fe80::1%eth0"), "client.ip", "zone id"),
    ("nanos out of range", lambda e: setattr(e.start_time, "nanos", 2_000_000_000), "start_time", "nanos"),
    ("start_time beyond year 9999", lambda e: setattr(e.start_time, "seconds", 2**62), "start_time", "not a real"),
    ("latency nanos out of range", lambda e: setattr(e.latency, "nanos", 1_500_000_000), "latency", "Duration"),
    ("raw jti in jti_hash", lambda e: setattr(e.auth.jwt, "jti_hash", "jti-1234"), "auth.jwt.jti_hash", "SHA-256"),
    ("client port 0", lambda e: setattr(e.client, "port", 0), "client.port", "outside 1..65535"),
    ("server port > 65535", lambda e: setattr(e.server, "port", 70000), "server.port", "70000"),
    ("empty request id", lambda e: setattr(e, "request_id", ""), "request_id", "empty"),
    ("oversize path", lambda e: setattr(e.http, "path", "/" + "a" * 5000), "http.path", "5001 characters"),
    ("oversize message", lambda e: setattr(e.auth, "message", "x" * 2000), "auth.message", "more than the 1024"),
    ("unknown outcome enum", lambda e: setattr(e.auth, "outcome", 42), "auth.outcome", "unknown AuthOutcome value 42"),
    ("unknown reason enum", lambda e: setattr(e.auth, "reason", 99), "auth.reason", "FailureReason"),
    ("start_time far in the future", _set_future, "start_time", "in the future"),
    ("missing client", lambda e: e.ClearField("client"), "client", "missing"),
    ("a token as credential id", lambda e: setattr(e.auth, "credential_id", "eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl"),
     "auth.credential_id", "secret"),
]


def test_each_bad_field_is_rejected_by_name_and_neighbours_are_stored(sidecar):
    events = []
    for i, (_, mutate, _, _) in enumerate(BAD_EVENTS):
        events.append(auth_event(f"good-{i}"))
        events.append(_bad(mutate))
    events.append(auth_event("good-last"))

    response = sidecar.ingest().Report(ingest_pb2.ReportRequest(events=events))

    assert response.accepted == len(BAD_EVENTS) + 1
    by_index = {r.index: r for r in response.rejections}
    for i, (what, _, field, words) in enumerate(BAD_EVENTS):
        rejection = by_index.get(2 * i + 1)
        assert rejection is not None, f"{what}: not rejected"
        assert rejection.field == field, f"{what}: named {rejection.field!r}"
        assert words in rejection.reason, f"{what}: reason {rejection.reason!r} lacks {words!r}"
        # the rejected value itself is never echoed back (it may be a secret or a terminal escape)
        for value in ("10.0.0.256", "not-an-ip", "eth0", "jti-1234", "eyJhbGciOi", "aaaa"):
            assert value not in rejection.reason, f"{what}: reason echoes {value!r}"
    assert set(by_index) == {2 * i + 1 for i in range(len(BAD_EVENTS))}, "a good event was rejected"
    assert _stored_ids(sidecar) == {f"good-{i}" for i in range(len(BAD_EVENTS))} | {"good-last"}
    stats = sidecar.query().Stats(query_pb2.StatsRequest())
    rejected = {c.label: c.value for c in stats.counters if c.name == "ingest.rejected"}
    assert rejected["client.port"] == 1 and rejected["start_time"] == 3
    assert sum(rejected.values()) == len(BAD_EVENTS)
    counts = {(c.name, c.label): c.value for c in stats.counters}
    assert counts[("ingest.rejected_events", "grpc")] == len(BAD_EVENTS)
    assert counts[("ingest.received", "grpc")] == counts[("ingest.accepted", "grpc")] + len(BAD_EVENTS)


def test_ipv4_mapped_ipv6_is_stored_as_ipv4_and_records_join_inspector_off(sidecar):
    sidecar.ingest().Report(ingest_pb2.ReportRequest(events=[auth_event("m1", client=("::ffff:198.51.100.7", 5555))]))
    record = sidecar.query().Query(query_pb2.QueryRequest()).records[0]
    assert record.event.client.ip == "198.51.100.7"
    assert record.join.status == record_pb2.JOIN_STATUS_INSPECTOR_OFF
    assert record.received_time.seconds > 0


def test_report_stream_answers_each_batch_in_order(sidecar):
    batches = [ingest_pb2.ReportRequest(events=[auth_event(f"s{b}-{i}") for i in range(b + 1)]) for b in range(5)]
    responses = list(sidecar.ingest().ReportStream(iter(batches)))
    assert [r.accepted for r in responses] == [1, 2, 3, 4, 5]
    assert len(_stored_ids(sidecar)) == 15


def test_acknowledged_records_survive_kill_9_and_restart(tmp_path):
    first = start_sidecar(tmp_path)
    try:
        for b in range(20):
            response = first.ingest().Report(ingest_pb2.ReportRequest(
                events=[auth_event(f"k{b}-{i}") for i in range(50)]))
            assert response.accepted == 50
    finally:
        first.kill()  # SIGKILL right after the last ack: no chance to flush anything more
    second = start_sidecar(tmp_path, db=first.db)
    try:
        count = second.query().Stats(query_pb2.StatsRequest()).store_records
        assert count == 1000
    finally:
        second.kill()


def test_sigterm_exits_cleanly_and_keeps_everything(tmp_path):
    sidecar = start_sidecar(tmp_path, "--jsonl", str(tmp_path / "records.jsonl"))
    sidecar.ingest().Report(ingest_pb2.ReportRequest(events=[auth_event(f"t{i}") for i in range(10)]))
    assert sidecar.stop() == 0
    assert "authwire stopped" in sidecar.log_text()
    lines = (tmp_path / "records.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["event"]["request_id"] for line in lines) == sorted(f"t{i}" for i in range(10))
    # JSONL uses the proto3 JSON mapping with proto field names and enum names
    first = json.loads(lines[0])
    assert first["event"]["auth"]["outcome"] == "AUTH_OUTCOME_SUCCESS"
    assert first["join"]["status"] == "JOIN_STATUS_INSPECTOR_OFF"


def test_jsonl_rotates_at_the_size_limit(tmp_path):
    path = tmp_path / "r.jsonl"
    sidecar = start_sidecar(tmp_path, "--jsonl", str(path), "--jsonl-max-bytes", "20000", "--jsonl-keep", "2")
    try:
        for b in range(10):
            sidecar.ingest().Report(ingest_pb2.ReportRequest(events=[auth_event(f"j{b}-{i}") for i in range(20)]))
    finally:
        sidecar.stop()
    rotated = sorted(p.name for p in tmp_path.glob("r.jsonl*"))
    assert rotated == ["r.jsonl", "r.jsonl.1", "r.jsonl.2"]
    assert all(p.stat().st_size <= 20000 for p in tmp_path.glob("r.jsonl*"))
    assert sum(len(p.read_text().splitlines()) for p in tmp_path.glob("r.jsonl*")) < 200  # oldest were dropped


def test_secrets_in_wrong_fields_never_reach_the_store(sidecar):
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2lnbmF0dXJlLXNlY3JldA"
    bad = auth_event("leak", consumer=f"Bearer {token}")
    response = sidecar.ingest().Report(ingest_pb2.ReportRequest(events=[bad, auth_event("fine")]))
    assert [r.field for r in response.rejections] == ["auth.consumer"]
    sidecar.stop()
    for path in sidecar.db.parent.glob("authwire.db*"):
        assert token.encode() not in path.read_bytes()


@pytest.mark.parametrize("source", ["toml", "env"])
def test_settings_come_from_toml_and_env(tmp_path, monkeypatch, source):
    db = tmp_path / "from-settings.db"
    extra: list[str] = []
    if source == "toml":
        (tmp_path / "authwire.toml").write_text(f'db = "{db}"\njoin_wait = 0.1\n')
        extra = ["--config", str(tmp_path / "authwire.toml")]
    else:
        monkeypatch.setenv("AUTHWIRE_DB", str(db))
    # no --db flag here: flags would win over env and TOML
    proc = subprocess.Popen([AUTHWIRE, "serve", "--listen", f"unix:{tmp_path / 's.sock'}", "--no-inspector",
                             "--grpc-web-listen", "off", *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: db.exists() or proc.poll() is not None, 20, "the store file named by the settings")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert db.exists(), out


def test_bad_setting_is_named(tmp_path):
    (tmp_path / "bad.toml").write_text('max_flows = "lots"\n')
    result = subprocess.run([AUTHWIRE, "serve", "--config", str(tmp_path / "bad.toml")], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2
    assert "max_flows" in result.stderr and "lots" in result.stderr


def test_reporter_drops_sent_with_a_report_show_in_stats(sidecar):
    request = ingest_pb2.ReportRequest(events=[auth_event("d1")],
                                       drops=ingest_pb2.ReporterDrops(queue_full=7, send_failed=2))
    assert sidecar.ingest().Report(request).accepted == 1
    out = sidecar.cli("stats").stdout
    assert any(line.split() == ["gateway.dropped", "queue_full", "7"] for line in out.splitlines()), out
    assert any(line.split() == ["gateway.dropped", "send_failed", "2"] for line in out.splitlines()), out


def test_unix_socket_is_group_accessible_only(sidecar):
    path = sidecar.address.removeprefix("unix:")
    assert os.stat(path).st_mode & 0o777 == 0o660


def test_jsonl_write_failures_are_counted_and_the_store_keeps_the_records(tmp_path):
    sidecar = start_sidecar(tmp_path, "--jsonl", "/dev/full")  # every write fails with ENOSPC
    try:
        sent = 0

        def failures_counted() -> int:
            nonlocal sent
            # failures come back from the encoder process with the next batch it is handed
            sidecar.ingest().Report(ingest_pb2.ReportRequest(events=[auth_event(f"full-{sent}")]))
            sent += 1
            stats = sidecar.query().Stats(query_pb2.StatsRequest())
            return sum(c.value for c in stats.counters if c.name == "jsonl.write_failed")

        wait_until(failures_counted, 20, "jsonl.write_failed in stats")
        assert sidecar.query().Stats(query_pb2.StatsRequest()).store_records == sent
    finally:
        sidecar.stop()

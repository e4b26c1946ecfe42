"""The README's ClickHouse queries, run by a real ClickHouse engine (chDB, in process) on records a real sidecar
exported over OTLP, and answering what `authwire query` answers on the sidecar itself.

No OpenTelemetry Collector runs here (none is packaged for this machine), so the step it performs is
substituted: `collector_rows` turns each received ExportLogsServiceRequest into otel_logs rows the way the
Collector's ClickHouse exporter does — opentelemetry-collector-contrib exporter/clickhouseexporter/
exporter_logs.go at commit 0801b46527ecbbe63c5d63d9547c7390a924ad2b: `pushLogsData` (lines 64-131: one row
per LogRecord; Timestamp = its time, else its observed time; ServiceName = the resource's service.name; Body
as AsString), `attributesToMap` (lines 133-140: every attribute value as pcommon Value.AsString(), i.e.
strings as is, ints in decimal, bools true/false, doubles in shortest form, arrays as JSON), and the columns
of `createLogsTableSQL` (lines 142-176; codecs, indexes and TTL left out).
"""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pytest
from dashboard import readme_sql
from otlp_receiver import LogsReceiver

from authwire.export.otlp_logs import alert_log_record
from authwire.v1 import auth_event_pb2 as pb
from authwire.v1 import ingest_pb2, query_pb2, record_pb2
from support import auth_event, require, start_sidecar, wait_until

try:
    from chdb import session as chdb_session
except ImportError:  # pragma: no cover - a test dependency (pyproject [test])
    chdb_session = None

OTEL_LOGS = """
CREATE TABLE authwire.otel_logs (
    Timestamp DateTime64(9), TimestampTime DateTime DEFAULT toDateTime(Timestamp),
    TraceId String, SpanId String, TraceFlags UInt8, SeverityText LowCardinality(String), SeverityNumber UInt8,
    ServiceName LowCardinality(String), Body String, ResourceSchemaUrl LowCardinality(String),
    ResourceAttributes Map(LowCardinality(String), String), ScopeSchemaUrl LowCardinality(String),
    ScopeName String, ScopeVersion LowCardinality(String), ScopeAttributes Map(LowCardinality(String), String),
    LogAttributes Map(LowCardinality(String), String)
) ENGINE = MergeTree PARTITION BY toDate(TimestampTime) ORDER BY (ServiceName, TimestampTime, Timestamp)
"""


def as_string(value) -> str:
    """pcommon Value.AsString() for the value kinds authwire sends."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        text = format(Decimal(repr(value.double_value)), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    if kind == "array_value":
        return json.dumps([json.loads(json.dumps(_raw(v))) for v in value.array_value.values], separators=(",", ":"))
    raise AssertionError(f"authwire does not send {kind}")


def _raw(value):
    kind = value.WhichOneof("value")
    return getattr(value, kind)


def collector_rows(requests) -> list[dict]:
    rows = []
    for request in requests:
        for rl in request.resource_logs:
            resource = {kv.key: as_string(kv.value) for kv in rl.resource.attributes}
            for sl in rl.scope_logs:
                for r in sl.log_records:
                    rows.append({
                        "Timestamp": str(r.time_unix_nano or r.observed_time_unix_nano),
                        "TraceId": r.trace_id.hex(), "SpanId": r.span_id.hex(), "TraceFlags": r.flags,
                        "SeverityText": r.severity_text, "SeverityNumber": r.severity_number,
                        "ServiceName": resource.get("service.name", ""), "Body": as_string(r.body),
                        "ResourceSchemaUrl": rl.schema_url, "ResourceAttributes": resource,
                        "ScopeSchemaUrl": sl.schema_url, "ScopeName": sl.scope.name,
                        "ScopeVersion": sl.scope.version,
                        "ScopeAttributes": {kv.key: as_string(kv.value) for kv in sl.scope.attributes},
                        "LogAttributes": {kv.key: as_string(kv.value) for kv in r.attributes}})
    return rows


def readme_queries() -> dict[str, str]:
    """The README's statements, keyed by their leading comment."""
    out = {}
    for statement in filter(str.strip, readme_sql().split(";")):
        comment = re.search(r"^-- (.*)$", statement.strip(), re.M).group(1)
        out[comment] = statement
    return out


def events() -> list:
    out = []
    for i in range(6):  # one credential from six addresses: the fleet-wide replay question
        out.append(auth_event(f"shared-{i}", client=(f"198.51.100.{10 + i}", 40000 + i), consumer="bob",
                              credential_id="key-shared"))
    for i in range(4):
        out.append(auth_event(f"alice-{i}", client=("10.1.2.3", 41000 + i)))
    for i, reason in enumerate([pb.FAILURE_REASON_EXPIRED] * 3 + [pb.FAILURE_REASON_BAD_SIGNATURE] * 2):
        e = auth_event(f"fail-{i}", client=("10.9.9.9" if i < 3 else "203.0.113.5", 42000 + i),
                       outcome=pb.AUTH_OUTCOME_FAILURE, reason=reason, consumer="", credential_id="")
        e.http.status = 401
        out.append(e)
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(sidecar, chDB session) after a real sidecar exported events() over OTLP into otel_logs."""
    require(chdb_session is not None, "needs chdb-core (pip install -e '.[test]')")
    tmp = tmp_path_factory.mktemp("clickhouse")
    receiver = LogsReceiver().start()
    sidecar = start_sidecar(tmp, "--otlp-endpoint", f"127.0.0.1:{receiver.port}")
    try:
        sent = events()
        assert sidecar.ingest().Report(ingest_pb2.ReportRequest(events=sent), timeout=30).accepted == len(sent)
        wait_until(lambda: receiver.count() == len(sent), 20, "the receiver to get every record")
        db = chdb_session.Session()
        db.query("CREATE DATABASE authwire")
        db.query(OTEL_LOGS)
        rows = collector_rows(receiver.requests)
        alert = record_pb2.Alert(id="A1", detection="stack_stuffing", summary="20 failures from one stack",
                                 severity=record_pb2.ALERT_SEVERITY_CRITICAL)
        alert.time.GetCurrentTime()
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

        request = logs_service_pb2.ExportLogsServiceRequest()
        rl = request.resource_logs.add()
        rl.resource.attributes.add(key="service.name").value.string_value = "authwire"
        rl.scope_logs.add().log_records.append(alert_log_record(alert, True))
        rows += collector_rows([request])
        db.query("INSERT INTO authwire.otel_logs FORMAT JSONEachRow\n" + "\n".join(json.dumps(r) for r in rows))
        yield sidecar, db
    finally:
        sidecar.stop()
        receiver.stop()


def run(db, sql: str) -> list[dict]:
    text = db.query(sql, "JSONEachRow").bytes().decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def sidecar_query(sidecar, group_by=(), **filters) -> query_pb2.QueryResponse:
    return sidecar.query().Query(query_pb2.QueryRequest(filters=query_pb2.Filters(**filters), limit=1000,
                                                        group_by=list(group_by)), timeout=10)


def test_every_readme_query_runs_on_clickhouse(exported):
    _, db = exported
    queries = readme_queries()
    assert len(queries) >= 8
    for comment, sql in queries.items():
        rows = run(db, sql.replace("'8f2c...'", "'fail-0'"))
        if "syn." in comment:
            continue  # runs; SYN facts need the kernel inspector, which this sidecar runs without
        assert rows, f"no rows for: -- {comment}"


def test_failures_and_their_grouping_match_authwire_query(exported):
    sidecar, db = exported
    q = readme_queries()
    newest = run(db, q["authwire query --since 15m --outcome failure          (newest failures, every gateway)"])
    mine = sidecar_query(sidecar, outcome=pb.AUTH_OUTCOME_FAILURE).records
    assert len(newest) == len(mine) == 5
    assert {r["reason"] for r in newest} == {"expired", "bad_signature"} and {r["status"] for r in newest} == {"401"}
    groups = run(db, q["authwire query --since 1h --group-by client_ip,auth.reason      (triage)"])
    theirs = {(g["client"], g["reason"]): int(g["n"]) for g in groups}
    ours = sidecar_query(sidecar, group_by=["client_ip", "auth.reason"], outcome=pb.AUTH_OUTCOME_FAILURE).groups
    assert theirs == {tuple(g.values): g.count for g in ours} == {("10.9.9.9", "expired"): 3,
                                                                  ("203.0.113.5", "bad_signature"): 2}


def test_consumer_network_and_request_id_match_authwire_query(exported):
    sidecar, db = exported
    q = readme_queries()
    alice = run(db, q["authwire query --consumer alice --since 1d"])
    assert len(alice) == len(sidecar_query(sidecar, consumer="alice").records) == 4
    network = run(db, q["authwire query --client-ip 10.0.0.0/8"])
    assert len(network) == len(sidecar_query(sidecar, client_ip="10.0.0.0/8").records) == 7
    one = run(db, q["authwire query --request-id 8f2c..."].replace("'8f2c...'", "'fail-3'"))
    assert len(one) == 1 and one[0]["LogAttributes"]["authwire.auth.reason"] == "bad_signature"
    replay = run(db, q["one credential used from many places (fleet-wide view of the credential_replay detection)"])
    assert [(r["credential"], int(r["ips"])) for r in replay] == [("key-shared", 6)]
    alerts = run(db, q["alerts (authwire alerts)"])
    assert [(a["detection"], a["SeverityText"]) for a in alerts] == [("stack_stuffing", "ERROR")]

"""OTLP log export: a real gRPC LogsService receiver gets every record with OpenTelemetry attributes; a receiver
that is down costs nothing but counted drops; bad endpoints are refused at start."""

from __future__ import annotations

import datetime as dt
import subprocess

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from otlp_receiver import LogsReceiver

from authwire.export.otlp_logs import RecordEncoder, export_request, log_record, resource_head
from authwire.export.otlp_settings import OtlpSettingError, parse_endpoint, parse_headers
from authwire.store.columns import CONN, plain_row_of
from authwire.v1 import auth_event_pb2 as pb
from authwire.v1 import connection_pb2, ingest_pb2, query_pb2, record_pb2
from support import AUTHWIRE, auth_event, free_port, start_sidecar, wait_until


def counter(sidecar, name: str, label: str = "") -> int:
    stats = sidecar.query().Stats(query_pb2.StatsRequest(), timeout=10)
    return sum(c.value for c in stats.counters if c.name == name and c.label == label)


def report(sidecar, events) -> int:
    return sidecar.ingest().Report(ingest_pb2.ReportRequest(events=events), timeout=30).accepted


def test_receiver_gets_every_record_with_semantic_convention_attributes(tmp_path):
    receiver = LogsReceiver().start()
    sidecar = start_sidecar(tmp_path, "--otlp-endpoint", f"127.0.0.1:{receiver.port}",
                            "--otlp-headers", "authorization=Bearer sekrit-otlp-token", "--otlp-batch-records", "7")
    try:
        events = [auth_event(f"ok-{i}", client=("192.0.2.10", 40000 + i)) for i in range(20)]
        failed = auth_event("bad-1", client=("2001:db8::5", 50123), outcome=pb.AUTH_OUTCOME_FAILURE,
                            reason=pb.FAILURE_REASON_EXPIRED, consumer="", credential_id="key-old",
                            method=pb.AUTH_METHOD_BASIC)
        failed.forwarded_for = "203.0.113.9"
        failed.http.status = 401
        failed.auth.jwt.iss = "https://issuer.example"
        assert report(sidecar, [*events, failed]) == 21
        wait_until(lambda: receiver.count() >= 21, 20, "the receiver to get all 21 records")
        got = receiver.by_request_id()
        assert set(got) == {e.request_id for e in events} | {"bad-1"} and receiver.count() == 21

        ok = got["ok-3"]
        assert ok.resource["service.name"] == "authwire"
        assert ok.resource["authwire.gateway.node"] == "gw-1" and ok.resource["host.name"]
        assert ok.scope == "authwire"
        assert ok.metadata["authorization"] == "Bearer sekrit-otlp-token"
        a = ok.attributes
        assert a["client.address"] == "192.0.2.10" and a["client.port"] == 40003
        assert a["network.peer.address"] == "192.0.2.10" and a["network.peer.port"] == 40003
        assert a["server.address"] == "api.example" and a["server.port"] == 443
        assert a["network.local.address"] == "192.0.2.1" and a["network.transport"] == "tcp"
        assert a["http.request.method"] == "GET" and a["http.response.status_code"] == 200
        assert a["url.path"] == "/orders" and a["user_agent.original"] == "curl/8"
        assert a["authwire.auth.method"] == "jwt" and a["authwire.auth.outcome"] == "success"
        assert a["authwire.auth.consumer"] == "alice" and a["authwire.auth.credential_id"] == "key-alice"
        assert a["authwire.join.status"] == "inspector_off" and a["authwire.route.id"] == "orders"
        assert a["authwire.request.duration"] == pytest.approx(0.003)
        assert ok.record.severity_text == "INFO" and ok.record.event_name == "authwire.auth"
        assert ok.record.time_unix_nano == events[3].start_time.ToNanoseconds()
        assert ok.record.observed_time_unix_nano >= ok.record.time_unix_nano

        bad = got["bad-1"].attributes
        assert bad["client.address"] == "203.0.113.9" and "client.port" not in bad  # behind a proxy
        assert bad["network.peer.address"] == "2001:db8::5" and bad["network.type"] == "ipv6"
        assert bad["authwire.auth.outcome"] == "failure" and bad["authwire.auth.reason"] == "expired"
        assert bad["authwire.auth.method"] == "basic" and bad["http.response.status_code"] == 401
        assert bad["authwire.auth.jwt.iss"] == "https://issuer.example"
        assert "authwire.auth.consumer" not in bad  # empty fields are left out, not sent as ""
        assert got["bad-1"].record.severity_text == "WARN"
        assert got["bad-1"].record.body.string_value == "GET /orders 401 basic failure expired"

        wait_until(lambda: counter(sidecar, "otlp.exported", "logs") == 21, 10, "otlp.exported to reach 21")
        assert receiver.calls >= 3  # batches of at most 7
    finally:
        sidecar.stop()
        receiver.stop()
    assert "sekrit-otlp-token" not in sidecar.log_text()


def test_receiver_down_ingest_goes_on_drops_are_counted_and_export_resumes(tmp_path):
    port = free_port()  # nothing listens there yet
    sidecar = start_sidecar(tmp_path, "--otlp-endpoint", f"127.0.0.1:{port}", "--otlp-queue-records", "50",
                            "--otlp-batch-records", "20")
    receiver = LogsReceiver(port=port)
    try:
        sent = 0
        for batch in range(4):
            sent += report(sidecar, [auth_event(f"down-{batch}-{i}") for i in range(30)])
        assert sent == 120, "ingest must not wait for the exporter"
        wait_until(lambda: counter(sidecar, "otlp.export_failed", "unavailable") >= 1, 20,
                   "a failed Export call to be counted")
        # The queue holds 50 (queued + in flight); the other 70 are dropped and counted, none silently.
        wait_until(lambda: counter(sidecar, "otlp.dropped", "queue_full") == 70, 10, "70 queue_full drops")
        assert counter(sidecar, "otlp.exported", "logs") == 0

        receiver.start()
        wait_until(lambda: receiver.count() >= 50, 30, "export to resume once the receiver is back")
        wait_until(lambda: counter(sidecar, "otlp.exported", "logs") == 50, 10, "otlp.exported to reach 50")
        assert receiver.count() == 50
        assert report(sidecar, [auth_event("after-1")]) == 1
        wait_until(lambda: "after-1" in receiver.by_request_id(), 20, "a record sent after recovery")
        assert counter(sidecar, "otlp.dropped", "queue_full") == 70
        assert "OTLP export to 127.0.0.1" in sidecar.log_text() and "resumed" in sidecar.log_text()
    finally:
        sidecar.stop()
        receiver.stop()


@pytest.mark.parametrize(("endpoint", "says"), [
    ("nosuchhost.invalid:4317", "cannot resolve 'nosuchhost.invalid'"),
    ("http://collector:4317", "no scheme"),
    ("collector", "want HOST:PORT"),
    ("collector:99999", "outside 1..65535"),
])
def test_bad_endpoint_is_refused_at_start_naming_it(tmp_path, endpoint, says):
    result = subprocess.run([AUTHWIRE, "serve", "--listen", f"unix:{tmp_path}/a.sock", "--db", str(tmp_path / "a.db"),
                             "--no-inspector", "--grpc-web-listen", "off", "--http-listen", "off",
                             "--otlp-endpoint", endpoint], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"otlp_endpoint {endpoint}" in result.stderr.replace("'", "") or f"otlp_endpoint {endpoint!r}" in \
        result.stderr
    assert says in result.stderr


def test_records_committed_before_sigterm_are_flushed(tmp_path):
    receiver = LogsReceiver().start()
    sidecar = start_sidecar(tmp_path, "--otlp-endpoint", f"127.0.0.1:{receiver.port}", "--otlp-compression", "gzip")
    try:
        assert report(sidecar, [auth_event(f"last-{i}") for i in range(300)]) == 300
        assert sidecar.stop() == 0  # at once: the exporter's close() flushes what the pipeline committed
        assert receiver.count() == 300
    finally:
        sidecar.kill()
        receiver.stop()


def test_refusals_and_partial_rejections_are_counted_as_drops(tmp_path):
    def respond(request, context):
        if dict(context.invocation_metadata()).get("authorization") != "Bearer right":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad token")
        response = logs_service_pb2.ExportLogsServiceResponse()
        response.partial_success.rejected_log_records = 2
        response.partial_success.error_message = "2 too big\n" + "x" * 500  # bounded when logged
        return response

    receiver = LogsReceiver(respond=respond).start()
    wrong = start_sidecar(tmp_path, "--otlp-endpoint", f"127.0.0.1:{receiver.port}",
                          "--otlp-headers", "authorization=Bearer wrong")
    try:
        assert report(wrong, [auth_event(f"u-{i}") for i in range(5)]) == 5
        # not retryable: dropped at once, under the status code's name
        wait_until(lambda: counter(wrong, "otlp.dropped", "unauthenticated") == 5, 20, "5 unauthenticated drops")
        assert counter(wrong, "otlp.export_failed", "unauthenticated") == 1
    finally:
        wrong.stop()
    right = start_sidecar(tmp_path, "--otlp-endpoint", f"127.0.0.1:{receiver.port}",
                          "--otlp-headers", "authorization=Bearer right")
    try:
        assert report(right, [auth_event(f"p-{i}") for i in range(5)]) == 5
        wait_until(lambda: counter(right, "otlp.exported", "logs") == 3, 20, "3 exported")
        assert counter(right, "otlp.dropped", "rejected") == 2
        assert "rejected 2 of 5 records: 2 too big" in right.log_text()
        assert "x" * 300 not in right.log_text()
    finally:
        right.stop()
        receiver.stop()


def test_tls_endpoint_verified_with_the_configured_ca(tmp_path):
    cert, key = _self_signed(tmp_path)
    receiver = LogsReceiver(credentials=grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])).start()
    # "localhost" is loopback, but a CA file asks for TLS; the certificate names localhost.
    sidecar = start_sidecar(tmp_path, "--otlp-endpoint", f"localhost:{receiver.port}", "--otlp-ca-file", str(cert))
    try:
        assert report(sidecar, [auth_event("tls-1")]) == 1
        wait_until(lambda: "tls-1" in receiver.by_request_id(), 20, "the record over TLS")
    finally:
        sidecar.stop()
        receiver.stop()


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


# --- the encoder: fast path == messages ------------------------------------------------------------------

texts = st.text(max_size=40)
small = st.integers(min_value=0, max_value=70000)


@st.composite
def records(draw) -> record_pb2.EnrichedRecord:
    event = auth_event(draw(st.text(min_size=1, max_size=30)),
                       client=(draw(st.sampled_from(["192.0.2.1", "2001:db8::1", ""])), draw(small)),
                       server=(draw(st.sampled_from(["192.0.2.2", ""])), draw(small)),
                       outcome=draw(st.sampled_from(list(pb.AuthOutcome.values()))),
                       reason=draw(st.sampled_from(list(pb.FailureReason.values()))),
                       consumer=draw(texts), credential_id=draw(texts), message=draw(texts))
    event.http.path, event.http.user_agent, event.http.host = draw(texts), draw(texts), draw(texts)
    event.http.status, event.http.request_bytes = draw(small), draw(st.integers(0, 2**63 - 1))
    event.forwarded_for = draw(st.sampled_from(["", "203.0.113.1"]))
    event.gateway_connection_id = draw(st.integers(0, 2**64 - 1))
    if draw(st.booleans()):
        event.auth.jwt.iss, event.auth.jwt.exp = draw(texts), draw(st.integers(-2**62, 2**62))
    event.latency.FromNanoseconds(draw(st.integers(0, 10**12)))
    record = record_pb2.EnrichedRecord(event=event, join=record_pb2.Join(
        status=draw(st.sampled_from(list(record_pb2.JoinStatus.values()))),
        kernel_events_lost=draw(st.integers(0, 5)), behind_proxy=bool(event.forwarded_for)))
    uid = draw(st.sampled_from(["", "C1", "C2", "C3"]))
    if uid:
        # A uid names one connection: what it saw at the handshake is the same in every record of it.
        conn = record.connection
        conn.uid, conn.community_id, conn.interface = uid, f"1:{uid}=", "eth0"
        if uid == "C2":
            conn.mid_stream = True
        else:
            conn.syn.signature, conn.syn.ttl, conn.syn.window_scale = f"sig-{uid}", 60, -1 if uid == "C1" else 7
            conn.handshake_rtt.FromNanoseconds(120_000 if uid == "C1" else 2_500_000)
        conn.state = draw(st.sampled_from(list(connection_pb2.ConnectionState.values())))
        conn.to_server.retransmits = draw(st.integers(0, 3))
    record.received_time.FromNanoseconds(draw(st.integers(0, 2**62)))
    return record


def pipeline_rows(batch: list[record_pb2.EnrichedRecord]) -> list[tuple]:
    """The plain rows the pipeline would hand the exporter: rows of one connection (same facts) share one
    Connection object, as they do in the pipeline (the store's kept facts)."""
    shared: dict[bytes, connection_pb2.Connection] = {}
    rows = []
    for record in batch:
        row = plain_row_of(record)
        if row[CONN] is not None:
            row = (*row[:CONN], shared.setdefault(row[CONN].SerializeToString(deterministic=True), row[CONN]))
        rows.append(row)
    return rows


@settings(max_examples=150, deadline=None)
@given(st.lists(records(), min_size=1, max_size=6))
def test_fast_encoding_equals_the_message_built_log_record(batch):
    """The cached, concatenated encoding of a plain row parses to exactly the LogRecord built from the
    record's messages, also when the caches are shared between records (same connection, same route) that
    differ elsewhere."""
    encoder = RecordEncoder()
    for record, row in zip(batch, pipeline_rows(batch), strict=True):
        fast = logs_pb2.LogRecord.FromString(encoder.encode(row))
        reference = log_record(record)
        assert {kv.key: kv.value for kv in fast.attributes} == {kv.key: kv.value for kv in reference.attributes}
        assert len(fast.attributes) == len(reference.attributes)
        fast.ClearField("attributes")
        reference.ClearField("attributes")
        assert fast == reference


def test_export_request_envelope_parses_with_one_resource_per_gateway():
    encoder = RecordEncoder()
    a, b = (record_pb2.EnrichedRecord(event=auth_event(i)) for i in ("a", "b"))
    b.event.gateway.node = "gw-2"
    body = export_request([(resource_head(1, "gw-1", "3.18.0"), [encoder.encode(plain_row_of(a))]),
                           (resource_head(1, "gw-2", "3.18.0"), [encoder.encode(plain_row_of(b))])])
    request = logs_service_pb2.ExportLogsServiceRequest.FromString(body)
    assert [len(rl.scope_logs[0].log_records) for rl in request.resource_logs] == [1, 1]
    nodes = [{kv.key: kv.value.string_value for kv in rl.resource.attributes}["authwire.gateway.node"]
             for rl in request.resource_logs]
    assert nodes == ["gw-1", "gw-2"]
    assert request.resource_logs[0].scope_logs[0].scope.name == "authwire"


@given(st.text(max_size=60))
def test_endpoint_parser_only_ever_raises_its_own_error(text):
    try:
        host, port = parse_endpoint(text)
    except OtlpSettingError as exc:
        assert "otlp_endpoint" in str(exc)
    else:
        assert host and 0 < port <= 65535


@given(st.lists(st.text(max_size=30), max_size=4))
def test_header_parser_never_echoes_a_value(items):
    try:
        parse_headers(items)
    except OtlpSettingError as exc:
        for item in items:
            _, sep, value = item.partition("=")
            if sep and len(value) > 3 and value not in item.partition("=")[0]:
                assert value not in str(exc)


def test_alerts_are_exported_as_authwire_alert_log_records():
    import asyncio

    from authwire.counters import Counters
    from authwire.export.otlp import OtlpExporter
    from authwire.export.otlp_settings import OtlpSettings

    receiver = LogsReceiver().start()
    alert = record_pb2.Alert(id="a-1", detection="stack_stuffing", severity=record_pb2.ALERT_SEVERITY_CRITICAL,
                             summary="42 failed logins from one TCP stack across 12 IPs", key="stack=4:64:x",
                             request_ids=["r1", "r2"], clients=["192.0.2.7", "192.0.2.8"], stack="4:64:x/hops=0",
                             evidence={"failures": 42, "distinct_ips": 12})
    alert.time.FromSeconds(1_700_000_000)
    alert.client.ip = "192.0.2.7"
    counters = Counters()

    class Detector:  # the hook's shape (authwire.detect.engine.DetectionEngine.subscribe_alerts)
        def subscribe_alerts(self, callback, name=None):
            self.callback = callback

    class Pipeline:
        def subscribe_rows(self, callback, name=None):
            self.callback = callback

    async def scenario() -> None:
        exporter = OtlpExporter(OtlpSettings(f"127.0.0.1:{receiver.port}", "127.0.0.1", receiver.port, tls=False),
                                counters)
        await exporter.start()
        detector, pipeline = Detector(), Pipeline()
        exporter.subscribe(pipeline, detector)
        detector.callback(alert, True)
        await asyncio.to_thread(wait_until, lambda: receiver.count() == 1, 20, "the alert to arrive")
        await exporter.close()

    try:
        asyncio.run(scenario())
    finally:
        receiver.stop()
    got = receiver.received[0]
    assert got.record.event_name == "authwire.alert" and got.record.severity_text == "ERROR"
    assert got.record.body.string_value == alert.summary
    a = got.attributes
    assert a["authwire.alert.id"] == "a-1" and a["authwire.alert.detection"] == "stack_stuffing"
    assert a["authwire.alert.new"] is True and a["client.address"] == "192.0.2.7"
    assert a["authwire.alert.request_ids"] == ["r1", "r2"] and a["authwire.alert.evidence.failures"] == 42.0
    assert got.resource["service.name"] == "authwire"
    assert counters.get("otlp.exported", "logs") == 1


def test_an_internal_error_drops_its_batch_counted_and_export_goes_on():
    import asyncio

    from authwire.counters import Counters
    from authwire.export.otlp import OtlpExporter
    from authwire.export.otlp_settings import OtlpSettings

    receiver = LogsReceiver().start()
    counters = Counters()

    async def scenario() -> None:
        exporter = OtlpExporter(OtlpSettings(f"127.0.0.1:{receiver.port}", "127.0.0.1", receiver.port, tls=False,
                                             batch_records=3), counters)
        await exporter.start()
        exporter.offer([object(), object()])  # not records: encoding fails (a stand-in for a bug)
        await asyncio.to_thread(wait_until, lambda: counters.get("otlp.dropped", "internal_error") == 2, 10,
                                "the failed batch to be counted")
        exporter.offer([plain_row_of(record_pb2.EnrichedRecord(event=auth_event("after-bug")))])
        await asyncio.to_thread(wait_until, lambda: receiver.count() == 1, 10, "the next batch to be exported")
        await exporter.close()

    try:
        asyncio.run(scenario())
    finally:
        receiver.stop()
    assert counters.get("otlp.exported", "logs") == 1


def test_a_batch_encoded_in_slices_on_the_loop_is_the_batch_encoded_at_once():
    import asyncio

    from authwire.counters import Counters
    from authwire.export.otlp import ENCODE_SLICE, OtlpExporter
    from authwire.export.otlp_settings import OtlpSettings

    rows = []
    for i in range(2 * ENCODE_SLICE + 50):
        record = record_pb2.EnrichedRecord(event=auth_event(f"r{i}", client=("192.0.2.10", 1000 + i)))
        record.event.gateway.node = f"gw-{i % 3}"
        rows.append(plain_row_of(record))
    alert = record_pb2.Alert(id="a-1", detection="stack_stuffing").SerializeToString()
    items = [*rows[:300], alert, *rows[300:]]
    exporter = OtlpExporter(OtlpSettings("127.0.0.1:1", "127.0.0.1", 1, tls=False), Counters())
    sliced = asyncio.run(exporter._encode_batch(items))
    assert sliced == exporter._encode(items)
    [(body, n)] = sliced
    request = logs_service_pb2.ExportLogsServiceRequest.FromString(body)
    assert n == len(items) == sum(len(rl.scope_logs[0].log_records) for rl in request.resource_logs)
    assert len(request.resource_logs) == 4  # three gateways and the alerts' resource

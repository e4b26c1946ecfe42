"""Properties: arbitrary record sequences never make a detection raise, and never grow past its memory bound;
the fields the detections read from a plain row are those of the EnrichedRecord it was made from."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authwire.counters import Counters
from authwire.detect.engine import DetectionEngine
from authwire.detect.fields import RecordFields
from authwire.detect.settings import DetectSettings
from authwire.store.columns import plain_row_of
from authwire.v1 import auth_event_pb2 as ae
from authwire.v1 import record_pb2
from tests.detect.crafted import BARE, CHROME_WINDOWS, LINUX, SAFARI_MAC, WINDOWS, message, record

texts = st.text(max_size=12)
crafted = dict(
    t=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    ip=st.sampled_from(["203.0.113.1", "203.0.113.2", "10.0.0.1", "2001:db8::1", "::ffff:10.0.0.2", "", "junk"]),
    outcome=st.sampled_from([0, ae.AUTH_OUTCOME_SUCCESS, ae.AUTH_OUTCOME_FAILURE, ae.AUTH_OUTCOME_NOT_ATTEMPTED, 9]),
    credential=texts,
    signature=st.sampled_from([LINUX, BARE, WINDOWS, "", "x"]) | texts,
    hops=st.integers(0, 300),
    os_hint=st.sampled_from(["linux", "windows", "macos", "network_device", "unknown", "", "bsd"]),
    uid=st.sampled_from(["", "C1", "C2", "C3"]),
    user_agent=st.sampled_from([CHROME_WINDOWS, SAFARI_MAC, "curl/8", "", "Mozilla/"]) | texts,
    gateway_conn=st.integers(0, 3),
    consumer=texts,
    jti_hash=st.sampled_from(["", "aa", "bb"]),
    method=st.sampled_from([ae.AUTH_METHOD_JWT, ae.AUTH_METHOD_BASIC, 0]),
    exact=st.booleans(),
    rtt_us=st.integers(0, 10**9),
)
records = st.builds(record, **crafted)
messages = st.builds(message, **crafted)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records, max_size=120))
def test_arbitrary_records_never_raise_and_stay_bounded(sequence):
    engine = DetectionEngine(DetectSettings(max_keys=16, stack_stuffing_min_failures=2, stack_stuffing_min_ips=2,
                                            stack_stuffing_min_credentials=1, keepalive_stuffing_min_failures=2,
                                            keepalive_stuffing_min_credentials=1,
                                            ua_stack_mismatch_max_new_per_minute=3),
                             None, Counters())
    for r in sequence:
        engine.process([r])
        for detector in engine.detectors:
            assert detector.size() <= detector.bound(), detector.name
        assert len(engine.open_alerts()) <= 16 * len(engine.detectors)
    for change in engine.take_changes(force=True):
        assert change.alert.id and change.alert.detection
        assert len(change.alert.request_ids) <= 32 and len(change.alert.clients) <= 64
    assert engine.counters.get("detect.records") == len(sequence)



def fields_of_message(record: record_pb2.EnrichedRecord) -> dict:
    """The reference: what the detections read, straight from the EnrichedRecord's protobuf fields (the
    reading the engine did before it got plain rows)."""
    event, auth, join = record.event, record.event.auth, record.join
    if auth.method == ae.AUTH_METHOD_JWT:
        credential = auth.consumer or auth.jwt.sub
        token = "jti:" + auth.jwt.jti_hash if auth.outcome == ae.AUTH_OUTCOME_SUCCESS and auth.jwt.jti_hash else ""
    else:
        credential, token = auth.credential_id or auth.consumer, ""
    stack = join.status == record_pb2.JOIN_STATUS_EXACT and not join.behind_proxy
    conn, syn = record.connection, record.connection.syn
    rtt = conn.handshake_rtt
    return {"time": event.start_time.seconds + event.start_time.nanos * 1e-9, "client_ip": event.client.ip,
            "outcome": auth.outcome, "credential": credential, "token": token,
            "signature": syn.signature if stack and not conn.mid_stream else "",
            "hops": syn.hop_distance if stack else 0, "os_hint": syn.os_hint if stack else "",
            "uid": conn.uid if stack else "", "has_conn": stack,
            "rtt_us": rtt.seconds * 1_000_000 + rtt.nanos // 1000 if stack else 0,
            "request_id": event.request_id, "user_agent": event.http.user_agent,
            "gateway_connection_id": event.gateway_connection_id, "gateway_node": event.gateway.node}


@st.composite
def varied_messages(draw) -> record_pb2.EnrichedRecord:
    r = draw(messages)
    r.event.request_id = draw(texts)
    r.event.gateway.node = draw(texts)
    r.event.start_time.FromNanoseconds(draw(st.integers(-10**18, 10**19)))
    if draw(st.booleans()):
        r.event.auth.jwt.sub = draw(texts)
    if draw(st.booleans()):
        r.join.status = draw(st.sampled_from(list(record_pb2.JoinStatus.values())))
    r.join.behind_proxy = draw(st.booleans())
    if r.HasField("connection"):
        r.connection.mid_stream = draw(st.booleans())
    elif r.join.status == record_pb2.JOIN_STATUS_EXACT and draw(st.booleans()):
        r.connection.SetInParent()  # EXACT with an empty Connection
    return r


@settings(max_examples=300, deadline=None)
@given(st.lists(varied_messages(), min_size=1, max_size=8))
def test_fields_from_plain_rows_equal_those_of_the_record(batch):
    f = RecordFields()  # one reused, as the engine does: the per-connection cache must not leak across rows
    rows = [plain_row_of(r) for r in batch]
    for r, row in zip(batch, rows, strict=True):
        f.fill(row)
        got = {"time": f.time, "client_ip": f.client_ip, "outcome": f.outcome, "credential": f.credential,
               "token": f.token, "signature": f.signature, "hops": f.hops, "os_hint": f.os_hint, "uid": f.uid,
               "has_conn": f.conn is not None, "rtt_us": f.rtt_us, "request_id": f.request_id,
               "user_agent": f.user_agent, "gateway_connection_id": f.gateway_connection_id,
               "gateway_node": f.gateway_node}
        assert got == fields_of_message(r)

def test_alert_json_is_the_proto3_mapping():
    from google.protobuf import json_format

    from authwire.records import to_dict
    from authwire.v1 import record_pb2

    alert = record_pb2.Alert(id="A1", detection="stack_stuffing", severity=record_pb2.ALERT_SEVERITY_CRITICAL,
                             key="stack=x", request_ids=["r1", "r2"], clients=["203.0.113.1"], stack="x",
                             credentials=["u1"], connection_uids=["C1"], blocked=["203.0.113.1"], summary="s")
    alert.evidence["failures"] = 40
    alert.evidence["failure_ratio"] = 0.95
    alert.first_time.FromNanoseconds(1_700_000_000_123_000_000)
    alert.client.ip = "203.0.113.1"
    assert to_dict(alert) == json_format.MessageToDict(alert, preserving_proto_field_name=True)

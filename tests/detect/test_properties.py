"""Property: arbitrary record sequences never make a detection raise, and never grow past its memory bound."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authwire.counters import Counters
from authwire.detect.engine import DetectionEngine
from authwire.detect.settings import DetectSettings
from authwire.v1 import auth_event_pb2 as ae
from tests.detect.crafted import BARE, CHROME_WINDOWS, LINUX, SAFARI_MAC, WINDOWS, record

texts = st.text(max_size=12)
records = st.builds(
    record,
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

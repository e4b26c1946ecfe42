"""The native pass (authwire.ingest._eventwire) never decides differently from the Python path.

Whatever it accepts, the Python path (AuthEvent parse + authwire.ingest.validate + columns.event_row) must
accept unchanged — no problem named, no address normalized, nothing redacted — and give exactly the same
event row; whatever it declines comes back byte for byte for that path. Checked with hypothesis on events
built from the values where the rules have edges (limits, secret triggers, address spellings, time ranges,
enum values, unknown and repeated fields) and on arbitrary bytes.
"""

from __future__ import annotations

import ipaddress
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authwire.counters import Counters
from authwire.ingest import event_rows
from authwire.ingest.decode import decode_report
from authwire.ingest.validate import MAX_DURATION_SECONDS, MAX_STRING, MAX_TIMESTAMP_SECONDS, validate
from authwire.protowire import message_field
from authwire.store.columns import EVENT_SOURCE, INDEX, event_row
from authwire.v1 import auth_event_pb2 as pb
from authwire.v1 import ingest_pb2
from support import auth_event, require

native = event_rows.native
SETTINGS = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = time.time()

# Pieces that make text at the rules' edges: secret triggers with and without what completes them, words
# that merely contain them, white space and controls, non-ASCII, the plugins' pseudonym.
PIECES = ["", " ", "\t", "\n", "\x00", "\x1f", "=", ":", "/", "-", "_", "a", "Z", "9", "+", "é", "\u212a",
          "basic", "Basic ", "BEARER\t", "digest ", "negotiate ", "dXNlcjpwYXNzd29yZA==", "Authorization",
          "pass", "password", "Passwd ", "pwd=", "secret", "client_secret: Xy7", "token", "api_key", "key",
          "monkey", "session", "signature", "password: missing", "token: Abc-9", ": x.", "pwd:\t",
          "keykeykeykeykeyk", "     ", "a" * 13, "z" * 257,
          "7a1b2c3d-0000-4000-8000-000000000011", "0123456789ABCDEF" * 2, "aB3" * 10, "ab3" * 10, "AB3" * 10,
          "eyJ", "eyJhbGciOiJIUzI1NiJ9", "AKIA", "AKIAIOSFODNN7EXAMPLE",
          "ASIA", "PRIVATE KEY", "private key", "hmac-sha256:", "0123456789abcdef" * 4, "A1b2C3d4" * 4,
          "/v1/orders/42", "Mozilla/5.0 (X11; Linux x86_64)", "keys", "/basic/items/7", "token-bucket"]
TEXT = st.lists(st.sampled_from(PIECES), max_size=8).map("".join)
LONG = st.sampled_from(sorted(set(MAX_STRING.values()) | {256})).flatmap(
    lambda n: st.sampled_from([n - 1, n, n + 1])).map(lambda n: "x" * n)
STRINGS = st.one_of(TEXT, TEXT, LONG, st.text(max_size=12))
IPS = st.one_of(
    st.sampled_from(["10.0.0.1", "010.0.0.1", "1.2.3", " 10.0.0.1", "0.0.0.0", "255.255.255.255", "::", "::1",
                     "::2", "::0.0.0.2", "::ffff:10.0.0.1", "::FFFF:a00:1", "2001:db8::1", "2001:DB8::1",
                     "2001:db8:0:0:1::1", "1:0:0:0:0:0:0:8", "1::", "fe80::1%eth0", "1:0:1:1:1:1:1:1", "", "x"]),
    st.ip_addresses().map(str), st.ip_addresses(v=6).map(lambda a: a.exploded),
    st.ip_addresses(v=4).map(lambda a: str(ipaddress.IPv6Address("::ffff:" + str(a)))))
SECONDS = st.sampled_from([0, 1, -1, int(NOW), int(NOW) + 299, int(NOW) + 301, MAX_TIMESTAMP_SECONDS,
                           MAX_TIMESTAMP_SECONDS + 1, MAX_DURATION_SECONDS, 9_000_000_000, 9_000_000_001, -2**63])
NANOS = st.sampled_from([0, 1, 999_999_999, 1_000_000_000, -1, 2**31 - 1, -2**31])
ENUMS = st.sampled_from([0, 1, 2, 3, 4, 7, 8, 9, -1, 2**31 - 1])
PORTS = st.sampled_from([0, 1, 443, 65535, 65536, 2**32 - 1])
# Raw fields appended to an event: unknown numbers, repeated strings (last wins), repeated sub-messages
# (merged), a wrong wire type, a truncated field.
EXTRA = st.sampled_from([b"", b"\xa0\x06\x01", b"\x0a\x03abc", b"\x2a\x04\x08\x01\x10\x02", b"\x12\x00",
                         b"\x6a\x02\x08\x03", b"\x08\x01", b"\x0a\x05ab", b"\x52\x02\x20\x01", b"\x6a\x00"])

STRING_FIELDS = [("request_id",), ("forwarded_for",), ("route_id",), ("service_id",), ("gateway", "node"),
                 ("gateway", "version"), ("http", "method"), ("http", "host"), ("http", "path"),
                 ("http", "user_agent"), ("auth", "plugin"), ("auth", "consumer"), ("auth", "credential_id"),
                 ("auth", "message"), ("auth", "jwt", "iss"), ("auth", "jwt", "sub"), ("auth", "jwt", "aud"),
                 ("auth", "jwt", "kid"), ("auth", "jwt", "jti_hash"), ("auth", "jwt", "alg")]


def _set(event, path, value) -> None:
    target = event
    for name in path[:-1]:
        target = getattr(target, name)
    setattr(target, path[-1], value)


@st.composite
def events(draw) -> bytes:
    e = auth_event(draw(st.sampled_from(["r-1", " ", "", "\t r \t"])) or "r-2")
    e.http.request_bytes = draw(st.sampled_from([0, 1, 2**64 - 1]))
    for path in draw(st.lists(st.sampled_from(STRING_FIELDS), max_size=4)):
        _set(e, path, draw(STRINGS))
    if draw(st.booleans()):
        e.auth.jwt.jti_hash = draw(st.sampled_from(["0" * 64, "A" * 64, "0" * 63, "g" * 64]))
    if draw(st.booleans()):
        e.client.ip = draw(IPS)
    if draw(st.booleans()):
        e.server.ip = draw(IPS)
    if draw(st.booleans()):
        e.client.port = draw(PORTS)
    if draw(st.booleans()):
        e.server.port = draw(PORTS)
    for which in draw(st.lists(st.sampled_from(["start_time", "latency"]), max_size=2)):
        getattr(e, which).seconds = draw(SECONDS)
        getattr(e, which).nanos = draw(NANOS)
    if draw(st.booleans()):
        e.ClearField(draw(st.sampled_from(["start_time", "latency", "client", "server", "http", "auth", "gateway"])))
    for target, name in ((e.auth, "outcome"), (e.auth, "reason"), (e.auth, "method"), (e.gateway, "kind")):
        if draw(st.booleans()):
            setattr(target, name, draw(ENUMS))
    if draw(st.booleans()):
        e.auth.jwt.exp = draw(SECONDS)
    if draw(st.booleans()):
        e.auth.jwt.SetInParent()
    return e.SerializeToString() + draw(EXTRA)


def python_path(data: bytes):
    """(event row, problems, changed) by the Python path, or None when the bytes do not parse."""
    try:
        event = pb.AuthEvent.FromString(data)
    except Exception:
        return None
    sent = pb.AuthEvent()
    sent.CopyFrom(event)
    problems = validate(event, 0, NOW, Counters())
    return event_row(event), problems, event != sent


def require_native() -> None:
    require(native is not None, "the native pass authwire.ingest._eventwire is not built (pip install needs gcc "
                                "and the Python headers: apt-get install python3-dev)")


def check_same(data: bytes) -> None:
    got = native.event(data, NOW)
    if type(got) is bytes:
        assert got == data  # declined: handed back whole for the Python path
        return
    reference = python_path(data)
    assert reference is not None, "accepted bytes that do not parse"
    row, problems, changed = reference
    assert problems == [] and not changed, "accepted an event the Python path refuses or changes"
    assert got[:EVENT_SOURCE] == row[:EVENT_SOURCE]
    assert [type(v) for v in got[:EVENT_SOURCE]] == [type(v) for v in row[:EVENT_SOURCE]]
    assert got[EVENT_SOURCE] == data


@SETTINGS
@given(events())
def test_an_accepted_event_is_exactly_what_the_python_path_makes_of_it(data):
    require_native()
    check_same(data)


@SETTINGS
@given(st.binary(max_size=600))
def test_arbitrary_bytes_are_declined_or_decided_alike(data):
    require_native()
    check_same(data)
    got = native.report(data, NOW)  # never raises, whatever the body
    assert got is None or isinstance(got[0], list)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events(), min_size=1, max_size=6))
def test_a_report_admits_and_rejects_exactly_as_the_python_path(monkeypatch_events):
    require_native()
    body = b"".join(message_field(b"\x0a", e) for e in monkeypatch_events)
    native_counters, python_counters = Counters(), Counters()
    decoded = decode_report(body)
    saved = event_rows.native
    try:
        event_rows.native = None
        python_decoded = decode_report(body)
    finally:
        event_rows.native = saved
    if not hasattr(decoded, "events"):
        assert not hasattr(python_decoded, "events")
        return
    assert decoded.undecodable == python_decoded.undecodable
    good, rejections = event_rows.admit(decoded.events, NOW, native_counters, "t")
    try:
        event_rows.native = None
        py_good, py_rejections = event_rows.admit(python_decoded.events, NOW, python_counters, "t")
    finally:
        event_rows.native = saved
    assert [r[:EVENT_SOURCE] for r in good] == [r[:EVENT_SOURCE] for r in py_good]
    assert list(rejections) == list(py_rejections)
    assert native_counters.get("ingest.rejected_events", "t") == python_counters.get("ingest.rejected_events", "t")



def test_ordinary_gateway_events_take_the_native_pass():
    """What the gateways send day to day is not declined (else the fast path would silently be the slow one)."""
    require_native()
    plain = auth_event("req-1")
    failed = auth_event("req-2", outcome=pb.AUTH_OUTCOME_FAILURE, reason=pb.FAILURE_REASON_BAD_SIGNATURE,
                        message="Invalid user key in request")
    failed.http.path = "/basic/items/7"
    v6 = auth_event("req-3", client=("2001:db8::7", 51000), server=("2001:db8::1", 443))
    pseudonym = auth_event("req-4", credential_id="hmac-sha256:" + "ab" * 32)
    kong_credential = auth_event("req-8", credential_id="7a1b2c3d-0000-4000-8000-000000000011")  # a UUID
    for event in (plain, failed, v6, pseudonym, kong_credential):
        assert type(native.event(event.SerializeToString(), NOW)) is tuple, event
    decoded = decode_report(ingest_pb2.ReportRequest(events=[plain, failed]).SerializeToString())
    assert [type(e) for e in decoded.events] == [tuple, tuple]
    assert decoded.events[1][INDEX["path"]] == "/basic/items/7"


def test_what_the_native_pass_declines_still_gets_its_problem_named():
    require_native()
    leaked = auth_event("req-5")
    leaked.http.user_agent = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig"
    mapped = auth_event("req-6", client=("::ffff:10.1.2.3", 40000))
    missing = auth_event("req-7")
    missing.ClearField("client")
    counters = Counters()
    good, rejections = event_rows.admit([leaked, mapped, missing], NOW, counters, "t")
    assert [r[INDEX["request_id"]] for r in good] == ["req-5", "req-6"]
    assert good[0][INDEX["user_agent"]].startswith("[redacted")
    assert good[1][INDEX["client_ip"]] == "10.1.2.3"
    assert [(r.index, r.field) for r in rejections] == [(2, "client")]
    assert counters.get("ingest.python_pass", "t") == 3

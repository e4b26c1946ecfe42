"""Contract: bytes from the Lua protobuf encoder (gateway-plugins/lua/authwire/protobuf.lua, run by LuaJIT)
decode with Python protobuf into exactly the AuthEvent we meant: every field type, unicode, empty and absent
fields, 64-bit values, invalid UTF-8 replaced, bad values refused with the field's name.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import nginx_process
import pytest

from authwire.v1 import auth_event_pb2 as ae
from authwire.v1 import ingest_pb2
from support import require

ROOT = Path(__file__).resolve().parents[2]
LUA_PATH = f"{ROOT}/gateway-plugins/lua/?.lua;;"
CASES = Path(__file__).parent / "lua" / "contract_cases.lua"

pytestmark = pytest.mark.gateway


def run_lua(*args: str) -> str:
    luajit = shutil.which("luajit")
    require(luajit is not None, "needs luajit (apt-get install luajit2)")
    result = subprocess.run([luajit, "-e", f"package.path = {LUA_PATH!r} .. package.path", str(CASES), *args],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def encoded() -> dict[str, dict]:
    return {c["name"]: c for c in map(json.loads, run_lua().splitlines())}


def decode(case: dict) -> ae.AuthEvent:
    assert "hex" in case, case.get("error")
    return ae.AuthEvent.FromString(bytes.fromhex(case["hex"]))


def test_every_field_type_unicode_and_64_bit_values(encoded):
    expected = ae.AuthEvent(
        request_id="req-ü-1",
        gateway=ae.Gateway(kind=ae.GATEWAY_KIND_APISIX, node="gw-東京-1", version="3.18.0"),
        client=ae.Endpoint(ip="2001:db8::1", port=65535),
        server=ae.Endpoint(ip="127.0.0.1", port=9080),
        forwarded_for="198.51.100.7",
        gateway_connection_id=2**64 - 1,
        connection_requests=2**32 - 1,
        http=ae.HttpRequest(method="POST", host="api.example", path="/ünï/😀", status=401,
                            user_agent="curl/8 ☃", request_bytes=2**53 + 1, response_bytes=2**40),
        route_id="r1", service_id="s1",
        auth=ae.Auth(method=ae.AUTH_METHOD_JWT, outcome=ae.AUTH_OUTCOME_FAILURE, plugin="jwt-auth",
                     consumer="ålice", credential_id="kid-1", reason=ae.FAILURE_REASON_EXPIRED,
                     message="failed to verify jwt",
                     jwt=ae.JwtClaims(iss="issuer", sub="sub", aud="aud", kid="k", exp=-1, iat=2**63 - 1,
                                      jti_hash="ab", alg="RS256")),
    )
    expected.start_time.seconds, expected.start_time.nanos = 1700000000, 123456789
    expected.latency.seconds, expected.latency.nanos = 2, 500000000
    got = decode(encoded["full"])
    assert got == expected
    # byte-identical to what protoc's own encoder produces (field order, varint forms)
    assert bytes.fromhex(encoded["full"]["hex"]) == expected.SerializeToString()


def test_long_nested_messages_and_buffer_growth(encoded):
    expected = ae.AuthEvent(
        request_id="long",
        http=ae.HttpRequest(path="/" + "p" * 3000, user_agent="ü" * 200, status=200),
        auth=ae.Auth(message="m" * 300, jwt=ae.JwtClaims(iss="i" * 2000, exp=1)),
    )
    assert bytes.fromhex(encoded["long_nested"]["hex"]) == expected.SerializeToString()


def test_empty_event_is_zero_bytes(encoded):
    assert encoded["empty"]["hex"] == ""
    assert decode(encoded["empty"]) == ae.AuthEvent()


def test_defaults_are_omitted_but_present_messages_stay_present(encoded):
    got = decode(encoded["defaults_and_empty_messages"])
    assert got.request_id == "" and got.gateway_connection_id == 0
    assert got.HasField("client") and got.client == ae.Endpoint()
    assert got.HasField("auth") and got.auth.HasField("jwt")
    assert not got.HasField("server") and not got.HasField("http") and not got.HasField("start_time")


def test_numeric_enums_and_int64_min(encoded):
    got = decode(encoded["numeric_enums_and_int64_min"])
    assert got.gateway.kind == ae.GATEWAY_KIND_KONG
    assert got.auth.method == ae.AUTH_METHOD_KEY_AUTH
    assert got.auth.outcome == ae.AUTH_OUTCOME_SUCCESS
    assert got.auth.reason == ae.FAILURE_REASON_OTHER
    assert got.auth.jwt.exp == -(2**63) and got.auth.jwt.iat == 1


def test_invalid_utf8_is_replaced_not_fatal(encoded):
    got = decode(encoded["invalid_utf8_replaced"])
    assert got.http.path == "/a\ufffd\ufffdb"
    # overlong "/" (C0 AF) and a UTF-16 surrogate (ED A0 80) are not UTF-8 either
    assert got.http.user_agent == "\ufffd\ufffdx\ufffd\ufffd\ufffd"


def test_json_null_means_absent(encoded):
    got = decode(encoded["null_is_absent"])
    assert got.request_id == "x" and got.route_id == "" and not got.HasField("auth")


def test_uint32_beyond_a_port_is_encoded_and_left_to_validation(encoded):
    assert decode(encoded["uint32_beyond_port_range_is_encoded"]).server.port == 70000


@pytest.mark.parametrize("name, message", [
    ("err_negative_port", "client.port: out of range for uint32: -1"),
    ("err_unknown_enum", "auth.method: unknown enum value nope"),
    ("err_not_integer", "http.status: not an integer: 1.5"),
    ("err_bad_decimal", "gateway_connection_id: not a decimal integer: 12x"),
    ("err_type", "http: expected a table, got string"),
])
def test_bad_values_are_refused_naming_the_field(encoded, name, message):
    assert encoded[name] == {"name": name, "error": message}


def test_report_request_wraps_encoded_events(encoded):
    req = ingest_pb2.ReportRequest.FromString(bytes.fromhex(encoded["report_request"]["hex"]))
    assert [e.request_id for e in req.events] == ["a", "b"]
    assert req.events[1].auth.outcome == ae.AUTH_OUTCOME_SUCCESS


def test_encode_each_keeps_good_events_and_names_the_bad_one(encoded):
    case = encoded["encode_each"]
    assert case["errors"] == ["auth.method: unknown enum value nope"]
    assert [e.request_id for e in ingest_pb2.ReportRequest.FromString(bytes.fromhex(case["hex"])).events] == ["x", "y"]


def test_encode_events_writes_a_batch_into_one_buffer(encoded):
    case = encoded["encode_events"]
    assert case["errors"] == ["auth.method: unknown enum value nope", "no such event"] and case["n"] == 2
    req = ingest_pb2.ReportRequest.FromString(bytes.fromhex(case["hex"]))
    assert [e.request_id for e in req.events] == ["x", "y"] and req.events[1].http.path == "p" * 300
    assert req.drops.queue_full == 1


def test_encode_events_takes_indexes_and_encoded_events(encoded):
    case = encoded["encode_events_mixed"]
    assert case["errors"] == ["auth.outcome: unknown enum value nope"] and case["n"] == 3
    req = ingest_pb2.ReportRequest.FromString(bytes.fromhex(case["hex"]))
    assert [e.request_id for e in req.events] == ["t", "pre", "u"] and req.events[1].http.path == "p" * 300


def test_report_request_carries_the_reporters_drops(encoded):
    req = ingest_pb2.ReportRequest.FromString(bytes.fromhex(encoded["report_request_drops"]["hex"]))
    assert [e.request_id for e in req.events] == ["a"]
    assert req.drops == ingest_pb2.ReporterDrops(queue_full=3, encode_failed=2**64 - 1)
    no_drops = ingest_pb2.ReportRequest.FromString(bytes.fromhex(encoded["report_request"]["hex"]))
    assert not no_drops.HasField("drops")


def test_jwt_claims_subset_hashes_the_jti(encoded):
    claims = ae.JwtClaims.FromString(bytes.fromhex(encoded["jwt_claims"]["hex"]))
    assert claims == ae.JwtClaims(iss="idp", sub="alice", aud="api", kid="k1", exp=2000000000, iat=1700000000,
                                  jti_hash=hashlib.sha256(b"j-1").hexdigest(), alg="HS256")


def test_report_response_decoder_reads_python_encoded_bytes():
    resp = ingest_pb2.ReportResponse(accepted=3, rejections=[
        ingest_pb2.Rejection(index=1, field="client.port", reason="0 is outside 1..65535 ü"),
        ingest_pb2.Rejection(index=4, field="request_id", reason="empty"),
    ])
    got = json.loads(run_lua(resp.SerializeToString().hex()))
    assert got == {"accepted": 3, "rejections": [
        {"index": 1, "field": "client.port", "reason": "0 is outside 1..65535 ü"},
        {"index": 4, "field": "request_id", "reason": "empty"},
    ]}


def test_packed_variable_map_matches_the_one_tests_and_bench_use():
    luajit = shutil.which("luajit")
    require(luajit is not None, "needs luajit (apt-get install luajit2)")
    out = subprocess.run([luajit, "-e", f"package.path = {LUA_PATH!r} .. package.path; "
                          "local e = require('authwire.event') "
                          "io.write(e.packed_map(), '\\n', e.packed_map(nil, 'kong_request_id'))"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    generic, kong = out.stdout.split("\n")
    assert generic == nginx_process.PACKED_MAP
    # Kong's: its own request id in the same place (the field layout the plugin parses is the same)
    assert kong == nginx_process.PACKED_MAP.replace("$request_id", "$kong_request_id")
    assert kong in (ROOT / "gateway-plugins" / "kong" / "README.md").read_text()

"""ALS entry -> AuthEvent mapping, on entries a real Envoy 1.40 produced.

data/als_capture.json is one StreamAccessLogsMessage captured from Envoy (jwt_authn + basic_auth + the
config rendered by authwire.demo.envoy_runner) for: valid JWT (+ a spoofed x-consumer header), missing JWT,
expired JWT, JWT signed by an unknown key, malformed JWT, Basic valid (+ spoofed header), Basic wrong
password, Basic missing, and a public route with a query string. The live tests re-check this against a
running Envoy; these pin every field of the mapping.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path

import pytest
from envoy.service.accesslog.v3 import als_pb2
from google.protobuf import json_format

from authwire.ingest.envoy_als import EnvoyNode, Unmapped, entry_to_event, forget_cached_parts
from authwire.v1 import auth_event_pb2 as ae

CAPTURE = json.loads((Path(__file__).parent / "data" / "als_capture.json").read_text())


def message(raw: dict | None = None) -> als_pb2.StreamAccessLogsMessage:
    return json_format.Parse(json.dumps(raw or CAPTURE), als_pb2.StreamAccessLogsMessage())


def events() -> dict[str, ae.AuthEvent]:
    msg = message()
    node = EnvoyNode.from_identifier(msg.identifier)
    return {e.request.path: entry_to_event(e, node, "x-consumer") for e in msg.http_logs.log_entry}


def test_node_and_version_come_from_the_stream_identifier():
    node = EnvoyNode.from_identifier(message().identifier)
    assert node.node == "authwire-envoy"
    assert node.version == "1.40.0"


@pytest.mark.parametrize("path, method, outcome, reason, consumer, message_text", [
    ("/jwt/a", ae.AUTH_METHOD_JWT, ae.AUTH_OUTCOME_SUCCESS, ae.FAILURE_REASON_UNSPECIFIED, "alice", ""),
    ("/jwt/b", ae.AUTH_METHOD_JWT, ae.AUTH_OUTCOME_FAILURE, ae.FAILURE_REASON_MISSING_CREDENTIALS, "",
     "Jwt is missing"),
    ("/jwt/c", ae.AUTH_METHOD_JWT, ae.AUTH_OUTCOME_FAILURE, ae.FAILURE_REASON_EXPIRED, "", "Jwt is expired"),
    ("/jwt/d", ae.AUTH_METHOD_JWT, ae.AUTH_OUTCOME_FAILURE, ae.FAILURE_REASON_BAD_SIGNATURE, "",
     "Jwt verification fails"),
    ("/jwt/e", ae.AUTH_METHOD_JWT, ae.AUTH_OUTCOME_FAILURE, ae.FAILURE_REASON_INVALID_CREDENTIALS, "",
     "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"),
    ("/basic/a", ae.AUTH_METHOD_BASIC, ae.AUTH_OUTCOME_SUCCESS, ae.FAILURE_REASON_UNSPECIFIED, "alice", ""),
    ("/basic/b", ae.AUTH_METHOD_BASIC, ae.AUTH_OUTCOME_FAILURE, ae.FAILURE_REASON_INVALID_CREDENTIALS, "",
     "Invalid username/password combination"),
    ("/basic/c", ae.AUTH_METHOD_BASIC, ae.AUTH_OUTCOME_FAILURE, ae.FAILURE_REASON_MISSING_CREDENTIALS, "",
     "Missing username and password"),
    ("/public?x=1", ae.AUTH_METHOD_NONE, ae.AUTH_OUTCOME_NOT_ATTEMPTED, ae.FAILURE_REASON_UNSPECIFIED,
     "", ""),
])
def test_auth_outcome_reason_and_consumer(path, method, outcome, reason, consumer, message_text):
    auth = events()[path].auth
    assert (auth.method, auth.outcome, auth.reason) == (method, outcome, reason)
    assert auth.consumer == consumer
    assert auth.message == message_text


def test_request_fields_and_tcp_peer():
    entries = {e.request.path: e for e in message().http_logs.log_entry}
    for path, event in events().items():
        entry = entries[path]
        peer = entry.common_properties.downstream_direct_remote_address.socket_address
        assert (event.client.ip, event.client.port) == (peer.address, peer.port_value)
        assert (event.server.ip, event.server.port) == ("127.0.0.1", 18080)
        assert event.request_id == entry.request.request_id
        assert event.start_time == entry.common_properties.start_time
        assert event.http.status == entry.response.response_code.value
        assert event.http.method == "GET"
        assert event.gateway.kind == ae.GATEWAY_KIND_ENVOY
        assert event.gateway.node == "authwire-envoy"
        assert event.route_id == path.split("/")[1].split("?")[0]  # routes are named jwt, basic, public
        assert "?" not in event.http.path
    assert events()["/public?x=1"].http.path == "/public"
    assert events()["/public?x=1"].route_id == "public"


def test_jwt_claims_subset_with_hashed_jti():
    jwt = events()["/jwt/a"].auth.jwt
    assert (jwt.iss, jwt.sub, jwt.aud, jwt.kid, jwt.alg) == (
        "https://issuer.authwire.demo", "alice", "authwire-demo-api", "authwire-demo-1", "RS256")
    assert jwt.exp > jwt.iat > 1_700_000_000
    assert jwt.jti_hash == hashlib.sha256(b"j1").hexdigest()
    assert "j1" not in json_format.MessageToJson(events()["/jwt/a"]).replace(jwt.jti_hash, "")
    assert events()["/jwt/a"].auth.credential_id == "authwire-demo-1"


def test_consumer_falls_back_to_jwt_sub_and_to_a_metadata_key():
    raw = copy.deepcopy(CAPTURE)
    entry = raw["httpLogs"]["logEntry"][0]
    entry["request"].pop("requestHeaders")
    msg = message(raw)
    event = entry_to_event(msg.http_logs.log_entry[0], EnvoyNode(), "x-consumer")
    assert event.auth.consumer == "alice"  # the JWT's sub

    raw = copy.deepcopy(CAPTURE)
    public = raw["httpLogs"]["logEntry"][8]
    public["commonProperties"]["metadata"] = {"filterMetadata": {"my.auth": {"x-consumer": "carol"}}}
    msg = message(raw)
    event = entry_to_event(msg.http_logs.log_entry[8], EnvoyNode(), "x-consumer")
    assert (event.auth.method, event.auth.outcome, event.auth.consumer) == (
        ae.AUTH_METHOD_BASIC, ae.AUTH_OUTCOME_SUCCESS, "carol")


def test_forwarded_for_is_the_leftmost_client_and_the_peer_stays_the_tcp_peer():
    raw = copy.deepcopy(CAPTURE)
    entry = raw["httpLogs"]["logEntry"][0]
    entry["request"]["forwardedFor"] = "203.0.113.7, 10.0.0.1"
    entry["commonProperties"]["downstreamRemoteAddress"]["socketAddress"]["address"] = "203.0.113.7"
    event = entry_to_event(message(raw).http_logs.log_entry[0], EnvoyNode(), "x-consumer")
    assert event.forwarded_for == "203.0.113.7"
    assert event.client.ip == "127.0.0.1"


@pytest.mark.parametrize("mutate, reason", [
    (lambda e: e["commonProperties"].update(
        downstreamDirectRemoteAddress={"pipe": {"path": "/run/x.sock"}}), "downstream_remote_not_ip"),
    (lambda e: (e["commonProperties"].pop("downstreamDirectRemoteAddress"),
                e["commonProperties"].pop("downstreamRemoteAddress")), "no_downstream_address"),
    (lambda e: e["commonProperties"].pop("startTime"), "no_start_time"),
    (lambda e: (e["request"].pop("requestId"), e["commonProperties"].pop("streamId")), "no_request_id"),
    (lambda e: e["commonProperties"].update(accessLogType="DownstreamPeriodic"), "intermediate_entry"),
])
def test_unmappable_entries_name_their_reason(mutate, reason):
    raw = copy.deepcopy(CAPTURE)
    mutate(raw["httpLogs"]["logEntry"][1])
    with pytest.raises(Unmapped) as err:
        entry_to_event(message(raw).http_logs.log_entry[1], EnvoyNode(), "x-consumer")
    assert err.value.reason == reason


def test_parts_kept_from_earlier_entries_never_change_a_later_entry():
    """The auth, listener, route and client parts are cached across entries: each entry mapped after all
    the others (warm caches, other tokens and routes in them) equals the same entry mapped on empty caches."""
    entries = list(message().http_logs.log_entry)
    node = EnvoyNode("n", "1.40.0")
    cold = []
    for entry in entries:
        forget_cached_parts()
        cold.append(entry_to_event(entry, node, "x-consumer"))
    for _ in range(2):
        for entry, expected in zip(reversed(entries), reversed(cold), strict=True):
            assert entry_to_event(entry, node, "x-consumer") == expected
    # another consumer header is another key: the JWT success falls back to the token's sub
    other = entry_to_event(entries[0], node, "x-user")
    assert other.auth.consumer == "alice" and other == cold[0]  # sub is alice too, and nothing else differs
    assert entry_to_event(entries[5], node, "x-user").auth.method == ae.AUTH_METHOD_NONE  # Basic: header only


def test_a_full_cache_starts_again_and_large_metadata_is_not_kept():
    from authwire.ingest import envoy_als

    forget_cached_parts()
    raw = copy.deepcopy(CAPTURE)
    entry = raw["httpLogs"]["logEntry"][0]
    payload = entry["commonProperties"]["metadata"]["filterMetadata"][envoy_als.JWT_FILTER]["jwt_payload"]
    payload["groups"] = ["g" * 100] * 50  # > MAX_CACHED_METADATA bytes of claims
    big = message(raw).http_logs.log_entry[0]
    event = entry_to_event(big, EnvoyNode(), "x-consumer")
    assert event.auth.jwt.sub == "alice" and len(envoy_als._auth_fields) == 0

    cache = envoy_als._BoundedCache(max_entries=2, max_bytes=100)
    cache.put(("a",), 10, b"1")
    cache.put(("b",), 10, b"2")
    cache.put(("c",), 10, b"3")  # third entry: starts again
    assert dict(cache) == {("c",): b"3"} and cache.bytes == 10
    cache.put(("d",), 95, b"4")  # over the byte bound: starts again
    assert dict(cache) == {("d",): b"4"}


def test_byte_counts_saturate_instead_of_losing_the_entry():
    msg = message()
    entry = msg.http_logs.log_entry[0]
    entry.request.request_headers_bytes = 2**64 - 1
    entry.request.request_body_bytes = 10
    event = entry_to_event(entry, EnvoyNode(), "x-consumer")
    assert event.http.request_bytes == 2**64 - 1
    assert event.http.response_bytes == entry.response.response_headers_bytes + entry.response.response_body_bytes


def test_unknown_method_numbers_and_no_latency_give_empty_fields():
    entry = message().http_logs.log_entry[0]
    entry.request.request_method = 99  # newer than our copy of Envoy's enum
    entry.common_properties.ClearField("duration")
    entry.common_properties.ClearField("time_to_last_downstream_tx_byte")
    event = entry_to_event(entry, EnvoyNode(), "x-consumer")
    assert event.http.method == "" and not event.HasField("latency")
    entry.common_properties.time_to_last_downstream_tx_byte.nanos = 5000
    assert entry_to_event(entry, EnvoyNode(), "x-consumer").latency.nanos == 5000


def test_every_captured_entry_takes_the_native_pass_with_the_python_paths_row():
    """The stream hands Pipeline.report the native pass's event row for an ordinary entry (no AuthEvent built),
    and that row is exactly what validation + event_row make of the mapped AuthEvent."""
    from authwire.counters import Counters
    from authwire.ingest import event_rows
    from authwire.ingest.envoy_als import entry_to_item
    from authwire.ingest.validate import validate
    from authwire.store.columns import EVENT_SOURCE, event_row
    from support import require

    require(event_rows.native is not None, "the native pass authwire.ingest._eventwire is not built")
    now = time.time()
    raw = copy.deepcopy(CAPTURE)
    for entry in raw["httpLogs"]["logEntry"]:  # the capture is from 2026-11-23: make it recent for validation
        entry["commonProperties"]["startTime"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    node = EnvoyNode("authwire-envoy", "1.40.0")
    for entry in message(raw).http_logs.log_entry:
        item = entry_to_item(entry, node, "x-consumer", now)
        assert type(item) is tuple, entry.request.path
        event = entry_to_event(entry, node, "x-consumer")
        assert validate(event, 0, now, Counters()) == []
        assert item[:EVENT_SOURCE] == event_row(event)[:EVENT_SOURCE]
        assert ae.AuthEvent.FromString(item[EVENT_SOURCE]) == event
    # what the native pass declines comes back as the AuthEvent, for validation to name its problem
    entry = message(raw).http_logs.log_entry[0]
    entry.request.path = "/jwt/a?token=x"  # the query is cut; a secret-shaped path is the Python path's to judge
    entry.request.user_agent = "password=hunter2"
    item = entry_to_item(entry, node, "x-consumer", now)
    assert type(item) is ae.AuthEvent and item.http.user_agent == "password=hunter2"

"""The gateway-neutral Lua reporter in a real nginx + ngx_lua, reporting to a real `authwire serve` over
gRPC-Web (unix socket): tuple, method, outcome and reason per request; no secret ever reaches the sidecar;
a sidecar outage never breaks requests, is counted, does not flood the error log, and reporting resumes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path

import jwt as pyjwt
import nginx_process
import pytest
from gateway_fixtures import gateway_drops, start_gw_sidecar

from authwire.v1 import auth_event_pb2 as ae
from authwire.v1 import query_pb2
from support import Sidecar, wait_until

pytestmark = pytest.mark.gateway

JWT_SECRET = "jwt-hmac-secret-0003-thirty-two-bytes"
API_KEY = "key-secret-alice-0001"
PASSWORD = "pw-secret-bob-0002"
JTI = "jti-secret-0004"
WRONG_SECRET = "not-the-secret-but-also-32-bytes-long"

HTTP = """
  lua_shared_dict authwire_stats 1m;
  """ + nginx_process.PACKED_MAP + """
  server {
    listen 127.0.0.1:{port};
    body_filter_by_lua_block { require("authwire.nginx").body_filter() }
    log_by_lua_block { require("authwire.nginx").log(require("site_conf")) }
    location /key/ {
      access_by_lua_block { require("auth_step").key_auth() }
      content_by_lua_block { ngx.say("ok") }
    }
    location /basic/ {
      access_by_lua_block { require("auth_step").basic_auth() }
      content_by_lua_block { ngx.say("ok") }
    }
    location /jwt/ {
      access_by_lua_block { require("auth_step").jwt_auth() }
      content_by_lua_block { ngx.say("ok") }
    }
    location /public/ {
      content_by_lua_block { ngx.say("public") }
    }
    location = /authwire-status {
      log_by_lua_block { }
      content_by_lua_block {
        local d = ngx.shared.authwire_stats
        local out = {}
        for _, k in ipairs(d:get_keys(0)) do out[k:gsub("^authwire:", "")] = d:get(k) end
        out.queued = require("authwire.nginx").stats(require("site_conf")).queued
        ngx.say(require("cjson").encode(out))
      }
    }
  }
"""


def site_conf(sock: Path, **overrides) -> str:
    conf = {
        "sidecar": f"unix:{sock}", "gateway": "other", "node": "test-node", "stats_dict": "authwire_stats",
        "flush_interval": 0.01, "initial_retry_delay": 0.05, "max_retry_delay": 0.3, "max_retry_time": 1,
        "log_interval": 60, **overrides,
    }
    return "return " + "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in conf.items()) + "}\n"


def start(short_tmp: Path, **overrides) -> nginx_process.Nginx:
    return nginx_process.start_nginx(short_tmp / "nginx", HTTP,
                                     lua_files={"site_conf.lua": site_conf(short_tmp / "gw.sock", **overrides)})


def records(sidecar: Sidecar) -> list:
    return list(sidecar.query().Query(query_pb2.QueryRequest(limit=1000), timeout=10).records)


def wait_records(sidecar: Sidecar, n: int) -> list:
    def enough() -> list | None:
        got = records(sidecar)
        return got if len(got) >= n else None

    return wait_until(enough, 20, f"{n} records")


def token(key: str = "carol-key", secret: str = JWT_SECRET, exp_in: int = 3600) -> str:
    return pyjwt.encode({"key": key, "iss": "test-idp", "sub": "carol", "exp": int(time.time()) + exp_in,
                         "iat": int(time.time()), "jti": JTI}, secret, algorithm="HS256",
                        headers={"kid": "kid-1"})


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def status(server: nginx_process.Nginx) -> dict:
    code, body, _ = nginx_process.http_request(server.port, "/authwire-status")
    assert code == 200
    return json.loads(body)


CASES = [
    # path, headers, status, method, outcome, reason, consumer, credential id, message
    ("/key/1", {"apikey": API_KEY}, 200, ae.AUTH_METHOD_KEY_AUTH, ae.AUTH_OUTCOME_SUCCESS, 0, "alice",
     "cred-alice", ""),
    ("/key/2", {}, 401, ae.AUTH_METHOD_KEY_AUTH, ae.AUTH_OUTCOME_FAILURE,
     ae.FAILURE_REASON_MISSING_CREDENTIALS, "", "", "Missing API key in request"),
    ("/key/3", {"apikey": "key-wrong"}, 401, ae.AUTH_METHOD_KEY_AUTH, ae.AUTH_OUTCOME_FAILURE,
     ae.FAILURE_REASON_UNKNOWN_KEY, "", "", "Invalid API key in request"),
    ("/basic/1", {"Authorization": basic("bob", PASSWORD)}, 200, ae.AUTH_METHOD_BASIC, ae.AUTH_OUTCOME_SUCCESS,
     0, "bob", "bob", ""),
    ("/basic/2", {"Authorization": basic("bob", PASSWORD + "x")}, 401, ae.AUTH_METHOD_BASIC,
     ae.AUTH_OUTCOME_FAILURE, ae.FAILURE_REASON_INVALID_CREDENTIALS, "", "", "Invalid user authorization"),
    ("/jwt/1", {"Authorization": "Bearer " + token()}, 200, ae.AUTH_METHOD_JWT, ae.AUTH_OUTCOME_SUCCESS, 0,
     "carol", "carol-key", ""),
    ("/jwt/2", {"Authorization": "Bearer " + token(secret=WRONG_SECRET)}, 401, ae.AUTH_METHOD_JWT,
     ae.AUTH_OUTCOME_FAILURE, ae.FAILURE_REASON_BAD_SIGNATURE, "", "", "failed to verify jwt"),
    ("/jwt/3", {"Authorization": "Bearer " + token(exp_in=-60)}, 401, ae.AUTH_METHOD_JWT,
     ae.AUTH_OUTCOME_FAILURE, ae.FAILURE_REASON_EXPIRED, "", "", "token expired"),
    ("/jwt/4", {}, 401, ae.AUTH_METHOD_JWT, ae.AUTH_OUTCOME_FAILURE, ae.FAILURE_REASON_MISSING_CREDENTIALS,
     "", "", "Missing JWT token in request"),
    ("/public/1", {}, 200, ae.AUTH_METHOD_NONE, ae.AUTH_OUTCOME_NOT_ATTEMPTED, 0, "", "", ""),
    # a "|" in the path must not shift the packed fields (the uri is the packed variable's last field)
    ("/public/a|b|c", {}, 200, ae.AUTH_METHOD_NONE, ae.AUTH_OUTCOME_NOT_ATTEMPTED, 0, "", "", ""),
]


@pytest.mark.parametrize("packed", [False, True], ids=["vars", "packed_var"])
def test_each_request_is_reported_with_its_tuple_and_auth_outcome(nginx_available, short_tmp, gw_sidecar, packed):
    server = start(short_tmp, **({"packed_var": "authwire_vars"} if packed else {}))
    try:
        sent = {}
        for path, headers, want_status, *_ in CASES:
            code, _, client = nginx_process.http_request(server.port, path, headers)
            assert code == want_status, path
            sent[path] = client
        # a client-chosen Host with "|" in it must not shift the packed fields either
        nginx_process.http_request(server.port, "/public/host", host="h|1|2|3")
        got = {r.event.http.path: r for r in wait_records(gw_sidecar, len(CASES) + 1)}
    finally:
        server.stop()

    odd_host = got.pop("/public/host").event
    assert (odd_host.http.host, odd_host.http.status, odd_host.http.path) == ("h|1|2|3", 200, "/public/host")
    assert set(got) == set(sent)
    for path, _, want_status, method, outcome, reason, consumer, cred, message in CASES:
        ev = got[path].event
        # the tuple: the client's own socket is the gateway's TCP peer
        assert (ev.client.ip, ev.client.port) == sent[path], path
        assert (ev.server.ip, ev.server.port) == ("127.0.0.1", server.port)
        assert ev.forwarded_for == ""
        assert ev.http.status == want_status and ev.http.method == "GET"
        assert ev.http.user_agent == "authwire-test/1"
        assert ev.gateway.kind == ae.GATEWAY_KIND_OTHER and ev.gateway.node == "test-node"
        assert len(ev.request_id) == 32 and ev.connection_requests == 1 and ev.gateway_connection_id > 0
        assert ev.start_time.seconds > 0
        assert (ev.auth.method, ev.auth.outcome, ev.auth.reason) == (method, outcome, reason), path
        assert (ev.auth.consumer, ev.auth.credential_id, ev.auth.message) == (consumer, cred, message), path

    claims = got["/jwt/1"].event.auth.jwt
    assert (claims.iss, claims.sub, claims.kid, claims.alg) == ("test-idp", "carol", "kid-1", "HS256")
    assert claims.jti_hash == hashlib.sha256(JTI.encode()).hexdigest() and claims.exp > claims.iat > 0
    assert got["/jwt/3"].event.auth.jwt.exp < time.time()


def test_requests_on_one_keepalive_connection_share_it(nginx_available, short_tmp, gw_sidecar):
    server = start(short_tmp)
    try:
        import socket

        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            clients = [nginx_process.http_request(server.port, f"/public/ka{i}", sock=sock, close=False)[2]
                       for i in range(3)]
        assert len(set(clients)) == 1
        got = sorted(wait_records(gw_sidecar, 3), key=lambda r: r.event.connection_requests)
    finally:
        server.stop()
    assert [r.event.connection_requests for r in got] == [1, 2, 3]
    assert len({r.event.gateway_connection_id for r in got}) == 1
    assert all((r.event.client.ip, r.event.client.port) == clients[0] for r in got)


def test_no_secret_reaches_the_sidecar(nginx_available, short_tmp, gw_sidecar):
    good, bad_sig = token(), token(secret=WRONG_SECRET)
    requests = [("/key/s1", {"apikey": API_KEY}), ("/key/s2", {"apikey": "key-wrong-secret-0005"}),
                ("/basic/s1", {"Authorization": basic("bob", PASSWORD)}),
                ("/basic/s2", {"Authorization": basic("bob", "pw-wrong-secret-0006")}),
                ("/jwt/s1", {"Authorization": "Bearer " + good}), ("/jwt/s2", {"Authorization": "Bearer " + bad_sig})]
    server = start(short_tmp)
    try:
        for path, headers in requests:
            nginx_process.http_request(server.port, path, headers)
        wait_records(gw_sidecar, len(requests))
    finally:
        server.stop()
    gw_sidecar.stop()  # flush and close the store before reading its bytes

    stored = b"".join(p.read_bytes() for p in short_tmp.iterdir() if p.name.startswith("authwire.db"))
    stored += (short_tmp / "records.jsonl").read_bytes()
    assert b"cred-alice" in stored and b"carol-key" in stored  # the search below looks at the right bytes
    secrets = [API_KEY, "key-wrong-secret-0005", PASSWORD, "pw-wrong-secret-0006", JWT_SECRET, JTI,
               good, bad_sig, good.split(".")[2], bad_sig.split(".")[2], basic("bob", PASSWORD).split()[1],
               "Authorization", "Bearer", "apikey"]
    for secret in secrets:
        assert secret.encode() not in stored, f"secret {secret[:12]}... stored by the sidecar"


def test_sidecar_outage_is_counted_bounded_and_recovers(nginx_available, short_tmp):
    # queue_max 20: the outage overflows the queue; the retry window of 1 s drops batches too
    server = start(short_tmp, queue_max=20, batch_max_size=10)
    sidecar = None
    try:
        for i in range(150):
            code, body, _ = nginx_process.http_request(server.port, f"/key/down{i}", {"apikey": API_KEY})
            assert (code, body) == (200, b"ok\n")  # served as usual while the sidecar is away
        def counted() -> dict | None:
            s = status(server)
            return s if s.get("dropped_queue_full", 0) > 0 and s.get("send_errors", 0) > 0 else None

        stats = wait_until(counted, 10, "queue-full drops and failed sends to be counted")
        assert stats.get("sent", 0) == 0
        assert stats["queued"] <= 20

        errors = server.error_lines()
        assert len(errors) <= 4, "\n".join(errors)  # rate-limited: no line per request or per retry
        # rate-limited: no line per request or per retry, and only ours (no nginx connect() noise)
        assert len(errors) <= 4, "\n".join(errors)
        assert all("authwire reporter" in line for line in errors), "\n".join(errors)

        sidecar = start_gw_sidecar(short_tmp)
        # events queued during the outage go first; new requests are reported once there is room again
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            code, _, _ = nginx_process.http_request(server.port, f"/key/back{time.monotonic_ns()}",
                                                    {"apikey": API_KEY})
            assert code == 200
            if any(r.event.http.path.startswith("/key/back") for r in records(sidecar)):
                break
            time.sleep(0.2)
        else:
            raise AssertionError("no report arrived after the sidecar came back")
        wait_until(lambda: "reporting resumed" in server.log_text(), 10, "the resume notice")
        assert status(server)["sent"] >= 1
        # every drop the reporter counted reaches `authwire stats`, once
        # (drops travel with the next report: keep a little traffic going while waiting)
        def told() -> bool:
            nginx_process.http_request(server.port, "/public/tick")
            s = status(server)
            return gateway_drops(sidecar) == {"queue_full": s.get("dropped_queue_full", 0),
                                              "send_failed": s.get("dropped_send_failed", 0),
                                              "encode_failed": s.get("encode_errors", 0)}

        wait_until(told, 20, "the reporter's drops in the sidecar's counters", interval=0.2)
        assert gateway_drops(sidecar)["queue_full"] > 0
        assert len(server.error_lines()) <= 4
    finally:
        server.stop()
        if sidecar is not None:
            sidecar.kill()


def test_ring_wraps_without_losing_or_mixing_requests(nginx_available, short_tmp, gw_sidecar):
    # a request is six values in six parallel ring arrays of queue_max slots: with 7 slots and groups of 3,
    # batches start at every slot and cross the ring's end; each record must keep its own host, path and
    # auth outcome (no column shifted against another), every request exactly once
    server = start(short_tmp, queue_max=7, batch_max_size=5, packed_var="authwire_vars")
    try:
        sent = 0
        for group in range(8):
            for j in range(3):
                i = group * 3 + j
                if i % 2:
                    code, _, _ = nginx_process.http_request(server.port, f"/key/r{i}", {"apikey": API_KEY},
                                                            host=f"h{i}.example")
                else:
                    code, _, _ = nginx_process.http_request(server.port, f"/public/r{i}", host=f"h{i}.example")
                assert code == 200
                sent += 1
            wait_records(gw_sidecar, sent)  # the group is shipped before the next one queues
        got = records(gw_sidecar)
        stats = status(server)
    finally:
        server.stop()
    assert stats.get("dropped_queue_full", 0) == 0
    assert sorted(r.event.http.path for r in got) == sorted(
        f"/key/r{i}" if i % 2 else f"/public/r{i}" for i in range(24))
    for r in got:
        i = int(r.event.http.path.rsplit("r", 1)[1])
        assert r.event.http.host == f"h{i}.example"
        want = ("alice", ae.AUTH_OUTCOME_SUCCESS) if i % 2 else ("", ae.AUTH_OUTCOME_NOT_ATTEMPTED)
        assert (r.event.auth.consumer, r.event.auth.outcome) == want, r.event.http.path

"""The Kong plugin (gateway-plugins/kong/kong/plugins/authwire/) inside real nginx + ngx_lua, driven by the
stand-in of the Kong PDK, kong.tools.queue, the schema DAO and Kong's auth plugins
(tests/gateway/standins), reporting to a real `authwire serve`. CI does not run a real Kong.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from email.utils import formatdate
from pathlib import Path

import jwt as pyjwt
import nginx_process
import pytest
from gateway_fixtures import gateway_drops, start_gw_sidecar

from authwire.v1 import auth_event_pb2 as ae
from authwire.v1 import query_pb2
from support import Sidecar, wait_until

pytestmark = pytest.mark.gateway

API_KEY = "kong-key-secret-0201"
PASSWORD = "kong-pw-secret-0202"
JWT_SECRET = "kong-jwt-secret-0203-thirty-two-bytes!!"
HMAC_SECRET = "kong-hmac-secret-0204"
JTI = "kong-jti-secret-0205"

HTTP = """
  """ + nginx_process.PACKED_MAP + """
  init_worker_by_lua_block { require("kong_site") }
  server {
    listen 127.0.0.1:{port};
    location / {
      access_by_lua_block { require("kong_runner").access() }
      content_by_lua_block { ngx.say("upstream ok") }
      body_filter_by_lua_block { require("kong_runner").body_filter() }
      log_by_lua_block { require("kong_runner").log() }
    }
    location /realip/ {
      set_real_ip_from 127.0.0.1;
      real_ip_header X-Forwarded-For;
      access_by_lua_block { require("kong_runner").access() }
      content_by_lua_block { ngx.say("upstream ok") }
      body_filter_by_lua_block { require("kong_runner").body_filter() }
      log_by_lua_block { require("kong_runner").log() }
    }
    location = /authwire-stats {
      content_by_lua_block {
        ngx.say(require("cjson").encode(require("kong.plugins.authwire.handler").stats()))
      }
    }
    location = /check-config {
      content_by_lua_block {
        local runner = require("kong_runner")
        local out = {}
        for name, conf in pairs({
          bad_address = {sidecar = "nowhere:x"},
          pseudonym_without_key = {pseudonymize_credentials = true},
          short_key = {pseudonymize_credentials = true, credential_hash_key = "short"},
          bad_timeout = {connect_timeout = -1},
        }) do
          local ok, err = runner.check_config(conf)
          out[name] = ok and "ok" or err
        end
        out.defaults = runner.check_config({})
        ngx.say(require("cjson").encode(out))
      }
    }
  }
"""


def site(sock: Path, **aw) -> str:
    base = {"sidecar": f"unix:{sock}", "node": "kong-test", **aw}
    queue = {"max_batch_size": 5, "max_coalescing_delay": 0.2, "max_retry_time": 1, "initial_retry_delay": 0.1,
             "max_retry_delay": 0.5, **aw.pop("queue", {})}
    base.pop("queue", None)
    fields = ", ".join(f"{k} = {json.dumps(v)}" for k, v in base.items())
    qfields = ", ".join(f"{k} = {json.dumps(v)}" for k, v in queue.items())
    return f"""
local runner = require("kong_runner")
local function cfg(extra)
  local c = {{{fields}, queue = {{{qfields}}}}}
  for k, v in pairs(extra or {{}}) do c[k] = v end
  return c
end
runner.add_consumer({{id = "c-alice", username = "alice"}},
  {{["key-auth"] = {{id = "cred-key-alice", key = {json.dumps(API_KEY)}}}}})
runner.add_consumer({{id = "c-bob", username = "bob"}},
  {{["basic-auth"] = {{id = "cred-basic-bob", username = "bob", plain_password = {json.dumps(PASSWORD)},
                      password_hash = "sha1-of-password-and-consumer-id"}}}})
runner.add_consumer({{id = "c-carol", username = "carol"}},
  {{jwt = {{id = "cred-jwt-carol", key = "carol-iss", secret = {json.dumps(JWT_SECRET)}, algorithm = "HS256"}}}})
runner.add_consumer({{id = "c-dave", custom_id = "dave-custom"}},
  {{["hmac-auth"] = {{id = "cred-hmac-dave", username = "dave", secret = {json.dumps(HMAC_SECRET)}}}}})
local svc = {{id = "svc-uuid-1", name = "orders"}}
runner.add_route({{id = "route-key", prefix = "/key/", service = svc, auth = "key-auth", config = cfg()}})
runner.add_route({{id = "route-basic", prefix = "/basic/", service = svc, auth = "basic-auth",
                  config = cfg({{packed_var = "authwire_vars"}})}})
runner.add_route({{id = "route-jwt", prefix = "/jwt/", service = svc, auth = "jwt", config = cfg()}})
runner.add_route({{id = "route-hmac", prefix = "/hmac/", service = svc, auth = "hmac-auth", config = cfg()}})
runner.add_route({{id = "route-open", prefix = "/open/", service = svc, config = cfg()}})
runner.add_route({{id = "route-realip", prefix = "/realip/", service = svc, auth = "key-auth", config = cfg()}})
"""


def start(tmp: Path, **aw) -> nginx_process.Nginx:
    return nginx_process.start_nginx(tmp / "nginx", HTTP, lua_files={"kong_site.lua": site(tmp / "gw.sock", **aw)})


def records(sidecar: Sidecar) -> list:
    return list(sidecar.query().Query(query_pb2.QueryRequest(limit=1000), timeout=10).records)


def wait_paths(sidecar: Sidecar, paths: set[str]) -> dict:
    def arrived():
        got = {r.event.http.path: r for r in records(sidecar)}
        return got if paths <= set(got) else None

    return wait_until(arrived, 20, f"records for {sorted(paths)}")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def jwt_token(secret: str = JWT_SECRET, exp_in: int = 600, iss: str = "carol-iss") -> str:
    now = int(time.time())
    return pyjwt.encode({"iss": iss, "sub": "carol", "aud": "orders", "exp": now + exp_in, "iat": now,
                         "jti": JTI}, secret, algorithm="HS256", headers={"kid": "kong-kid"})


def hmac_headers(secret: str = HMAC_SECRET, date: str | None = None) -> dict[str, str]:
    date = date or formatdate(usegmt=True)
    sig = base64.b64encode(hmac.new(secret.encode(), f"date: {date}".encode(), "sha256").digest()).decode()
    return {"Date": date, "Authorization":
            f'hmac username="dave", algorithm="hmac-sha256", headers="date", signature="{sig}"'}


GOOD_JWT, BAD_JWT, OLD_JWT = jwt_token(), jwt_token("wrong-secret-thirty-two-bytes-long!!"), jwt_token(exp_in=-60)
HMAC_OK, HMAC_BAD = hmac_headers(), hmac_headers("kong-wrong-hmac-0206")
CASES = [
    # path, headers, status, method, outcome, reason, consumer, credential id, message
    ("/key/ok", {"apikey": API_KEY}, 200, ae.AUTH_METHOD_KEY_AUTH, ae.AUTH_OUTCOME_SUCCESS, 0, "alice",
     "cred-key-alice", ""),
    ("/key/missing", {}, 401, ae.AUTH_METHOD_KEY_AUTH, ae.AUTH_OUTCOME_FAILURE,
     ae.FAILURE_REASON_MISSING_CREDENTIALS, "", "", "No API key found in request"),
    ("/key/wrong", {"apikey": "kong-wrong-key-0207"}, 401, ae.AUTH_METHOD_KEY_AUTH, ae.AUTH_OUTCOME_FAILURE,
     ae.FAILURE_REASON_INVALID_CREDENTIALS, "", "", "Unauthorized"),
    ("/basic/ok", {"Authorization": basic("bob", PASSWORD)}, 200, ae.AUTH_METHOD_BASIC, ae.AUTH_OUTCOME_SUCCESS,
     0, "bob", "bob", ""),
    ("/basic/wrong", {"Authorization": basic("bob", "kong-wrong-pw-0208")}, 401, ae.AUTH_METHOD_BASIC,
     ae.AUTH_OUTCOME_FAILURE, ae.FAILURE_REASON_INVALID_CREDENTIALS, "", "bob", "Unauthorized"),
    ("/basic/missing", {}, 401, ae.AUTH_METHOD_BASIC, ae.AUTH_OUTCOME_FAILURE,
     ae.FAILURE_REASON_MISSING_CREDENTIALS, "", "", "Unauthorized"),
    ("/jwt/ok", {"Authorization": "Bearer " + GOOD_JWT}, 200, ae.AUTH_METHOD_JWT, ae.AUTH_OUTCOME_SUCCESS, 0,
     "carol", "carol-iss", ""),
    ("/jwt/badsig", {"Authorization": "Bearer " + BAD_JWT}, 401, ae.AUTH_METHOD_JWT, ae.AUTH_OUTCOME_FAILURE,
     ae.FAILURE_REASON_BAD_SIGNATURE, "", "carol-iss", "Invalid signature"),
    ("/jwt/expired", {"Authorization": "Bearer " + OLD_JWT}, 401, ae.AUTH_METHOD_JWT, ae.AUTH_OUTCOME_FAILURE,
     ae.FAILURE_REASON_EXPIRED, "", "carol-iss", "exp: token expired"),
    ("/jwt/unknown", {"Authorization": "Bearer " + jwt_token(iss="nobody")}, 401, ae.AUTH_METHOD_JWT,
     ae.AUTH_OUTCOME_FAILURE, ae.FAILURE_REASON_UNKNOWN_KEY, "", "nobody", "No credentials found for given 'iss'"),
    ("/hmac/ok", HMAC_OK, 200, ae.AUTH_METHOD_HMAC, ae.AUTH_OUTCOME_SUCCESS, 0, "dave-custom", "dave", ""),
    ("/hmac/bad", HMAC_BAD, 401, ae.AUTH_METHOD_HMAC, ae.AUTH_OUTCOME_FAILURE, ae.FAILURE_REASON_BAD_SIGNATURE,
     "", "dave", "HMAC signature does not match"),
    ("/hmac/skew", hmac_headers(date="Mon, 01 Jan 2024 00:00:00 GMT"), 401, ae.AUTH_METHOD_HMAC,
     ae.AUTH_OUTCOME_FAILURE, ae.FAILURE_REASON_CLOCK_SKEW, "", "dave",
     "HMAC signature cannot be verified, a valid date or x-date header is required for HMAC Authentication"),
    ("/open/x", {}, 200, ae.AUTH_METHOD_NONE, ae.AUTH_OUTCOME_NOT_ATTEMPTED, 0, "", "", ""),
]
PLUGINS = {ae.AUTH_METHOD_KEY_AUTH: "key-auth", ae.AUTH_METHOD_BASIC: "basic-auth", ae.AUTH_METHOD_JWT: "jwt",
           ae.AUTH_METHOD_HMAC: "hmac-auth"}


def test_kong_plugin_reports_each_auth_outcome(nginx_available, short_tmp, gw_sidecar):
    server = start(short_tmp)
    try:
        sent = {}
        for path, headers, want, *_ in CASES:
            code, body, client = nginx_process.http_request(server.port, path, headers)
            assert code == want, (path, body)
            sent[path] = client
        got = wait_paths(gw_sidecar, set(sent))
    finally:
        server.stop()
    for path, _, want, method, outcome, reason, consumer, cred, message in CASES:
        ev = got[path].event
        assert (ev.client.ip, ev.client.port) == sent[path], path
        assert (ev.server.ip, ev.server.port) == ("127.0.0.1", server.port)
        assert ev.gateway == ae.Gateway(kind=ae.GATEWAY_KIND_KONG, node="kong-test", version="3.9.1")
        assert ev.http.status == want and ev.route_id == "route-" + path.split("/")[1]
        assert ev.service_id == "svc-uuid-1"
        assert (ev.auth.method, ev.auth.outcome, ev.auth.reason) == (method, outcome, reason), path
        assert (ev.auth.consumer, ev.auth.credential_id, ev.auth.message) == (consumer, cred, message), path
        if outcome != ae.AUTH_OUTCOME_NOT_ATTEMPTED:
            assert ev.auth.plugin == PLUGINS[method], path
    claims = got["/jwt/ok"].event.auth.jwt
    assert (claims.iss, claims.sub, claims.aud, claims.kid, claims.alg) == \
        ("carol-iss", "carol", "orders", "kong-kid", "HS256")
    assert claims.jti_hash == hashlib.sha256(JTI.encode()).hexdigest()
    assert got["/jwt/expired"].event.auth.jwt.exp < time.time()


def test_forwarded_client_and_tcp_peer(nginx_available, short_tmp, gw_sidecar):
    server = start(short_tmp)
    try:
        _, _, client = nginx_process.http_request(server.port, "/realip/a",
                                                  {"apikey": API_KEY, "X-Forwarded-For": "203.0.113.5"})
        ev = wait_paths(gw_sidecar, {"/realip/a"})["/realip/a"].event
    finally:
        server.stop()
    assert (ev.client.ip, ev.client.port) == client and ev.forwarded_for == "203.0.113.5"


def test_no_secrets_stored(nginx_available, short_tmp, gw_sidecar):
    server = start(short_tmp)
    try:
        for path, headers, *_ in CASES:
            nginx_process.http_request(server.port, path, headers)
        wait_paths(gw_sidecar, {p for p, *_ in CASES})
    finally:
        server.stop()
    gw_sidecar.stop()
    stored = b"".join(p.read_bytes() for p in short_tmp.iterdir() if p.name.startswith("authwire.db"))
    stored += (short_tmp / "records.jsonl").read_bytes()
    assert b"cred-key-alice" in stored and b"carol-iss" in stored
    secrets = [API_KEY, "kong-wrong-key-0207", PASSWORD, "kong-wrong-pw-0208", JWT_SECRET, JTI, GOOD_JWT, BAD_JWT,
               OLD_JWT, GOOD_JWT.split(".")[2], HMAC_SECRET, HMAC_OK["Authorization"].split('signature="')[1][:-1],
               HMAC_BAD["Authorization"].split('signature="')[1][:-1], basic("bob", PASSWORD).split()[1],
               "sha1-of-password-and-consumer-id"]
    for secret in secrets:
        assert secret.encode() not in stored, f"secret {secret[:12]}... stored by the sidecar"


def test_schema_defaults_and_checks(nginx_available, short_tmp):
    server = start(short_tmp)
    try:
        code, body, _ = nginx_process.http_request(server.port, "/check-config")
    finally:
        server.stop()
    assert code == 200
    out = json.loads(body)
    assert "config.sidecar: bad sidecar address nowhere:x" in out["bad_address"]
    assert out["pseudonym_without_key"] == "config.credential_hash_key: required field missing"
    assert "config.credential_hash_key: length must be at least 16" == out["short_key"]
    assert out["bad_timeout"].startswith("config.connect_timeout: value should be between")
    d = out["defaults"]
    assert (d["sidecar"], d["connect_timeout"], d["jwt_key_claim_name"], d["include_user_agent"]) == \
        ("127.0.0.1:9181", 1000, "iss", True)
    assert d["queue"]["max_entries"] == 10000 and d["queue"]["max_batch_size"] == 1


def test_sidecar_outage_is_counted_and_reporting_resumes(nginx_available, short_tmp):
    server = start(short_tmp, queue={"max_entries": 8})
    sidecar = None
    try:
        for i in range(40):
            code, _, _ = nginx_process.http_request(server.port, f"/key/down{i}", {"apikey": API_KEY})
            assert code == 200
        stats = json.loads(nginx_process.http_request(server.port, "/authwire-stats")[1])
        assert stats["dropped_queue_full"] >= 40 - 8 and stats["sent"] == 0
        # batches are retried for max_retry_time (1 s) and then given up: counted, not silent
        wait_until(lambda: json.loads(nginx_process.http_request(server.port, "/authwire-stats")[1])
                   ["dropped_send_failed"] > 0, 15, "given-up batches to be counted")
        errors = server.error_lines()
        assert len(errors) < 20, "\n".join(errors)

        sidecar = start_gw_sidecar(short_tmp)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            nginx_process.http_request(server.port, f"/key/back{time.monotonic_ns()}", {"apikey": API_KEY})
            if any(r.event.http.path.startswith("/key/back") for r in records(sidecar)):
                break
            time.sleep(0.3)
        else:
            raise AssertionError("no report arrived after the sidecar came back")
        assert json.loads(nginx_process.http_request(server.port, "/authwire-stats")[1])["sent"] >= 1
        # every drop the plugin counted reaches `authwire stats`, once
        # (drops travel with the next report: keep a little traffic going while waiting)
        def told() -> bool:
            nginx_process.http_request(server.port, "/open/tick")
            s = json.loads(nginx_process.http_request(server.port, "/authwire-stats")[1])
            return gateway_drops(sidecar) == {"queue_full": s["dropped_queue_full"],
                                              "send_failed": s["dropped_send_failed"],
                                              "encode_failed": s["encode_errors"]}

        wait_until(told, 30, "the plugin's drops in the sidecar's counters", interval=0.3)
    finally:
        server.stop()
        if sidecar is not None:
            sidecar.kill()

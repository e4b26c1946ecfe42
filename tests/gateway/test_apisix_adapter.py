"""The APISIX plugin (gateway-plugins/apisix/apisix/plugins/authwire.lua) inside real nginx + ngx_lua, driven
by the stand-in of APISIX's core, ctx, batch-processor manager and auth plugins (tests/gateway/standins),
reporting to a real `authwire serve`. CI does not run a real APISIX (it is in no registry we can reach).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
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

API_KEY = "apisix-key-secret-0101"
PASSWORD = "apisix-pw-secret-0102"
JWT_SECRET = "apisix-jwt-secret-0103-thirty-two-bytes!"
HMAC_SECRET = "apisix-hmac-secret-0104"
HASH_KEY = "pseudonym-key-0105-long"
JTI = "apisix-jti-secret-0106"

HTTP = """
  lua_shared_dict unused 16k;
  """ + nginx_process.PACKED_MAP + """
  init_worker_by_lua_block { require("apisix_site") }
  server {
    listen 127.0.0.1:{port};
    location / {
      rewrite_by_lua_block { require("apisix_runner").rewrite() }
      content_by_lua_block { ngx.say("upstream ok") }
      body_filter_by_lua_block { require("apisix_runner").body_filter() }
      log_by_lua_block { require("apisix_runner").log() }
    }
    location /realip/ {
      set_real_ip_from 127.0.0.1;
      real_ip_header X-Real-IP;
      rewrite_by_lua_block { require("apisix_runner").rewrite() }
      content_by_lua_block { ngx.say("upstream ok") }
      body_filter_by_lua_block { require("apisix_runner").body_filter() }
      log_by_lua_block { require("apisix_runner").log() }
    }
    location = /authwire-stats {
      content_by_lua_block {
        local code, body = require("apisix.plugins.authwire").control_api()[1].handler()
        ngx.say(require("cjson").encode(body))
      }
    }
    location = /check-schema {
      content_by_lua_block {
        local p = require("apisix.plugins.authwire")
        local out = {}
        for name, conf in pairs({
          ok = {sidecar = "[::1]:9181"},
          bad_address = {sidecar = "nowhere"},
          pseudonym_without_key = {pseudonymize_credentials = true},
          short_key = {pseudonymize_credentials = true, credential_hash_key = "short"},
          bad_timeout = {connect_timeout = 0},
        }) do
          local ok, err = p.check_schema(conf)
          out[name] = ok and "ok" or err
        end
        out.defaults = {}
        local conf = {}
        p.check_schema(conf)
        out.defaults = conf
        ngx.say(require("cjson").encode(out))
      }
    }
  }
"""


def site(sock: Path, **aw) -> str:
    base = {"sidecar": f"unix:{sock}", "node": "apisix-test", "batch_max_size": 4, "inactive_timeout": 1,
            "max_retry_count": 1, "retry_delay": 1, **aw}
    lua_conf = "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in base.items()) + "}"
    return f"""
local runner = require("apisix_runner")
local function aw(extra)
  local c = {lua_conf}
  for k, v in pairs(extra or {{}}) do c[k] = v end
  return c
end
runner.add_consumer({{username = "alice", credential_id = "cred-alice",
                     plugins = {{["key-auth"] = {{key = {json.dumps(API_KEY)}}}}}}})
runner.add_consumer({{username = "bob", plugins = {{["basic-auth"] = {{username = "bob",
                     password = {json.dumps(PASSWORD)}}}}}}})
runner.add_consumer({{username = "carol", plugins = {{["jwt-auth"] = {{key = "carol-key",
                     secret = {json.dumps(JWT_SECRET)}}}}}}})
runner.add_consumer({{username = "dave", plugins = {{["hmac-auth"] = {{key_id = "dave-key",
                     secret_key = {json.dumps(HMAC_SECRET)}}}}}}})
runner.add_route({{id = "r-key", service_id = "svc-1", uri_prefix = "/key/",
                  plugins = {{["key-auth"] = {{}}, authwire = aw({{packed_var = "authwire_vars"}})}}}})
runner.add_route({{id = "r-basic", uri_prefix = "/basic/", plugins = {{["basic-auth"] = {{}}, authwire = aw()}}}})
runner.add_route({{id = "r-jwt", uri_prefix = "/jwt/", plugins = {{["jwt-auth"] = {{}}, authwire = aw()}}}})
runner.add_route({{id = "r-hmac", uri_prefix = "/hmac/", plugins = {{["hmac-auth"] = {{}}, authwire = aw()}}}})
runner.add_route({{id = "r-open", uri_prefix = "/open/", plugins = {{authwire = aw({{include_user_agent = false}})}}}})
runner.add_route({{id = "r-realip", uri_prefix = "/realip/", plugins = {{["key-auth"] = {{}}, authwire = aw()}}}})
runner.add_route({{id = "r-pseudo", uri_prefix = "/pseudo/", plugins = {{["basic-auth"] = {{}},
                  authwire = aw({{pseudonymize_credentials = true, credential_hash_key = {json.dumps(HASH_KEY)}}})}}}})
"""


def start(tmp: Path, **aw) -> nginx_process.Nginx:
    return nginx_process.start_nginx(tmp / "nginx", HTTP, lua_files={"apisix_site.lua": site(tmp / "gw.sock", **aw)})


def records(sidecar: Sidecar) -> list:
    return list(sidecar.query().Query(query_pb2.QueryRequest(limit=1000), timeout=10).records)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def jwt_token(secret: str = JWT_SECRET) -> str:
    now = int(time.time())
    return pyjwt.encode({"key": "carol-key", "iss": "apisix-idp", "sub": "carol", "exp": now + 600, "iat": now,
                         "jti": JTI}, secret, algorithm="HS256")


def hmac_auth(path: str, date: str, secret: str = HMAC_SECRET) -> dict[str, str]:
    signing = f"dave-key\nGET {path}\n{date}\n".encode()
    sig = base64.b64encode(hmac.new(secret.encode(), signing, "sha256").digest()).decode()
    return {"Date": date, "Authorization":
            f'Signature keyId="dave-key",algorithm="hmac-sha256",headers="@request-target date",signature="{sig}"'}


DATE = "Mon, 23 Nov 2026 05:00:00 GMT"
GOOD_JWT, BAD_JWT = jwt_token(), jwt_token("wrong-secret-but-thirty-two-bytes-long")
CASES = [
    # path, headers, status, method, outcome, reason, consumer, credential id, message
    ("/key/ok", {"apikey": API_KEY}, 200, ae.AUTH_METHOD_KEY_AUTH, ae.AUTH_OUTCOME_SUCCESS, 0, "alice",
     "cred-alice", ""),
    ("/key/missing", {}, 401, ae.AUTH_METHOD_KEY_AUTH, ae.AUTH_OUTCOME_FAILURE,
     ae.FAILURE_REASON_MISSING_CREDENTIALS, "", "", "Missing API key in request"),
    ("/key/wrong", {"apikey": "apisix-wrong-key-0107"}, 401, ae.AUTH_METHOD_KEY_AUTH, ae.AUTH_OUTCOME_FAILURE,
     ae.FAILURE_REASON_UNKNOWN_KEY, "", "", "Invalid API key in request"),
    ("/basic/ok", {"Authorization": basic("bob", PASSWORD)}, 200, ae.AUTH_METHOD_BASIC,
     ae.AUTH_OUTCOME_SUCCESS, 0, "bob", "bob", ""),
    ("/basic/wrong", {"Authorization": basic("bob", "apisix-wrong-pw-0108")}, 401, ae.AUTH_METHOD_BASIC,
     ae.AUTH_OUTCOME_FAILURE, ae.FAILURE_REASON_INVALID_CREDENTIALS, "", "bob", "Invalid user authorization"),
    ("/jwt/ok", {"Authorization": "Bearer " + GOOD_JWT}, 200, ae.AUTH_METHOD_JWT, ae.AUTH_OUTCOME_SUCCESS, 0,
     "carol", "carol-key", ""),
    ("/jwt/badsig", {"Authorization": "Bearer " + BAD_JWT}, 401, ae.AUTH_METHOD_JWT, ae.AUTH_OUTCOME_FAILURE,
     ae.FAILURE_REASON_BAD_SIGNATURE, "", "carol-key", "failed to verify jwt"),
    ("/hmac/ok", hmac_auth("/hmac/ok", DATE), 200, ae.AUTH_METHOD_HMAC, ae.AUTH_OUTCOME_SUCCESS, 0, "dave",
     "dave-key", ""),
    ("/hmac/bad", hmac_auth("/hmac/bad", DATE, "apisix-wrong-hmac-0109"), 401, ae.AUTH_METHOD_HMAC,
     ae.AUTH_OUTCOME_FAILURE, ae.FAILURE_REASON_INVALID_CREDENTIALS, "", "dave-key",
     "client request can't be validated"),
    ("/hmac/missing", {}, 401, ae.AUTH_METHOD_HMAC, ae.AUTH_OUTCOME_FAILURE,
     ae.FAILURE_REASON_MISSING_CREDENTIALS, "", "", "client request can't be validated: missing Authorization header"),
    ("/open/x", {}, 200, ae.AUTH_METHOD_NONE, ae.AUTH_OUTCOME_NOT_ATTEMPTED, 0, "", "", ""),
]


def wait_paths(sidecar: Sidecar, paths: set[str]) -> dict:
    def arrived():
        got = {r.event.http.path: r for r in records(sidecar)}
        return got if paths <= set(got) else None

    return wait_until(arrived, 20, f"records for {sorted(paths)}")


def test_apisix_plugin_reports_each_auth_outcome(nginx_available, short_tmp, gw_sidecar):
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
        assert ev.gateway == ae.Gateway(kind=ae.GATEWAY_KIND_APISIX, node="apisix-test", version="3.18.0")
        assert ev.http.status == want and ev.route_id == "r-" + path.split("/")[1]
        assert (ev.auth.method, ev.auth.outcome, ev.auth.reason) == (method, outcome, reason), path
        assert (ev.auth.consumer, ev.auth.credential_id, ev.auth.message) == (consumer, cred, message), path
        if outcome != ae.AUTH_OUTCOME_NOT_ATTEMPTED:
            assert ev.auth.plugin == {ae.AUTH_METHOD_KEY_AUTH: "key-auth", ae.AUTH_METHOD_BASIC: "basic-auth",
                                      ae.AUTH_METHOD_JWT: "jwt-auth", ae.AUTH_METHOD_HMAC: "hmac-auth"}[method]
    assert got["/key/ok"].event.service_id == "svc-1"
    assert got["/open/x"].event.http.user_agent == "" and got["/key/ok"].event.http.user_agent
    claims = got["/jwt/badsig"].event.auth.jwt
    assert (claims.iss, claims.sub, claims.alg) == ("apisix-idp", "carol", "HS256")
    assert claims.jti_hash == hashlib.sha256(JTI.encode()).hexdigest()


def test_real_ip_keeps_the_tcp_peer_and_reports_the_forwarded_client(nginx_available, short_tmp, gw_sidecar):
    server = start(short_tmp)
    try:
        _, _, client = nginx_process.http_request(server.port, "/realip/a",
                                                  {"apikey": API_KEY, "X-Real-IP": "198.51.100.9"})
        ev = wait_paths(gw_sidecar, {"/realip/a"})["/realip/a"].event
    finally:
        server.stop()
    assert (ev.client.ip, ev.client.port) == client
    assert ev.forwarded_for == "198.51.100.9"


def test_pseudonymized_credential_ids_and_no_secrets_stored(nginx_available, short_tmp, gw_sidecar):
    server = start(short_tmp)
    try:
        for path, headers, *_ in CASES:
            nginx_process.http_request(server.port, path, headers)
        nginx_process.http_request(server.port, "/pseudo/ok", {"Authorization": basic("bob", PASSWORD)})
        nginx_process.http_request(server.port, "/pseudo/bad", {"Authorization": basic("bob", "x-0110")})
        got = wait_paths(gw_sidecar, {p for p, *_ in CASES} | {"/pseudo/ok", "/pseudo/bad"})
    finally:
        server.stop()
    pseudonym = "hmac-sha256:" + hmac.new(HASH_KEY.encode(), b"bob", "sha256").hexdigest()
    assert got["/pseudo/ok"].event.auth.credential_id == pseudonym
    assert got["/pseudo/bad"].event.auth.credential_id == pseudonym
    gw_sidecar.stop()
    stored = b"".join(p.read_bytes() for p in short_tmp.iterdir() if p.name.startswith("authwire.db"))
    stored += (short_tmp / "records.jsonl").read_bytes()
    assert b"cred-alice" in stored and pseudonym.encode() in stored
    secrets = [API_KEY, "apisix-wrong-key-0107", PASSWORD, "apisix-wrong-pw-0108", "x-0110", JWT_SECRET, JTI,
               GOOD_JWT, BAD_JWT, GOOD_JWT.split(".")[2], BAD_JWT.split(".")[2], HMAC_SECRET, HASH_KEY,
               hmac_auth("/hmac/ok", DATE)["Authorization"].split('signature="')[1][:-1],
               basic("bob", PASSWORD).split()[1], "Signature keyId"]
    for secret in secrets:
        assert secret.encode() not in stored, f"secret {secret[:12]}... stored by the sidecar"


def test_schema_checks_and_defaults(nginx_available, short_tmp):
    server = start(short_tmp)
    try:
        code, body, _ = nginx_process.http_request(server.port, "/check-schema")
    finally:
        server.stop()
    assert code == 200
    out = json.loads(body)
    assert out["ok"] == "ok"
    assert "bad sidecar address nowhere" in out["bad_address"]
    assert "credential_hash_key" in out["pseudonym_without_key"]
    assert "credential_hash_key" in out["short_key"] and "too short" in out["short_key"]
    assert "connect_timeout" in out["bad_timeout"]
    d = out["defaults"]
    assert (d["sidecar"], d["batch_max_size"], d["inactive_timeout"], d["max_pending_entries"]) == \
        ("127.0.0.1:9181", 200, 1, 10000)
    assert d["name"] == "authwire" and d["include_user_agent"] is True and d["pseudonymize_credentials"] is False


def test_sidecar_outage_is_counted_and_reporting_resumes(nginx_available, short_tmp):
    server = start(short_tmp, max_pending_entries=8)
    sidecar = None
    try:
        for i in range(40):
            code, _, _ = nginx_process.http_request(server.port, f"/key/down{i}", {"apikey": API_KEY})
            assert code == 200
        stats = json.loads(nginx_process.http_request(server.port, "/authwire-stats")[1])
        assert stats["dropped_pending_full"] >= 40 - 8 - 1 and stats["sent"] == 0
        # batches fail, are retried once (max_retry_count 1) and then given up: counted, not silent
        wait_until(lambda: json.loads(nginx_process.http_request(server.port, "/authwire-stats")[1])
                   ["dropped_send_failed"] > 0, 15, "given-up batches to be counted")
        errors = server.error_lines()
        assert len(errors) < 20, "\n".join(errors)  # per batch attempt (bounded by pending), not per request

        sidecar = start_gw_sidecar(short_tmp)
        # pending entries drain as their retries run out; then new requests are reported again
        deadline = time.monotonic() + 30
        path = None
        while time.monotonic() < deadline:
            path = f"/key/back{time.monotonic_ns()}"
            nginx_process.http_request(server.port, path, {"apikey": API_KEY})
            if any(r.event.http.path.startswith("/key/back") for r in records(sidecar)):
                break
            time.sleep(0.3)
        else:
            raise AssertionError("no report arrived after the sidecar came back")
        stats = json.loads(nginx_process.http_request(server.port, "/authwire-stats")[1])
        assert stats["sent"] >= 1 and stats["send_errors"] >= 2
        # every drop the plugin counted reaches `authwire stats`, once
        # (drops travel with the next report: keep a little traffic going while waiting)
        def told() -> bool:
            nginx_process.http_request(server.port, "/open/tick")
            s = json.loads(nginx_process.http_request(server.port, "/authwire-stats")[1])
            return gateway_drops(sidecar) == {"queue_full": s["dropped_pending_full"],
                                              "send_failed": s["dropped_send_failed"],
                                              "encode_failed": s["encode_errors"]}

        wait_until(told, 30, "the plugin's drops in the sidecar's counters", interval=0.3)
    finally:
        server.stop()
        if sidecar is not None:
            sidecar.kill()

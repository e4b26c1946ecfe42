"""The Kong plugin (gateway-plugins/kong/kong/plugins/authwire/) run by Kong 3.9.3's own Lua on Debian nginx.

Real: kong.tools.queue, the PDK (kong.client/request/response/router/ctx/log/node/plugin), kong.workspaces,
Kong's schema library validating every plugin config, and the key-auth, basic-auth, jwt, hmac-auth and ldap-auth
plugins themselves, reporting to a real `authwire serve`. Substituted (each naming the Kong lines it stands for,
tests/gateway/kong/): Kong's runloop (phase driver), the DAO/cache holding the credentials, kong.timer, the
default workspace id, the LDAP wire protocol, and Lua bindings of C code that does not exist here.

The Kong tree is AUTHWIRE_KONG_HOME (default ../shared/kong beside the checkout); its Lua dependencies that
Debian lacks come from the APISIX runtime's deps (AUTHWIRE_APISIX_HOME, default ../shared/apisix).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import threading
import time
from email.utils import formatdate
from pathlib import Path
from urllib.parse import urlencode

import grpc
import jwt as pyjwt
import nginx_process
import pytest
from gateway_fixtures import gateway_drops, python_pass, start_gw_sidecar
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authwire.v1 import auth_event_pb2 as ae
from authwire.v1 import query_pb2
from support import Sidecar, require, wait_until

pytestmark = pytest.mark.gateway

ROOT = Path(__file__).resolve().parents[2]
KONG_HOME = Path(os.environ.get("AUTHWIRE_KONG_HOME", ROOT.parent / "shared" / "kong")).resolve()
APISIX_HOME = Path(os.environ.get("AUTHWIRE_APISIX_HOME", ROOT.parent / "shared" / "apisix")).resolve()
DEPS_LUA = APISIX_HOME / "deps" / "share" / "lua" / "5.1"
DEPS_C = APISIX_HOME / "deps" / "lib" / "lua" / "5.1"
KONG_LUA = Path(__file__).resolve().parent / "kong"

API_KEY = "kong-key-secret-0201"
PASSWORD = "kong-pw-secret-0202"
JWT_SECRET = "kong-jwt-secret-0203-thirty-two-bytes!!"
HMAC_SECRET = "kong-hmac-secret-0204"
JTI = "kong-jti-secret-0205"
LDAP_PASSWORD = "kong-ldap-secret-0209"
ALICE, BOB, CAROL, DAVE, GUEST = (f"6f0a3c1e-0000-4000-8000-00000000000{i}" for i in range(1, 6))
KEY_CRED, BASIC_CRED = "7a1b2c3d-0000-4000-8000-000000000011", "7a1b2c3d-0000-4000-8000-000000000012"


@pytest.fixture
def kong_home() -> Path:
    require((KONG_HOME / "kong" / "tools" / "queue.lua").is_file(),
            f"needs Kong 3.9's Lua tree at {KONG_HOME} (set AUTHWIRE_KONG_HOME; the team's ../shared/kong has it)")
    require((DEPS_LUA / "resty" / "openssl.lua").is_file() and (DEPS_C / "cjson.so").is_file(),
            f"needs the Lua dependencies of {APISIX_HOME}/deps (set AUTHWIRE_APISIX_HOME; ../shared/apisix has them)")
    return KONG_HOME


def http_body(*, http2: bool = False) -> str:
    paths = ";".join(f"{d}/?.lua;{d}/?/init.lua" for d in (KONG_HOME, DEPS_LUA)) + f";{KONG_LUA}/?.lua;"
    location = """
      access_by_lua_block { require("kong_runloop").access() }
      content_by_lua_block { ngx.say("upstream ok") }
      header_filter_by_lua_block { require("kong_runloop").header_filter() }
      body_filter_by_lua_block { require("kong_runloop").body_filter() }
      log_by_lua_block { require("kong_runloop").log() }
    """
    return f"""
  init_by_lua_block {{
    package.cpath = "{DEPS_C}/?.so;" .. package.cpath  -- OpenResty's cjson (kong/tools/cjson.lua needs it)
    package.path = "{paths}" .. package.path
  }}
  init_worker_by_lua_block {{ require("kong_site") }}
  server {{
    listen 127.0.0.1:{{port}}{" http2" if http2 else ""};
    set $kong_request_id $request_id;  # lua-kong-nginx-module defines it in Kong's nginx
    location / {{ {location} }}
    location /realip/ {{
      set_real_ip_from 127.0.0.1;
      real_ip_header X-Forwarded-For;
      {location}
    }}
    location = /test/stats {{
      content_by_lua_block {{
        local s = require("kong.plugins.authwire.handler").stats()
        s.after_log = require("kong_runloop").after_log
        ngx.say(require("cjson").encode(s))
      }}
    }}
    location = /test/reconfigure {{
      content_by_lua_block {{
        local site = require("kong_site")
        local patch = require("cjson").decode(ngx.unescape_uri(ngx.var.arg_patch))
        site.reconfigure(patch)
        ngx.say("ok")
      }}
    }}
    location = /test/message {{
      content_by_lua_block {{
        -- Kong's own error template for a MIME type (kong/tools/http.lua), filled as kong.response.error does,
        -- then parsed back; or, with arg_raw, any body the plugin might be handed
        local args = ngx.req.get_uri_args(10)
        local body = args.raw
        if not body then
          local template = require("kong.tools.http").get_error_template(args.mime)
          body = string.format(template, args.message, "0123456789abcdef")
        end
        local m = require("kong.plugins.authwire.response_message").of(body, args.mime, args.grpc)
        ngx.say(require("cjson").encode({{ message = m and ngx.encode_base64(m) or ngx.null }}))
      }}
    }}
    location = /test/schema {{
      content_by_lua_block {{
        local runtime = require("kong_runtime")
        local out = {{}}
        for name, conf in pairs(require("cjson").decode(ngx.unescape_uri(ngx.var.arg_cases))) do
          local e, err = runtime.plugin_entity("authwire", conf)
          out[name] = e and e.config or {{ error = err }}
        end
        ngx.say(require("cjson").encode(out))
      }}
    }}
  }}
"""


def site(sock: Path, ldap_port: int, **aw) -> str:
    queue = {"max_batch_size": 5, "max_coalescing_delay": 0.1, "max_retry_time": 1, "initial_retry_delay": 0.1,
             "max_retry_delay": 0.5, **aw.pop("queue", {})}
    authwire = {"sidecar": f"unix:{sock}", "node": "kong-test", "queue": queue, "jwt_cookie_names": ["tok"], **aw}
    route_authwire = {**authwire, "key_names": ["x-api-key"], "node": "kong-test-route"}
    basic_hash = hashlib.sha1(f"{PASSWORD}{BOB}".encode()).hexdigest()
    return f"""
local runtime = require("kong_runtime")
local runloop = require("kong_runloop")
local cjson = require("cjson")
runtime.add_consumer({{id = "{ALICE}", username = "alice"}},
  {{["key-auth"] = {{id = "{KEY_CRED}", key = {json.dumps(API_KEY)}}}}})
runtime.add_consumer({{id = "{BOB}", username = "bob"}},
  {{["basic-auth"] = {{id = "{BASIC_CRED}", username = "bob", password = {json.dumps(PASSWORD)}}}}})
runtime.add_consumer({{id = "{CAROL}", username = "carol"}},
  {{jwt = {{key = "carol-iss", secret = {json.dumps(JWT_SECRET)}, algorithm = "HS256"}}}})
runtime.add_consumer({{id = "{DAVE}", custom_id = "dave-custom"}},
  {{["hmac-auth"] = {{username = "dave", secret = {json.dumps(HMAC_SECRET)}}}}})
runtime.add_consumer({{id = "{GUEST}", username = "guest"}})
runtime.add_ldap_user("erin", {json.dumps(LDAP_PASSWORD)})
assert(require("kong.plugins.basic-auth.crypto").hash("{BOB}", {json.dumps(PASSWORD)}) == "{basic_hash}")

local svc = {{id = "8c9d0e1f-0000-4000-8000-000000000001", name = "orders"}}
local authwire = runloop.add_global("authwire", cjson.decode({json.dumps(json.dumps(authwire))}))
local function route(id, prefix, plugins)
  runloop.add_route({{id = id, prefix = prefix, service = svc, plugins = plugins}})
end
route("route-key", "/key/", {{{{"key-auth", {{}}}}}})
route("route-key2", "/key2/", {{{{"key-auth", {{key_names = {{"x-api-key"}}}}}},
                               {{"authwire", cjson.decode({json.dumps(json.dumps(route_authwire))})}}}})
route("route-anon", "/anon/", {{{{"key-auth", {{anonymous = "{GUEST}"}}}}}})
route("route-basic", "/basic/", {{{{"basic-auth", {{}}}}}})
route("route-jwt", "/jwt/", {{{{"jwt", {{uri_param_names = {{"jwt"}}, cookie_names = {{"tok"}}}}}}}})
route("route-jwtexp", "/jwtexp/", {{{{"jwt", {{claims_to_verify = {{"exp"}}}}}}}})
route("route-hmac", "/hmac/", {{{{"hmac-auth", {{}}}}}})
route("route-ldap", "/ldap/", {{{{"ldap-auth", {{ldap_host = "127.0.0.1", ldap_port = {ldap_port},
                                            base_dn = "dc=example,dc=com", attribute = "cn"}}}}}})
route("route-open", "/open/", {{}})
route("route-realip", "/realip/", {{{{"key-auth", {{}}}}}})

-- fault injection for the log-phase guard test: a PDK call of the log phase (on a refused request) that raises
-- on /key/fault*
local get_source = kong.response.get_source
kong.response.get_source = function(...)
  if ngx.var.uri:find("^/key/fault") then
    error("injected PDK failure")
  end
  return get_source(...)
end

local _M = {{}}
function _M.reconfigure(patch)
  local conf = cjson.decode({json.dumps(json.dumps(authwire))})
  for k, v in pairs(patch) do
    if k == "queue" then
      for qk, qv in pairs(v) do conf.queue[qk] = qv end
    else
      conf[k] = v
    end
  end
  runloop.reconfigure(authwire, conf)
end
return _M
"""


class Kong:
    """nginx running Kong's Lua with the test site; a listening socket stands in for the LDAP server's port."""

    def __init__(self, tmp: Path, *, http2: bool = False, **aw):
        self.ldap = socket.socket()
        self.ldap.bind(("127.0.0.1", 0))
        self.ldap.listen(64)
        try:
            self.server = nginx_process.start_nginx(
                tmp / ("nginx-h2" if http2 else "nginx"),
                (nginx_process.PACKED_MAP if aw.get("packed_var") else "") + http_body(http2=http2),
                lua_files={"kong_site.lua": site(tmp / "gw.sock", self.ldap.getsockname()[1], **aw)})
        except BaseException:
            self.ldap.close()
            raise
        self.port = self.server.port

    def get(self, path: str, headers: dict[str, str] | None = None):
        return nginx_process.http_request(self.port, path, headers)

    def stats(self) -> dict:
        return json.loads(self.get("/test/stats")[1])

    def stop(self) -> None:
        try:
            self.server.stop()
        finally:
            self.ldap.close()

    def __enter__(self) -> Kong:
        return self

    def __exit__(self, kind, *exc) -> None:
        if kind is not None:  # shown by pytest with the failure
            print("nginx error.log:\n" + "\n".join(self.server.error_lines()[-30:]))
        self.stop()


def records(sidecar: Sidecar) -> list:
    return list(sidecar.query().Query(query_pb2.QueryRequest(limit=1000), timeout=10).records)


def wait_paths(sidecar: Sidecar, paths: set[str]) -> dict:
    def arrived():
        got = {r.event.http.path: r for r in records(sidecar)}
        return got if paths <= set(got) else None

    return wait_until(arrived, 20, f"records for {sorted(paths)}")


def basic(user: str, password: str, scheme: str = "Basic") -> str:
    return f"{scheme} " + base64.b64encode(f"{user}:{password}".encode()).decode()


def jwt_token(secret: str = JWT_SECRET, exp_in: int = 600, iss: str = "carol-iss") -> str:
    now = int(time.time())
    return pyjwt.encode({"iss": iss, "sub": "carol", "aud": "orders", "exp": now + exp_in, "iat": now,
                         "jti": JTI}, secret, algorithm="HS256", headers={"kid": "kong-kid"})


def hmac_headers(secret: str = HMAC_SECRET, date: str | None = None, user: str = "dave",
                 header: str = "Authorization") -> dict[str, str]:
    date = date or formatdate(usegmt=True)
    sig = base64.b64encode(hmac.new(secret.encode(), f"date: {date}".encode(), "sha256").digest()).decode()
    return {"Date": date, header: f'hmac username="{user}", algorithm="hmac-sha256", headers="date", '
                                  f'signature="{sig}"'}


R = ae  # enum names below
GOOD_JWT, BAD_JWT, OLD_JWT = jwt_token(), jwt_token("wrong-secret-thirty-two-bytes-long!!"), jwt_token(exp_in=-60)
HMAC_OK, HMAC_BAD = hmac_headers(), hmac_headers("kong-wrong-hmac-0206")
CASES = [
    # path, headers, status, method, outcome, reason, consumer, credential id, message
    ("/key/ok", {"apikey": API_KEY}, 200, R.AUTH_METHOD_KEY_AUTH, R.AUTH_OUTCOME_SUCCESS, 0, "alice", KEY_CRED, ""),
    ("/key/query?apikey=" + API_KEY, {}, 200, R.AUTH_METHOD_KEY_AUTH, R.AUTH_OUTCOME_SUCCESS, 0, "alice",
     KEY_CRED, ""),
    ("/key/missing", {}, 401, R.AUTH_METHOD_KEY_AUTH, R.AUTH_OUTCOME_FAILURE,
     R.FAILURE_REASON_MISSING_CREDENTIALS, "", "", "No API key found in request"),
    ("/key/unknown", {"apikey": "kong-wrong-key-0207"}, 401, R.AUTH_METHOD_KEY_AUTH, R.AUTH_OUTCOME_FAILURE,
     R.FAILURE_REASON_UNKNOWN_KEY, "", "", "Unauthorized"),
    ("/key2/custom-name", {"x-api-key": "kong-wrong-key-0207"}, 401, R.AUTH_METHOD_KEY_AUTH,
     R.AUTH_OUTCOME_FAILURE, R.FAILURE_REASON_UNKNOWN_KEY, "", "", "Unauthorized"),
    ("/anon/x", {"apikey": "kong-wrong-key-0207"}, 200, R.AUTH_METHOD_KEY_AUTH, R.AUTH_OUTCOME_FAILURE,
     R.FAILURE_REASON_OTHER, "guest", "", "anonymous consumer"),
    ("/basic/ok", {"Authorization": basic("bob", PASSWORD)}, 200, R.AUTH_METHOD_BASIC, R.AUTH_OUTCOME_SUCCESS,
     0, "bob", "bob", ""),
    ("/basic/proxy", {"Proxy-Authorization": basic("bob", PASSWORD)}, 200, R.AUTH_METHOD_BASIC,
     R.AUTH_OUTCOME_SUCCESS, 0, "bob", "bob", ""),
    ("/basic/wrong", {"Authorization": basic("bob", "kong-wrong-pw-0208")}, 401, R.AUTH_METHOD_BASIC,
     R.AUTH_OUTCOME_FAILURE, R.FAILURE_REASON_INVALID_CREDENTIALS, "", "bob", "Unauthorized"),
    ("/basic/proxy-wrong", {"Proxy-Authorization": basic("mallory", "kong-wrong-pw-0208")}, 401,
     R.AUTH_METHOD_BASIC, R.AUTH_OUTCOME_FAILURE, R.FAILURE_REASON_INVALID_CREDENTIALS, "", "mallory",
     "Unauthorized"),
    ("/basic/missing", {}, 401, R.AUTH_METHOD_BASIC, R.AUTH_OUTCOME_FAILURE,
     R.FAILURE_REASON_MISSING_CREDENTIALS, "", "", "Unauthorized"),
    # the challenge names the plugin, whatever scheme the client sent
    ("/basic/bearer-sent", {"Authorization": "Bearer " + GOOD_JWT}, 401, R.AUTH_METHOD_BASIC,
     R.AUTH_OUTCOME_FAILURE, R.FAILURE_REASON_INVALID_CREDENTIALS, "", "", "Unauthorized"),
    ("/jwt/ok", {"Authorization": "Bearer " + GOOD_JWT}, 200, R.AUTH_METHOD_JWT, R.AUTH_OUTCOME_SUCCESS, 0,
     "carol", "carol-iss", ""),
    ("/jwt/query?jwt=" + GOOD_JWT, {}, 200, R.AUTH_METHOD_JWT, R.AUTH_OUTCOME_SUCCESS, 0, "carol", "carol-iss", ""),
    ("/jwt/cookie", {"Cookie": "tok=" + BAD_JWT}, 401, R.AUTH_METHOD_JWT, R.AUTH_OUTCOME_FAILURE,
     R.FAILURE_REASON_BAD_SIGNATURE, "", "carol-iss", "Invalid signature"),
    ("/jwt/badsig", {"Authorization": "Bearer " + BAD_JWT}, 401, R.AUTH_METHOD_JWT, R.AUTH_OUTCOME_FAILURE,
     R.FAILURE_REASON_BAD_SIGNATURE, "", "carol-iss", "Invalid signature"),
    ("/jwt/missing", {}, 401, R.AUTH_METHOD_JWT, R.AUTH_OUTCOME_FAILURE, R.FAILURE_REASON_MISSING_CREDENTIALS,
     "", "", "Unauthorized"),
    # a stock jwt plugin (no claims_to_verify) accepts an expired token: reported as the success it was
    ("/jwt/expired-accepted", {"Authorization": "Bearer " + OLD_JWT}, 200, R.AUTH_METHOD_JWT,
     R.AUTH_OUTCOME_SUCCESS, 0, "carol", "carol-iss", ""),
    ("/jwtexp/expired", {"Authorization": "Bearer " + OLD_JWT}, 401, R.AUTH_METHOD_JWT, R.AUTH_OUTCOME_FAILURE,
     R.FAILURE_REASON_EXPIRED, "", "carol-iss", "exp: token expired"),
    ("/jwtexp/ok", {"Authorization": "Bearer " + GOOD_JWT}, 200, R.AUTH_METHOD_JWT, R.AUTH_OUTCOME_SUCCESS, 0,
     "carol", "carol-iss", ""),
    ("/jwt/unknown", {"Authorization": "Bearer " + jwt_token(iss="nobody")}, 401, R.AUTH_METHOD_JWT,
     R.AUTH_OUTCOME_FAILURE, R.FAILURE_REASON_UNKNOWN_KEY, "", "nobody", "No credentials found for given 'iss'"),
    ("/hmac/ok", HMAC_OK, 200, R.AUTH_METHOD_HMAC, R.AUTH_OUTCOME_SUCCESS, 0, "dave-custom", "dave", ""),
    ("/hmac/bad", HMAC_BAD, 401, R.AUTH_METHOD_HMAC, R.AUTH_OUTCOME_FAILURE, R.FAILURE_REASON_BAD_SIGNATURE,
     "", "dave", "HMAC signature does not match"),
    ("/hmac/unknown-user", hmac_headers(user="mallory"), 401, R.AUTH_METHOD_HMAC, R.AUTH_OUTCOME_FAILURE,
     R.FAILURE_REASON_UNKNOWN_KEY, "", "mallory", "HMAC signature cannot be verified"),
    ("/hmac/proxy", hmac_headers(header="Proxy-Authorization"), 200, R.AUTH_METHOD_HMAC, R.AUTH_OUTCOME_SUCCESS,
     0, "dave-custom", "dave", ""),
    ("/hmac/skew", hmac_headers(date="Mon, 01 Jan 2024 00:00:00 GMT"), 401, R.AUTH_METHOD_HMAC,
     R.AUTH_OUTCOME_FAILURE, R.FAILURE_REASON_CLOCK_SKEW, "", "dave",
     "HMAC signature cannot be verified, a valid date or x-date header is required for HMAC Authentication"),
    ("/hmac/missing", {}, 401, R.AUTH_METHOD_HMAC, R.AUTH_OUTCOME_FAILURE, R.FAILURE_REASON_MISSING_CREDENTIALS,
     "", "", "Unauthorized"),
    # ldap-auth authenticates a directory user: a credential and no consumer
    ("/ldap/ok", {"Authorization": basic("erin", LDAP_PASSWORD, "ldap")}, 200, R.AUTH_METHOD_BASIC,
     R.AUTH_OUTCOME_SUCCESS, 0, "", "erin", ""),
    ("/ldap/wrong", {"Authorization": basic("erin", "kong-wrong-pw-0210", "ldap")}, 401, R.AUTH_METHOD_BASIC,
     R.AUTH_OUTCOME_FAILURE, R.FAILURE_REASON_INVALID_CREDENTIALS, "", "erin", "Unauthorized"),
    ("/open/x", {}, 200, R.AUTH_METHOD_NONE, R.AUTH_OUTCOME_NOT_ATTEMPTED, 0, "", "", ""),
]
PLUGINS = {R.AUTH_METHOD_KEY_AUTH: "key-auth", R.AUTH_METHOD_BASIC: "basic-auth", R.AUTH_METHOD_JWT: "jwt",
           R.AUTH_METHOD_HMAC: "hmac-auth"}


@pytest.mark.parametrize("packed", [False, True], ids=["vars", "packed_var"])
def test_each_auth_outcome_through_kongs_own_plugins(kong_home, nginx_available, short_tmp, gw_sidecar, packed):
    """Item 12: Kong's real key-auth/basic-auth/jwt/hmac-auth/ldap-auth decide, the plugin reports (with the
    variables read one by one, and from the packed one: the event is then written straight into the batch)."""
    with Kong(short_tmp, **({"packed_var": "authwire_vars"} if packed else {})) as kong:
        sent = {}
        for path, headers, want, *_ in CASES:
            code, body, client = kong.get(path, headers)
            assert code == want, (path, body)
            sent[path.split("?")[0]] = client
        got = wait_paths(gw_sidecar, set(sent))
        stats = kong.stats()
    for path, _, want, method, outcome, reason, consumer, cred, message in CASES:
        path = path.split("?")[0]
        ev = got[path].event
        assert (ev.client.ip, ev.client.port) == sent[path], path
        assert (ev.server.ip, ev.server.port) == ("127.0.0.1", kong.port)
        assert ev.gateway.kind == ae.GATEWAY_KIND_KONG and ev.gateway.version == "3.9.3"
        assert ev.gateway.node == ("kong-test-route" if path.startswith("/key2/") else "kong-test")
        assert ev.http.status == want and ev.route_id == "route-" + path.split("/")[1], path
        assert len(ev.request_id) == 32 and ev.http.method == "GET" and ev.http.path == path
        assert ev.service_id == "8c9d0e1f-0000-4000-8000-000000000001"
        assert (ev.auth.method, ev.auth.outcome, ev.auth.reason) == (method, outcome, reason), path
        assert (ev.auth.consumer, ev.auth.credential_id, ev.auth.message) == (consumer, cred, message), path
        if outcome != ae.AUTH_OUTCOME_NOT_ATTEMPTED:
            plugin = "ldap-auth" if path.startswith("/ldap/") else PLUGINS[method]
            assert ev.auth.plugin == plugin, path
    claims = got["/jwt/ok"].event.auth.jwt
    assert (claims.iss, claims.sub, claims.aud, claims.kid, claims.alg) == \
        ("carol-iss", "carol", "orders", "kong-kid", "HS256")
    assert claims.jti_hash == hashlib.sha256(JTI.encode()).hexdigest()
    # accepted although expired: the claims say so
    assert 0 < got["/jwt/expired-accepted"].event.auth.jwt.exp < time.time()
    assert got["/jwtexp/expired"].event.auth.jwt.exp < time.time()
    assert stats["after_log"] >= len(CASES) and stats["encode_errors"] == 0
    assert python_pass(gw_sidecar) == 0  # every outcome Kong's plugins produce takes the native pass


ACCEPTS = {"json": "application/json", "html": "text/html", "text": "text/plain", "xml": "application/xml"}


@pytest.mark.parametrize("fmt", sorted(ACCEPTS))
def test_error_body_in_every_accept_format(kong_home, nginx_available, short_tmp, gw_sidecar, fmt):
    """Item 12: kong.response.error bodies follow Accept; each format is parsed."""
    cases = {
        f"/key/{fmt}-unknown": ({"apikey": "kong-wrong-key-0207"}, R.FAILURE_REASON_UNKNOWN_KEY, "Unauthorized"),
        f"/hmac/{fmt}-unknown": (hmac_headers(user="mallory"), R.FAILURE_REASON_UNKNOWN_KEY,
                                 "HMAC signature cannot be verified"),
        f"/basic/{fmt}-missing": ({}, R.FAILURE_REASON_MISSING_CREDENTIALS, "Unauthorized"),
        f"/hmac/{fmt}-skew": (hmac_headers(date="Mon, 01 Jan 2024 00:00:00 GMT"), R.FAILURE_REASON_CLOCK_SKEW,
                              "HMAC signature cannot be verified, a valid date or x-date header is required for "
                              "HMAC Authentication"),
    }
    with Kong(short_tmp) as kong:
        for path, (headers, _, message) in cases.items():
            code, body, _ = kong.get(path, {**headers, "Accept": ACCEPTS[fmt]})
            assert code == 401 and message.encode() in body, (path, body)
        got = wait_paths(gw_sidecar, set(cases))
    for path, (_, reason, message) in cases.items():
        auth = got[path].event.auth
        assert (auth.outcome, auth.reason, auth.message) == (R.AUTH_OUTCOME_FAILURE, reason, message), path


def test_forwarded_client_and_tcp_peer(kong_home, nginx_available, short_tmp, gw_sidecar):
    with Kong(short_tmp) as kong:
        _, _, client = kong.get("/realip/a", {"apikey": API_KEY, "X-Forwarded-For": "203.0.113.5"})
        ev = wait_paths(gw_sidecar, {"/realip/a"})["/realip/a"].event
    assert (ev.client.ip, ev.client.port) == client and ev.forwarded_for == "203.0.113.5"


def test_no_secrets_stored(kong_home, nginx_available, short_tmp, gw_sidecar):
    with Kong(short_tmp) as kong:
        for path, headers, *_ in CASES:
            kong.get(path, headers)
        wait_paths(gw_sidecar, {p.split("?")[0] for p, *_ in CASES})
        log = kong.server.log_text()
    gw_sidecar.stop()
    stored = b"".join(p.read_bytes() for p in short_tmp.iterdir() if p.name.startswith("authwire.db"))
    stored += (short_tmp / "records.jsonl").read_bytes()
    assert KEY_CRED.encode() in stored and b"carol-iss" in stored and b"erin" in stored
    secrets = [API_KEY, "kong-wrong-key-0207", PASSWORD, "kong-wrong-pw-0208", JWT_SECRET, JTI, GOOD_JWT, BAD_JWT,
               OLD_JWT, GOOD_JWT.split(".")[2], HMAC_SECRET, HMAC_OK["Authorization"].split('signature="')[1][:-1],
               HMAC_BAD["Authorization"].split('signature="')[1][:-1], basic("bob", PASSWORD).split()[1],
               hashlib.sha1(f"{PASSWORD}{BOB}".encode()).hexdigest(), LDAP_PASSWORD, "kong-wrong-pw-0210"]
    for secret in secrets:
        assert secret.encode() not in stored, f"secret {secret[:12]}... stored by the sidecar"
        assert secret not in log, f"secret {secret[:12]}... in the gateway's error log"


def test_schema_through_kongs_schema_library(kong_home, nginx_available, short_tmp):
    cases = {
        "defaults": {},
        "bad_address": {"sidecar": "nowhere:x"},
        "pseudonym_without_key": {"pseudonymize_credentials": True},
        "short_key": {"pseudonymize_credentials": True, "credential_hash_key": "short"},
        "bad_timeout": {"connect_timeout": -1},
        "token": {"token": "t0ken-value"},
        "vault_token": {"token": "{vault://env/authwire-token}"},
        "bad_concurrency": {"queue": {"concurrency_limit": 2}},
    }
    with Kong(short_tmp) as kong:
        code, body, _ = kong.get("/test/schema?cases=" + _quote(json.dumps(cases)))
    assert code == 200, kong.server.error_lines()
    out = json.loads(body)
    assert "bad sidecar address nowhere:x" in out["bad_address"]["error"]["config"]["sidecar"]
    assert out["pseudonym_without_key"]["error"]["config"]["credential_hash_key"] == "required field missing"
    assert out["short_key"]["error"]["config"]["credential_hash_key"] == "length must be at least 16"
    assert "between" in out["bad_timeout"]["error"]["config"]["connect_timeout"]
    assert "concurrency_limit" in out["bad_concurrency"]["error"]["config"]["queue"]
    d = out["defaults"]
    assert (d["sidecar"], d["connect_timeout"], d["jwt_key_claim_name"], d["include_user_agent"]) == \
        ("127.0.0.1:9181", 1000, "iss", True)
    assert (d["key_names"], d["jwt_header_names"], d["jwt_uri_param_names"]) == \
        (["apikey"], ["authorization"], ["jwt"])
    assert d["queue"]["max_entries"] == 10000 and d["queue"]["max_batch_size"] == 1
    assert d["queue"]["concurrency_limit"] == 1 and "token" not in d
    assert out["token"]["token"] == "t0ken-value"
    assert out["vault_token"]["token"] == "{vault://env/authwire-token}"  # a reference, resolved by Kong's vault


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def test_log_phase_never_breaks_later_plugins(kong_home, nginx_available, short_tmp, gw_sidecar):
    """Item 10: on Kong's real queue the log phase runs to the end for every request (Kong does not guard it)."""
    with Kong(short_tmp) as kong:
        for i in range(20):
            assert kong.get(f"/key/n{i}", {"apikey": API_KEY})[0] == 200
        wait_paths(gw_sidecar, {f"/key/n{i}" for i in range(20)})
        stats = kong.stats()
        errors = [line for line in kong.server.error_lines() if "authwire" in line or "queue" in line]
    assert stats["after_log"] == 20 and stats["queued"] == 20 and stats["sent"] == 20
    assert errors == []


def test_a_failure_inside_the_log_phase_is_counted_not_raised(kong_home, nginx_available, short_tmp, gw_sidecar):
    """Item 10: whatever fails inside the plugin's log phase (here a PDK call), Kong's log phase goes on (later
    plugins, after-log work) and the lost event is counted."""
    with Kong(short_tmp) as kong:
        for i in range(3):
            assert kong.get(f"/key/fault{i}")[0] == 401
        kong.get("/open/after-fault")
        wait_paths(gw_sidecar, {"/open/after-fault"})
        stats = kong.stats()
        lines = kong.server.error_lines()
    assert stats["after_log"] == 4 and stats["encode_errors"] == 3 and stats["queued"] == 1
    assert not [line for line in lines if "log_by_lua" in line], lines


def test_queue_max_bytes_queues_strings_without_an_error_per_request(kong_home, nginx_available, short_tmp,
                                                                     gw_sidecar):
    """Item 12: with queue.max_bytes Kong needs string entries (else one error line per request)."""
    with Kong(short_tmp, queue={"max_bytes": 100000}) as kong:
        for i in range(10):
            assert kong.get(f"/key/b{i}", {"apikey": API_KEY})[0] == 200
        got = wait_paths(gw_sidecar, {f"/key/b{i}" for i in range(10)})
        errors = kong.server.error_lines()
    assert got["/key/b3"].event.auth.consumer == "alice"
    assert errors == []


def test_queue_max_bytes_bound_is_counted(kong_home, nginx_available, short_tmp):
    """Events that would overflow queue.max_bytes are dropped by the plugin and counted, not by Kong silently."""
    with Kong(short_tmp, queue={"max_bytes": 600, "max_retry_time": 30}) as kong:  # sidecar down
        for i in range(10):
            assert kong.get(f"/key/mb{i}", {"apikey": API_KEY})[0] == 200
        stats = kong.stats()
        errors = [line for line in kong.server.error_lines() if "byte capacity" in line or "dropped" in line]
    assert stats["dropped_queue_full"] > 0 and stats["queued"] + stats["dropped_queue_full"] == 10
    assert errors == []


def test_queue_parameters_stay_those_of_the_queue(kong_home, nginx_available, short_tmp):
    """Item 11: Kong fixes max_retry_time / max_entries when it creates the queue; a config change while the queue
    lives must not make the plugin apply the new values to it (pending stuck, drops uncounted)."""
    with Kong(short_tmp, queue={"max_retry_time": 1, "max_entries": 50}) as kong:  # sidecar down
        for i in range(5):
            kong.get(f"/key/p{i}", {"apikey": API_KEY})
        # the same plugin instance gets a new config while its queue still holds the events
        assert kong.get("/test/reconfigure?patch=" + _quote(json.dumps(
            {"queue": {"max_retry_time": 3600, "max_entries": 3}})))[0] == 200
        for i in range(5, 10):
            kong.get(f"/key/p{i}", {"apikey": API_KEY})
        # the queue Kong made still gives batches up after 1 s, and the plugin counts each of them
        stats = wait_until(lambda: (s := kong.stats())["pending"] == 0 and s, 20, "every batch given up")
    assert stats["queued"] == 10 and stats["dropped_queue_full"] == 0
    assert stats["dropped_send_failed"] == 10 and stats["sent"] == 0


def wait_drops_told(kong: Kong, sidecar: Sidecar, timeout: float = 30) -> tuple[dict, int]:
    """Wait until nothing is pending and `authwire stats` holds exactly the plugin's drops; no counter may ever be
    negative on the way. Drops made after the last report travel with the next one: while idle, a request to an
    unauthenticated route is sent. Returns the plugin's stats and how many such requests were sent."""
    ticks = 0

    def told():
        nonlocal ticks
        s = kong.stats()
        drops = gateway_drops(sidecar)
        counts = [v for v in s.values() if isinstance(v, int)] + list(s["untold"].values())
        assert min(drops.values()) >= 0 and min(counts) >= 0, (s, drops)
        if s["pending"] == 0 and drops == {"queue_full": s["dropped_queue_full"],
                                           "send_failed": s["dropped_send_failed"],
                                           "encode_failed": s["encode_errors"]}:
            return s
        if s["pending"] == 0:
            kong.get(f"/open/tick{ticks}")
            ticks += 1
        return None

    try:
        return wait_until(told, timeout, "every drop told once, nothing pending", interval=0.3), ticks
    except AssertionError as exc:
        raise AssertionError(f"{exc}: plugin {kong.stats()}, sidecar {gateway_drops(sidecar)}") from None


def test_sidecar_outage_is_counted_and_reporting_resumes(kong_home, nginx_available, short_tmp):
    with Kong(short_tmp, queue={"max_entries": 8}) as kong:
        sidecar = None
        try:
            for i in range(40):
                assert kong.get(f"/key/down{i}", {"apikey": API_KEY})[0] == 200
            stats = kong.stats()
            assert stats["dropped_queue_full"] >= 40 - 8 and stats["sent"] == 0
            # batches are retried for max_retry_time (1 s) and then given up: counted, not silent
            wait_until(lambda: kong.stats()["dropped_send_failed"] > 0, 15, "given-up batches to be counted")
            assert stats["after_log"] == 40
            errors = [line for line in kong.server.error_lines() if "authwire" in line]
            assert len(errors) < 20, "\n".join(errors)

            sidecar = start_gw_sidecar(short_tmp)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                kong.get(f"/key/back{time.monotonic_ns()}", {"apikey": API_KEY})
                if any(r.event.http.path.startswith("/key/back") for r in records(sidecar)):
                    break
                time.sleep(0.3)
            else:
                raise AssertionError("no report arrived after the sidecar came back")
            assert kong.stats()["sent"] >= 1

            wait_drops_told(kong, sidecar)  # every drop the plugin counted reaches `authwire stats`, once
        finally:
            if sidecar is not None:
                sidecar.kill()


def test_concurrent_queues_count_every_drop_once(kong_home, nginx_available, short_tmp):
    """Item 11: one queue per plugin instance, their handlers run concurrently; drops are told exactly once."""
    with Kong(short_tmp, queue={"max_entries": 6, "max_batch_size": 2}) as kong:
        sidecar = None
        try:
            for i in range(30):  # both instances (global, and /key2/'s own) drop while the sidecar is down
                kong.get(f"/key/c{i}", {"apikey": API_KEY})
                kong.get(f"/key2/c{i}", {"x-api-key": "kong-wrong-key-0207"})
            assert len(kong.stats()["queues"]) == 2
            sidecar = start_gw_sidecar(short_tmp)
            for i in range(60):  # several batches of both queues in flight at once
                kong.get(f"/key/r{i}", {"apikey": API_KEY})
                kong.get(f"/key2/r{i}", {"x-api-key": "kong-wrong-key-0207"})

            s, _ = wait_drops_told(kong, sidecar)
            assert s["dropped_queue_full"] > 0
            assert s["queued"] == s["sent"] + s["dropped_send_failed"]
        finally:
            if sidecar is not None:
                sidecar.kill()


class CaptureServer:
    """A TCP listener that records each HTTP request the plugin sends and answers 503 (a sidecar that refuses)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.requests: list[bytes] = []
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                self.requests.append(nginx_process.read_head(conn)[0])
                conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    def stop(self) -> None:
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


def test_token_sent_only_when_configured_and_never_logged(kong_home, nginx_available, short_tmp):
    token = "aw-token-secret-0211"
    capture = CaptureServer()
    try:
        with Kong(short_tmp, queue={"max_batch_size": 1, "max_retry_time": 0.5}) as kong:
            for patch, path in (({"sidecar": capture.address, "token": token}, "/open/with-token"),
                                ({"sidecar": capture.address}, "/open/without-token")):
                assert kong.get("/test/reconfigure?patch=" + _quote(json.dumps(patch)))[0] == 200
                seen = len(capture.requests)
                kong.get(path)
                wait_until(lambda n=seen: len(capture.requests) > n, 10, f"a report for {path}")
            log = kong.server.log_text()
    finally:
        capture.stop()
    first = capture.requests[0].decode()
    assert f"\r\nAuthorization: Bearer {token}" in first
    assert "authorization" not in capture.requests[-1].decode().lower()  # after the token was removed
    assert token not in log


def grpc_call(port: int, path: str, metadata: list[tuple[str, str]]) -> grpc.RpcError | None:
    """One unary gRPC call over h2c to nginx (what Kong's gRPC routes receive); the error Kong answered."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
        try:
            call(b"", metadata=metadata, timeout=10)
        except grpc.RpcError as exc:
            return exc
    return None


def test_grpc_failures_carry_the_message_in_grpc_message(kong_home, nginx_available, short_tmp, gw_sidecar):
    """Item 12: gRPC replies have no body: kong.response.exit's message travels in grpc-message, while
    kong.response.error sends only the status's generic text (kong/pdk/response.lua send())."""
    cases = {
        "/jwt/grpc.Svc/BadSig": ([("authorization", "Bearer " + BAD_JWT)], R.FAILURE_REASON_BAD_SIGNATURE,
                                 "Invalid signature", "carol-iss"),
        "/key/grpc.Svc/Unknown": ([("apikey", "kong-wrong-key-0207")], R.FAILURE_REASON_UNKNOWN_KEY, "", ""),
        "/basic/grpc.Svc/Missing": ([], R.FAILURE_REASON_MISSING_CREDENTIALS, "", ""),
    }
    with Kong(short_tmp, http2=True) as kong:
        for path, (metadata, *_) in cases.items():
            err = grpc_call(kong.port, path, metadata)
            assert err is not None and err.code() == grpc.StatusCode.UNAUTHENTICATED, (path, err)
        got = wait_paths(gw_sidecar, set(cases))
    for path, (_, reason, message, cred) in cases.items():
        auth = got[path].event.auth
        assert (auth.outcome, auth.reason, auth.message, auth.credential_id) == \
            (R.AUTH_OUTCOME_FAILURE, reason, message, cred), path
        assert got[path].event.http.status == 401


def test_token_opens_the_sidecars_tcp_listener(kong_home, nginx_available, short_tmp):
    """The sidecar's TCP gRPC-Web listener wants its bearer token: with config.token reports arrive, without
    they are refused (send errors, nothing stored)."""
    token = "aw-token-secret-0212-" + "x" * 20
    token_file = short_tmp / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    address = f"127.0.0.1:{nginx_process.free_port()}"
    sidecar = start_gw_sidecar(short_tmp, "--grpc-web-listen", address, "--token-file", str(token_file))
    try:
        with Kong(short_tmp, queue={"max_batch_size": 1, "max_retry_time": 0.3}) as kong:
            kong.get("/test/reconfigure?patch=" + _quote(json.dumps({"sidecar": address})))
            kong.get("/open/no-token")
            wait_until(lambda: kong.stats()["dropped_send_failed"] == 1, 10, "the refused report given up")
            kong.get("/test/reconfigure?patch=" + _quote(json.dumps({"sidecar": address, "token": token})))
            kong.get("/open/with-token")
            wait_paths(sidecar, {"/open/with-token"})
            log = kong.server.log_text()
        assert "/open/no-token" not in {r.event.http.path for r in records(sidecar)}
        assert token not in log
    finally:
        sidecar.kill()


MESSAGE_TEXT = st.text(st.characters(codec="utf-8", exclude_characters='"<>&\\\n\r%', exclude_categories=("Cs", "Cc")),
                       min_size=1, max_size=80).filter(lambda m: m.strip() == m and m != "")


@pytest.fixture
def kong_server(kong_home, nginx_available, short_tmp):
    with Kong(short_tmp) as kong:
        yield kong


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=MESSAGE_TEXT, fmt=st.sampled_from(sorted(ACCEPTS)))
def test_every_kong_error_template_parses_back(kong_server, message, fmt):
    """Property: whatever message an auth plugin passes to kong.response.error, Kong's own template for the
    client's Accept format (kong/tools/http.lua) parses back to exactly that message."""
    code, body, _ = kong_server.get("/test/message?" + urlencode({"mime": ACCEPTS[fmt], "message": message}))
    assert code == 200
    assert base64.b64decode(json.loads(body)["message"]).decode() == message


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(min_size=1, max_size=1200), mime=st.sampled_from(["", "text/html", "application/json",
                                                                     "text/plain", "application/xml", "x/y"]),
       grpc=st.one_of(st.none(), st.text(max_size=40)))
def test_any_reply_body_is_parsed_without_raising(kong_server, raw, mime, grpc):
    """Property: any body (they are bounded, and partly attacker-influenced) gives a message no longer than the
    body, or none; the parser never raises."""
    query = {"raw": raw, "mime": mime}
    if grpc is not None:
        query["grpc"] = grpc
    code, body, _ = kong_server.get("/test/message?" + urlencode(query))
    assert code == 200, body
    got = json.loads(body)["message"]
    assert got is None or 0 < len(base64.b64decode(got)) <= max(len(raw), len((grpc or "").encode()))


def test_unlimited_concurrency_queue_counts_every_event(kong_home, nginx_available, short_tmp):
    """Kong 3.9's concurrency_limit = -1 keeps no queue: each entry (a chunk of events) gets its own timer and
    queue object. Events are still bounded, delivered or given up, and counted once."""
    with Kong(short_tmp, queue={"concurrency_limit": -1, "max_entries": 4}) as kong:
        for i in range(10):  # sidecar down: 4 in flight at most, the rest dropped, the 4 given up after 1 s
            kong.get(f"/key/u{i}", {"apikey": API_KEY})
        down = wait_until(lambda: (s := kong.stats())["pending"] == 0 and s, 15, "every event given up")
        sidecar = start_gw_sidecar(short_tmp)
        try:
            for i in range(3):
                kong.get(f"/key/up{i}", {"apikey": API_KEY})
            wait_paths(sidecar, {f"/key/up{i}" for i in range(3)})
            up = wait_until(lambda: (s := kong.stats())["pending"] == 0 and s, 15, "nothing pending")
            # a burst: one timer per queue entry (chunk), their reports in flight together, each claiming untold drops
            for i in range(40):
                kong.get(f"/open/burst{i}")

            burst, ticks = wait_drops_told(kong, sidecar, 20)
        finally:
            sidecar.kill()
    assert down["dropped_queue_full"] == 6 and down["dropped_send_failed"] == 4
    assert up["sent"] == 3 and up["queued"] == 7
    assert burst["queued"] + burst["dropped_queue_full"] == 10 + 3 + 40 + ticks
    assert burst["sent"] == burst["queued"] - 4


def test_chunks_of_a_batch_are_sent_in_reports_of_max_batch_size(kong_home, nginx_available, short_tmp, gw_sidecar):
    """A queue entry is a chunk of up to max_batch_size events; Kong hands the handler up to max_batch_size chunks
    at once, which go out as several reports of at most max_batch_size events: every event once, none lost."""
    with Kong(short_tmp, queue={"max_batch_size": 3, "max_coalescing_delay": 0.5}) as kong:
        paths = {f"/key/chunk{i}" for i in range(20)}
        for path in sorted(paths):
            assert kong.get(path, {"apikey": API_KEY})[0] == 200
        wait_paths(gw_sidecar, paths)
        stats = wait_until(lambda: (s := kong.stats())["pending"] == 0 and s, 10, "nothing pending")
    got = [r.event.http.path for r in records(gw_sidecar) if r.event.http.path.startswith("/key/chunk")]
    assert sorted(got) == sorted(paths)  # each exactly once
    assert stats["queued"] == stats["sent"] == 20 and stats["dropped"] == 0

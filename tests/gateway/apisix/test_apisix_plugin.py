"""The APISIX plugin inside a real Apache APISIX 3.18 (../shared/apisix), configured with the YAML blocks of
gateway-plugins/apisix/README.md, reporting to a real `authwire serve` over gRPC-Web.

Every auth plugin's outcomes (key-auth, basic-auth, jwt-auth incl. expired / not yet valid / bad signature /
unknown key, hmac-auth), credential entities, the global rule, keep-alive numbering, whole-millisecond start
times, secrets never stored, APISIX's own backlog limit counted, and one pending bound per conf.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import tempfile
import time
from email.utils import formatdate
from pathlib import Path

import apisix_runtime
import jwt as pyjwt
import nginx_process
import pytest
import readme_config
from apisix_runtime import upstream
from gateway_fixtures import gateway_drops, python_pass, start_gw_sidecar

from authwire.v1 import auth_event_pb2 as ae
from authwire.v1 import query_pb2
from support import Sidecar, wait_until

pytestmark = pytest.mark.gateway

# the README's consumers and their secrets
API_KEY, ERIN_KEY = "alice-secret-key", "erin-laptop-secret-key"
PASSWORD = "bob-password"
JWT_SECRET = "carol-jwt-secret-32-bytes-long!!"
HMAC_SECRET = "dave-hmac-secret"
JTI = "carol-jti-secret-0106"
WRONG_KEY, WRONG_PASSWORD = "wrong-key-0107", "wrong-password-0108"
HASH_KEY = "pseudonym-key-0105-long"


@pytest.fixture(scope="module")
def tmp_dir():
    path = Path(tempfile.mkdtemp(prefix="aw-apx-t-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def sidecar(tmp_dir):
    s = start_gw_sidecar(tmp_dir)
    try:
        yield s
    finally:
        s.kill()


def readme_routes(sock: str) -> dict:
    """The README's routes and consumers, plus the few routes only a test needs."""
    routes = readme_config.routes_and_consumers(sock)
    aw = {"sidecar": sock}
    routes["routes"] += [
        {"id": "open", "uri": "/open/*", "plugins": {"authwire": {**aw, "include_user_agent": False}},
         "upstream": upstream("{upstream}")},
        # a credential fails and the anonymous consumer is missing: key-auth says "Invalid user authorization"
        {"id": "anon", "uri": "/anon/*", "plugins": {"key-auth": {"anonymous_consumer": "nobody"}, "authwire": aw},
         "upstream": upstream("{upstream}")},
        # APISIX's nginx_config.http default: real_ip_header X-Real-IP, real_ip_from 127.0.0.1 (nginx's
        # realip module; APISIX's real-ip plugin needs APISIX-Runtime, which this build does not have)
        {"id": "realip", "uri": "/realip/*", "plugins": {"key-auth": {}, "authwire": aw},
         "upstream": upstream("{upstream}")},
        {"id": "pseudo", "uri": "/pseudo/*", "plugins": {"basic-auth": {}, "authwire": {
            **aw, "pseudonymize_credentials": True, "credential_hash_key": HASH_KEY}},
         "upstream": upstream("{upstream}")},
        # the README's packed_var fast path (its `map` is in the gateway's http_configuration_snippet)
        {"id": "packed", "uri": "/packed/*", "plugins": {"key-auth": {}, "authwire": {
            **aw, "packed_var": "authwire_vars"}}, "upstream": upstream("{upstream}")},
        {"id": "any", "uri": "/any/*", "plugins": {"multi-auth": {"auth_plugins": [{"basic-auth": {}},
                                                                                  {"key-auth": {}}]},
                                                  "authwire": aw}, "upstream": upstream("{upstream}")},
        # two auth plugins on one route: the failure is the challenge's plugin
        {"id": "multi", "uri": "/multi/*", "plugins": {"key-auth": {}, "basic-auth": {}, "authwire": aw},
         "upstream": upstream("{upstream}")},
    ]
    return routes


@pytest.fixture(scope="module")
def gateway(apisix_available, sidecar, tmp_dir):
    gw = apisix_runtime.start_apisix(readme_routes(f"unix:{tmp_dir}/gw.sock"), config=readme_config.config(),
                                     plugins=["multi-auth", "authwire"], control=True,
                                     http_snippet=readme_config.packed_map() + "\n")
    try:
        yield gw
    finally:
        gw.stop()


def records(sidecar: Sidecar) -> list:
    return list(sidecar.query().Query(query_pb2.QueryRequest(limit=1000), timeout=10).records)


def wait_paths(sidecar: Sidecar, paths: set[str], timeout: float = 20) -> dict:
    def arrived():
        got = {r.event.http.path: r for r in records(sidecar)}
        return got if paths <= set(got) else None

    return wait_until(arrived, timeout, f"records for {sorted(paths)}", interval=0.1)


def stats(gw: apisix_runtime.Apisix) -> dict:
    return json.loads(nginx_process.http_request(gw.control_port, "/v1/plugin/authwire/stats")[1])


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def jwt_token(secret: str = JWT_SECRET, key: str = "carol-key", **claims) -> str:
    now = int(time.time())
    payload = {"key": key, "iss": "apisix-idp", "sub": "carol", "exp": now + 600, "iat": now, "jti": JTI, **claims}
    return pyjwt.encode(payload, secret, algorithm="HS256")


def hmac_headers(path: str, secret: str = HMAC_SECRET, key_id: str = "dave-key") -> dict[str, str]:
    """APISIX 3.18 hmac-auth: keyId, "@request-target", "date: ..." lines, each ending in \\n (hmac-auth.lua
    150-176)."""
    date = formatdate(usegmt=True)
    signing = f"{key_id}\nGET {path}\ndate: {date}\n".encode()
    sig = base64.b64encode(hmac.new(secret.encode(), signing, "sha256").digest()).decode()
    return {"Date": date, "Authorization":
            f'Signature keyId="{key_id}",algorithm="hmac-sha256",headers="@request-target date",signature="{sig}"'}


OK, FAIL, NOT = ae.AUTH_OUTCOME_SUCCESS, ae.AUTH_OUTCOME_FAILURE, ae.AUTH_OUTCOME_NOT_ATTEMPTED
R = ae
NOW = int(time.time())
TOKENS = {
    "good": jwt_token(),
    "bad_signature": jwt_token("wrong-secret-but-thirty-two-bytes-long"),
    "expired": jwt_token(exp=NOW - 600, iat=NOW - 1200),
    "not_yet_valid": jwt_token(nbf=NOW + 600),
    "unknown_key": jwt_token(key="nobody-key"),
}
# path, headers (a callable of the path), status, plugin, outcome, reason, consumer, credential id, message
CASES = [
    ("/key/ok", lambda p: {"apikey": API_KEY}, 200, "key-auth", OK, 0, "alice", "", ""),
    ("/key/erin", lambda p: {"apikey": ERIN_KEY}, 200, "key-auth", OK, 0, "erin", "erin-laptop", ""),
    ("/packed/ok", lambda p: {"apikey": API_KEY}, 200, "key-auth", OK, 0, "alice", "", ""),
    ("/packed/wrong", lambda p: {"apikey": WRONG_KEY}, 401, "key-auth", FAIL, R.FAILURE_REASON_UNKNOWN_KEY, "", "",
     "Invalid API key in request"),
    ("/key/missing", lambda p: {}, 401, "key-auth", FAIL, R.FAILURE_REASON_MISSING_CREDENTIALS, "", "",
     "Missing API key in request"),
    ("/key/wrong", lambda p: {"apikey": WRONG_KEY}, 401, "key-auth", FAIL, R.FAILURE_REASON_UNKNOWN_KEY, "", "",
     "Invalid API key in request"),
    ("/basic/ok", lambda p: {"Authorization": basic("bob", PASSWORD)}, 200, "basic-auth", OK, 0, "bob", "bob", ""),
    ("/basic/wrong", lambda p: {"Authorization": basic("bob", WRONG_PASSWORD)}, 401, "basic-auth", FAIL,
     R.FAILURE_REASON_INVALID_CREDENTIALS, "", "bob", "Invalid user authorization"),
    ("/basic/missing", lambda p: {}, 401, "basic-auth", FAIL, R.FAILURE_REASON_MISSING_CREDENTIALS, "", "",
     "Missing authorization in request"),
    ("/jwt/ok", lambda p: {"Authorization": "Bearer " + TOKENS["good"]}, 200, "jwt-auth", OK, 0, "carol",
     "carol-key", ""),
    ("/jwt/badsig", lambda p: {"Authorization": "Bearer " + TOKENS["bad_signature"]}, 401, "jwt-auth", FAIL,
     R.FAILURE_REASON_BAD_SIGNATURE, "", "carol-key", "failed to verify jwt"),
    ("/jwt/expired", lambda p: {"Authorization": "Bearer " + TOKENS["expired"]}, 401, "jwt-auth", FAIL,
     R.FAILURE_REASON_EXPIRED, "", "carol-key", "failed to verify jwt"),
    ("/jwt/early", lambda p: {"Authorization": "Bearer " + TOKENS["not_yet_valid"]}, 401, "jwt-auth", FAIL,
     R.FAILURE_REASON_CLOCK_SKEW, "", "carol-key", "failed to verify jwt"),
    ("/jwt/unknown", lambda p: {"Authorization": "Bearer " + TOKENS["unknown_key"]}, 401, "jwt-auth", FAIL,
     R.FAILURE_REASON_UNKNOWN_KEY, "", "nobody-key", "Invalid user key in JWT token"),
    ("/jwt/missing", lambda p: {}, 401, "jwt-auth", FAIL, R.FAILURE_REASON_MISSING_CREDENTIALS, "", "",
     "Missing JWT token in request"),
    ("/hmac/ok", hmac_headers, 200, "hmac-auth", OK, 0, "dave", "dave-key", ""),
    ("/hmac/bad", lambda p: hmac_headers(p, "wrong-hmac-secret-0109"), 401, "hmac-auth", FAIL,
     R.FAILURE_REASON_INVALID_CREDENTIALS, "", "dave-key", "client request can't be validated"),
    ("/hmac/missing", lambda p: {}, 401, "hmac-auth", FAIL, R.FAILURE_REASON_MISSING_CREDENTIALS, "", "",
     "client request can't be validated: missing Authorization header"),
    ("/anon/x", lambda p: {"apikey": WRONG_KEY}, 401, "key-auth", FAIL, R.FAILURE_REASON_INVALID_CREDENTIALS, "",
     "", "Invalid user authorization"),
    ("/multi/basic", lambda p: {"Authorization": basic("bob", WRONG_PASSWORD)}, 401, "basic-auth", FAIL,
     R.FAILURE_REASON_INVALID_CREDENTIALS, "", "bob", "Invalid user authorization"),
    # basic-auth (2520) accepts bob, then key-auth (2500) refuses: a failure, not bob's success
    ("/multi/key", lambda p: {"Authorization": basic("bob", PASSWORD)}, 401, "key-auth", FAIL,
     R.FAILURE_REASON_MISSING_CREDENTIALS, "", "", "Missing API key in request"),
    # multi-auth: either may succeed; the one that did is reported
    ("/any/key", lambda p: {"apikey": API_KEY}, 200, "key-auth", OK, 0, "alice", "", ""),
    ("/any/basic", lambda p: {"Authorization": basic("bob", PASSWORD)}, 200, "basic-auth", OK, 0, "bob", "bob", ""),
    ("/any/none", lambda p: {}, 401, "multi-auth", FAIL, R.FAILURE_REASON_INVALID_CREDENTIALS, "", "",
     "Authorization Failed"),
    ("/open/x", lambda p: {}, 200, "", NOT, 0, "", "", ""),
]
METHODS = {"key-auth": R.AUTH_METHOD_KEY_AUTH, "basic-auth": R.AUTH_METHOD_BASIC, "jwt-auth": R.AUTH_METHOD_JWT,
           "hmac-auth": R.AUTH_METHOD_HMAC, "multi-auth": R.AUTH_METHOD_OTHER, "": R.AUTH_METHOD_NONE}


@pytest.fixture(scope="module")
def sent(gateway, sidecar):
    """Every case sent once, on its own connection: path -> the client's own (ip, port)."""
    out = {}
    for path, headers, want, *_ in CASES:
        code, body, client = nginx_process.http_request(gateway.port, path, headers(path))
        assert code == want, (path, body)
        out[path] = client
    return out, wait_paths(sidecar, set(out))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_each_auth_outcome_in_real_apisix(gateway, sent, case):
    clients, got = sent
    path, _, status, plugin, outcome, reason, consumer, cred, message = case
    ev = got[path].event
    assert (ev.client.ip, ev.client.port) == clients[path]
    assert (ev.server.ip, ev.server.port) == ("127.0.0.1", gateway.port)
    assert (ev.gateway.kind, ev.gateway.version) == (ae.GATEWAY_KIND_APISIX, "3.18.0")
    assert ev.http.status == status and ev.route_id == path.split("/")[1]
    assert (ev.auth.method, ev.auth.outcome, ev.auth.reason) == (METHODS[plugin], outcome, reason)
    assert (ev.auth.plugin, ev.auth.consumer, ev.auth.credential_id, ev.auth.message) == \
        (plugin, consumer, cred, message)
    # ngx.req.start_time() has ms resolution: reported as whole ms (the sidecar's 1 ms slack applies)
    assert ev.start_time.nanos % 1_000_000 == 0
    if plugin == "jwt-auth" and path != "/jwt/missing":
        assert (ev.auth.jwt.iss, ev.auth.jwt.sub, ev.auth.jwt.alg) == ("apisix-idp", "carol", "HS256")
        assert ev.auth.jwt.jti_hash == hashlib.sha256(JTI.encode()).hexdigest()
    if path == "/open/x":
        assert ev.http.user_agent == ""
    else:
        assert ev.http.user_agent == "authwire-test/1"


def test_every_outcome_takes_the_native_pass(sent, sidecar):
    """The events real APISIX's auth plugins make (before any test here sends secret-shaped input) are
    validated by the sidecar's native pass, not left to the Python path: the cost figures assume it."""
    assert python_pass(sidecar) == 0


def test_real_ip_keeps_the_tcp_peer_and_reports_the_forwarded_client(gateway, sidecar):
    code, body, client = nginx_process.http_request(gateway.port, "/realip/a", {"apikey": API_KEY,
                                                                         "X-Real-IP": "198.51.100.9"})
    assert code == 200, body
    ev = wait_paths(sidecar, {"/realip/a"})["/realip/a"].event
    assert (ev.client.ip, ev.client.port) == client
    assert ev.forwarded_for == "198.51.100.9" and ev.auth.consumer == "alice", ev


def test_pseudonymized_credential_ids(gateway, sidecar, tmp_dir):
    nginx_process.http_request(gateway.port, "/pseudo/ok", {"Authorization": basic("bob", PASSWORD)})
    nginx_process.http_request(gateway.port, "/pseudo/bad", {"Authorization": basic("bob", WRONG_PASSWORD)})
    got = wait_paths(sidecar, {"/pseudo/ok", "/pseudo/bad"})
    pseudonym = "hmac-sha256:" + hmac.new(HASH_KEY.encode(), b"bob", "sha256").hexdigest()
    assert got["/pseudo/ok"].event.auth.credential_id == pseudonym
    assert got["/pseudo/bad"].event.auth.credential_id == pseudonym
    assert HASH_KEY.encode() not in (tmp_dir / "records.jsonl").read_bytes()


def test_no_secret_leaves_the_gateway(gateway, sent, sidecar, tmp_dir):
    stored = b"".join(p.read_bytes() for p in tmp_dir.iterdir() if p.name.startswith("authwire.db"))
    stored += (tmp_dir / "records.jsonl").read_bytes()
    assert b"erin-laptop" in stored and b"carol-key" in stored  # ids are there, so the files are the right ones
    tokens = list(TOKENS.values())
    secrets = [API_KEY, ERIN_KEY, WRONG_KEY, PASSWORD, WRONG_PASSWORD, JWT_SECRET, HMAC_SECRET, JTI, HASH_KEY,
               "wrong-hmac-secret-0109", basic("bob", PASSWORD).split()[1], basic("bob", WRONG_PASSWORD).split()[1],
               "Signature keyId", *tokens, *(t.split(".")[2] for t in tokens)]
    for secret in secrets:
        assert secret.encode() not in stored, f"secret {secret[:12]}... reached the sidecar"


def test_keep_alive_requests_are_numbered_on_one_connection(gateway, sidecar):
    import socket

    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        for i in range(3):
            code, _, client = nginx_process.http_request(gateway.port, f"/key/ka{i}", {"apikey": API_KEY},
                                                         sock=sock, close=False)
            assert code == 200
    got = wait_paths(sidecar, {f"/key/ka{i}" for i in range(3)})
    evs = [got[f"/key/ka{i}"].event for i in range(3)]
    assert [e.connection_requests for e in evs] == [1, 2, 3]
    assert len({e.gateway_connection_id for e in evs}) == 1 and evs[0].gateway_connection_id > 0
    assert {(e.client.ip, e.client.port) for e in evs} == {client}


def test_global_rule_as_the_readme_documents(apisix_available, sidecar, tmp_dir):
    sock = f"unix:{tmp_dir}/gw.sock"
    routes = readme_config.routes_and_consumers(sock)
    for route in routes["routes"]:
        route["plugins"].pop("authwire")  # the global rule reports every route
    routes.update(readme_config.global_rule(sock))
    gw = apisix_runtime.start_apisix(routes, config=readme_config.config(), plugins=["authwire"])
    try:
        assert nginx_process.http_request(gw.port, "/key/global-ok", {"apikey": API_KEY})[0] == 200
        assert nginx_process.http_request(gw.port, "/basic/global-bad",
                                          {"Authorization": basic("bob", WRONG_PASSWORD)})[0] == 401
        got = wait_paths(sidecar, {"/key/global-ok", "/basic/global-bad"})
    finally:
        gw.stop()
    ok, bad = got["/key/global-ok"].event, got["/basic/global-bad"].event
    assert (ok.auth.plugin, ok.auth.outcome, ok.auth.consumer, ok.route_id) == ("key-auth", OK, "alice", "key")
    assert (bad.auth.plugin, bad.auth.outcome, bad.auth.reason, bad.auth.credential_id) == \
        ("basic-auth", FAIL, R.FAILURE_REASON_INVALID_CREDENTIALS, "bob")


def test_schema_defaults_and_checks(gateway, tmp_dir):
    """check_schema as APISIX runs it: a route with a bad conf is skipped (and named in error.log)."""
    sock = f"unix:{tmp_dir}/gw.sock"
    routes = {"routes": [
        {"id": "bad-address", "uri": "/bad1/*", "plugins": {"authwire": {"sidecar": "nowhere"}},
         "upstream": upstream(gateway.upstream)},
        {"id": "no-key", "uri": "/bad2/*", "plugins": {"authwire": {"sidecar": sock,
                                                                     "pseudonymize_credentials": True}},
         "upstream": upstream(gateway.upstream)},
    ]}
    gw = apisix_runtime.start_apisix(routes, config=readme_config.config(), plugins=["authwire"])
    try:
        log = gw.log_text()
    finally:
        gw.stop()
    assert "bad sidecar address nowhere" in log
    assert "pseudonymize_credentials needs credential_hash_key" in log


def test_apisix_backlog_limit_is_counted_not_hit(apisix_available, tmp_dir):
    """APISIX discards entries over its backlog limit and still returns true from add_entry
    (batch-processor-manager.lua 174-196): the plugin must stop below it and count the drop itself."""
    dead = f"unix:{tmp_dir}/nobody-listens.sock"
    routes = {
        "routes": [{"id": "dead", "uri": "/dead/*", "plugins": {"authwire": {
            "sidecar": dead, "batch_max_size": 5, "max_retry_count": 5, "retry_delay": 10}},
            "upstream": upstream("{upstream}")}],
        "plugin_metadata": [{"id": "authwire", "max_pending_entries": 20}],
    }
    gw = apisix_runtime.start_apisix(routes, config=readme_config.config(), plugins=["authwire"], control=True)
    try:
        for i in range(60):
            assert nginx_process.http_request(gw.port, f"/dead/{i}")[0] == 200
        s = stats(gw)
        log = gw.log_text()
    finally:
        gw.stop()
    assert s["pending"] == 20 and s["queued"] == 20
    assert s["dropped_pending_full"] == 40
    assert "max pending entries limit exceeded" not in log  # APISIX itself discarded nothing


def test_a_dead_sidecar_fills_only_its_own_conf(apisix_available, sidecar, tmp_dir):
    live, dead = f"unix:{tmp_dir}/gw.sock", f"unix:{tmp_dir}/nobody-listens.sock"
    routes = {"routes": [
        {"id": "dead", "uri": "/dead/*", "plugins": {"authwire": {
            "sidecar": dead, "max_pending_entries": 10, "batch_max_size": 5, "max_retry_count": 5,
            "retry_delay": 10}}, "upstream": upstream("{upstream}")},
        {"id": "live", "uri": "/live/*", "plugins": {"authwire": {"sidecar": live, "max_pending_entries": 100,
                                                                  "batch_max_size": 1}},
         "upstream": upstream("{upstream}")},
    ]}
    before = gateway_drops(sidecar)["queue_full"]
    gw = apisix_runtime.start_apisix(routes, config=readme_config.config(), plugins=["authwire"], control=True)
    try:
        for i in range(30):
            nginx_process.http_request(gw.port, f"/dead/{i}")
        for i in range(15):
            nginx_process.http_request(gw.port, f"/live/{i}")
        wait_paths(sidecar, {f"/live/{i}" for i in range(15)})
        s = stats(gw)
        # the dead conf's drops are told to the sidecar by the live conf's reports (one pool per worker)
        nginx_process.http_request(gw.port, "/live/tick")
        wait_until(lambda: gateway_drops(sidecar)["queue_full"] - before == 20, 10, "the drops told once")
    finally:
        gw.stop()
    assert s["dropped_pending_full"] == 20  # the dead conf's 20 beyond its 10; none of the live ones


def test_sidecar_token_is_sent_only_when_configured(apisix_available, tmp_dir):
    """The `token` option: `authorization: Bearer <token>` on each report (hardening's TCP listeners)."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    heads: list[bytes] = []

    def serve() -> None:
        listener.settimeout(15)
        while len(heads) < 2:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                heads.append(nginx_process.read_head(conn)[0])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    routes = {"routes": [
        {"id": "tok", "uri": "/tok/*", "plugins": {"authwire": {"sidecar": f"127.0.0.1:{port}", "token": "t0k-0111",
                                                                "batch_max_size": 1, "max_retry_count": 0}},
         "upstream": upstream("{upstream}")},
        {"id": "plain", "uri": "/plain/*", "plugins": {"authwire": {"sidecar": f"127.0.0.1:{port}",
                                                                    "batch_max_size": 1, "max_retry_count": 0}},
         "upstream": upstream("{upstream}")},
    ]}
    gw = apisix_runtime.start_apisix(routes, config=readme_config.config(), plugins=["authwire"])
    try:
        nginx_process.http_request(gw.port, "/tok/a")
        wait_until(lambda: len(heads) >= 1, 10, "the report with a token")
        nginx_process.http_request(gw.port, "/plain/a")
        wait_until(lambda: len(heads) >= 2, 10, "the report without a token")
        log = gw.log_text()
    finally:
        gw.stop()
        listener.close()
    assert b"\r\nAuthorization: Bearer t0k-0111" in heads[0]
    assert b"authorization" not in heads[1].lower()
    assert "t0k-0111" not in log


def test_compose_apisix_config_runs_in_real_apisix(apisix_available, sidecar, tmp_dir):
    """compose/apisix's apisix.yaml and config.yaml plugin list, as docker compose would run them."""
    import yaml

    compose = Path(__file__).resolve().parents[3] / "compose" / "apisix"
    text = (compose / "apisix.yaml").read_text().replace('"upstream:80"', '"{upstream}"')
    compose_sidecar = '"unix:/run/authwire/grpc-web.sock"'  # the socket on the compose file's shared volume
    assert compose_sidecar in text
    text = text.replace(compose_sidecar, f'"unix:{tmp_dir}/gw.sock"')
    config = yaml.safe_load((compose / "config.yaml").read_text())
    gw = apisix_runtime.start_apisix(yaml.safe_load(text), config={"plugins": config["plugins"]},
                                     plugins=["authwire"])
    token = pyjwt.encode({"key": "alice-key", "exp": int(time.time()) + 3600},
                         "alice-demo-secret-change-me-0123456789", algorithm="HS256")
    cases = [("/jwt/compose-ok", {"Authorization": token}, 200, OK),
             ("/jwt/compose-bad", {"Authorization": "x.y.z"}, 401, FAIL),
             ("/basic/compose-ok", {"Authorization": basic("alice", "wonderland")}, 200, OK),
             ("/basic/compose-bad", {"Authorization": basic("alice", "wrong")}, 401, FAIL),
             ("/key/compose-ok", {"apikey": "alice-api-key"}, 200, OK)]
    try:
        for path, headers, status, _ in cases:
            assert nginx_process.http_request(gw.port, path, headers)[0] == status, path
        got = wait_paths(sidecar, {c[0] for c in cases})
    finally:
        gw.stop()
    for path, _, _, outcome in cases:
        auth = got[path].event.auth
        assert auth.outcome == outcome and auth.plugin == path.split("/")[1] + "-auth", (path, auth)
        if outcome == OK:
            assert auth.consumer == "alice"


def test_a_batch_is_encoded_once_however_often_it_is_retried(apisix_available, tmp_dir):
    """Retries re-send the batch's bytes (before: the whole batch was re-encoded per attempt, ≈ +70 µs of
    worker CPU per request during an outage)."""
    routes = {"routes": [{"id": "retry", "uri": "/retry/*", "plugins": {"authwire": {
        "sidecar": f"unix:{tmp_dir}/nobody-listens.sock", "batch_max_size": 5, "max_retry_count": 2,
        "retry_delay": 0}}, "upstream": upstream("{upstream}")}]}
    gw = apisix_runtime.start_apisix(routes, config=readme_config.config(), plugins=["authwire"], control=True)
    try:
        for i in range(10):
            nginx_process.http_request(gw.port, f"/retry/{i}")
        s = wait_until(lambda: (lambda s: s if s["pending"] == 0 else None)(stats(gw)), 15, "batches given up")
    finally:
        gw.stop()
    assert (s["batches"], s["send_errors"], s["dropped_send_failed"]) == (2, 6, 10)

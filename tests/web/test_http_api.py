"""The JSON API over real HTTP against `authwire web` on a seeded store: shapes, filters, errors, access."""

from __future__ import annotations

import json
import time

import pytest
import requests
import web_seed as seed

from authwire.records import from_json
from authwire.v1 import record_pb2


def test_records_newest_first_in_the_cli_json_mapping(web_server):
    r = web_server.get("/v1/records?limit=1000")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert len(body["records"]) == web_server.records and "next_page_token" not in body
    times = [rec["event"]["start_time"] for rec in body["records"]]
    assert times == sorted(times, reverse=True)
    first = body["records"][0]
    # The same mapping as `authwire query --format json`: proto field names, enum names, parses back.
    assert first["event"]["auth"]["outcome"].startswith("AUTH_OUTCOME_")
    from_json(json.dumps(first), record_pb2.EnrichedRecord())


@pytest.mark.parametrize("query, expected", [
    ("client_ip=10.66.0.9", 24),
    ("client_ip=10.0.0.0/8", 30),
    ("client_ip=2001:db8::/32", 4),
    ("outcome=failure", 25),
    ("outcome=failure&method=basic", 12),
    ("reason=bad_signature", 12),
    ("consumer=carol", 4),
    ("credential=admin", 12),
    ("route=admin&status=401", 24),
    ("os=windows", 4),
    ("syn_signature=4:255:1240:1024:-:M:-", 24),
    ("hop_distance=0", 24),
    ("since=" + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seed.NOW - 1520)), 4 + 14 + 1),
    ("since=2h", 35),
    ("until=40m", 6),
    ("request_id=alice-3", 1),
    ("join_status=exact", 34),
    ("join_status=no_connection", 1),
    ("min_rtt=1ms&max_rtt=2ms", 34),
    ("retransmits_gt=0", 0),
])
def test_every_cli_filter_is_a_parameter(web_server, query, expected):
    r = web_server.get(f"/v1/records?limit=1000&{query}")
    assert r.status_code == 200, r.text
    assert len(r.json().get("records", [])) == expected


def test_pages_follow_next_page_token(web_server):
    seen, token = [], ""
    while True:
        body = web_server.get(f"/v1/records?limit=7{'&page_token=' + token if token else ''}").json()
        seen += [rec["event"]["request_id"] for rec in body["records"]]
        token = body.get("next_page_token", "")
        if not token:
            break
    assert len(seen) == len(set(seen)) == web_server.records


def test_group_by(web_server):
    body = web_server.get("/v1/records?outcome=failure&group_by=client_ip,auth.reason").json()
    groups = {tuple(g["values"]): int(g["count"]) for g in body["groups"]}
    assert groups[(seed.SCANNER, "bad_signature")] == 12 and groups[("2001:db8::7", "expired")] == 1


def test_one_record_and_404(web_server):
    assert web_server.get("/v1/records/scan-3").json()["event"]["request_id"] == "scan-3"
    r = web_server.get("/v1/records/nope")
    assert r.status_code == 404 and r.headers["Content-Type"].startswith("application/problem+json")


@pytest.mark.parametrize("query, parameter", [
    ("client_ip=999.1.1.1", "client_ip"),
    ("limit=-1", "limit"),
    ("limit=0", "limit"),
    ("limit=10001", "limit"),
    ("since=yesterday-ish", "since"),
    ("outcome=maybe", "outcome"),
    ("status=abc", "status"),
    ("group_by=nope", "group_by"),
    ("colour=red", "colour"),
    ("consumer=a&consumer=b", "consumer"),
    ("consumer=", "consumer"),
    ("page_token=!!", "page_token"),
])
def test_bad_parameters_are_400_naming_them(web_server, query, parameter):
    r = web_server.get(f"/v1/records?{query}")
    assert r.status_code == 400, r.text
    assert r.headers["Content-Type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == 400 and parameter in body["detail"]
    assert [p["name"] for p in body["invalid_params"]] == [parameter]


def test_every_bad_parameter_is_named_at_once(web_server):
    body = web_server.get("/v1/records?client_ip=999.1.1.1&limit=-1&since=yesterday-ish&x=1").json()
    assert sorted(p["name"] for p in body["invalid_params"]) == ["client_ip", "limit", "since", "x"]


def test_bad_values_are_not_echoed_raw(web_server):
    r = web_server.get("/v1/records", params={"consumer": "x" * 300, "os": "<img src=x onerror=alert(1)>"})
    assert r.status_code == 400
    assert "x" * 50 not in r.text and "<img src=x onerror=alert(1)>" not in r.text


def test_inspect_an_address(web_server):
    body = web_server.get(f"/v1/inspect?ip={seed.SCANNER}").json()
    assert body["ip"] == seed.SCANNER and body["requests"] == 24
    assert {tuple(g["values"]): int(g["count"]) for g in body["outcomes"]} == {("failure",): 24}
    assert [g["values"][:2] for g in body["stacks"]] == [["4:255:1240:1024:-:M:-", "network_device"]]
    assert {g["values"][0] for g in body["credentials"]} == {"admin", "kid-forged"}
    assert {g["values"][0] for g in body["routes"]} == {"admin"}
    assert len(body["connections"]) == 24 and body["connections"][0]["syn"]["ttl"] == 255
    assert body["first_seen"] < body["last_seen"]
    assert {u["user_agent"] for u in body["user_agents"]} == {seed.XSS_AGENT, "masscan/1.3"}
    for field in ("password", "token", "authorization"):
        assert field not in json.dumps(body).lower()


def test_inspect_needs_one_ip(web_server):
    for query, parameter in [("", "ip"), ("?ip=10.0.0.0/8", "ip"), ("?ip=10.1.0.5&since=soon", "since"),
                             ("?ip=10.1.0.5&outcome=failure", "outcome")]:
        r = web_server.get(f"/v1/inspect{query}")
        assert r.status_code == 400 and r.json()["invalid_params"][0]["name"] == parameter, (query, r.text)


def test_timeline_splits_failures(web_server):
    body = web_server.get("/v1/timeline?outcome=failure&split_by=syn.signature&buckets=10").json()
    assert 1 <= len(body["buckets"]) <= 11 and body["bucket_seconds"] > 0
    total = {}
    for bucket in body["buckets"]:
        for g in bucket["groups"]:
            total[g["values"][0]] = total.get(g["values"][0], 0) + int(g["count"])
    carol = next(r for r in seed.records() if r.event.request_id == "carol-0")
    assert total == {"4:255:1240:1024:-:M:-": 24, carol.connection.syn.signature: 1}


def test_stats_and_connections_without_an_inspector(web_server):
    stats = web_server.get("/v1/stats").json()
    assert stats["store_records"] == str(web_server.records)
    # No inspector here: the connections of the stored records, as of their join.
    body = web_server.get(f"/v1/connections?client_ip={seed.SCANNER}").json()
    assert len(body["connections"]) == 24 and {c["client"]["ip"] for c in body["connections"]} == {seed.SCANNER}


# --- access -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/records", "/v1/records/scan-1", "/v1/inspect?ip=10.66.0.9", "/v1/stats",
                                  "/v1/timeline", "/v1/connections"])
def test_no_record_without_the_token_even_on_loopback(web_server, path):
    assert web_server.get(path, token=None).status_code == 401
    assert web_server.get(path, token="wrong").status_code == 401
    r = web_server.get(path, token=None, cookies={"authwire_session": "forged"})
    assert r.status_code == 401 and "scan-" not in r.text


def test_browser_login_once_for_a_session_cookie(web_server):
    link = web_server.new_login()
    assert web_server.token not in link
    s = requests.Session()
    r = s.get(link, allow_redirects=False, timeout=10)
    assert r.status_code == 303 and r.headers["Location"] == "/"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert s.get(web_server.base + "/v1/records?limit=1", timeout=10).status_code == 200
    # The link works once.
    assert requests.get(link, allow_redirects=False, timeout=10).status_code == 401
    # A link made with another token is refused.
    forged = link.rsplit(".", 1)[0] + ".AAAA"
    assert requests.get(forged, allow_redirects=False, timeout=10).status_code == 401


def test_the_page_has_a_strict_csp_and_no_cors(web_server):
    r = web_server.get("/", token=None, headers={"Origin": "http://evil.example"})
    assert r.status_code == 401  # the shell needs a session too
    r = web_server.get("/")
    assert r.status_code == 200 and "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in r.headers["Content-Security-Policy"]
    r = web_server.get("/v1/records", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in r.headers
    r = requests.options(web_server.base + "/v1/records", headers={"Origin": "http://evil.example",
                                                                   "Access-Control-Request-Method": "GET"})
    assert r.status_code in (401, 405) and "Access-Control-Allow-Origin" not in r.headers


def test_nothing_changes_state(web_server):
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        r = requests.request(method, web_server.base + "/v1/records",
                             headers={"Authorization": f"Bearer {web_server.token}"}, timeout=10)
        assert r.status_code == 405


def test_alerts_and_inspect_names_them(web_server):
    body = web_server.get(f"/v1/alerts?client_ip={seed.SCANNER}&severity=warning").json()
    assert [a["id"] for a in body["alerts"]] == ["A-scan-1"] and body["alerts"][0]["evidence"] == {"failures": 24.0}
    assert web_server.get("/v1/alerts?severity=critical").json() == {}
    assert web_server.get("/v1/alerts?detection=stack_stuffing,credential_replay").json()["alerts"]
    r = web_server.get("/v1/alerts?detection=nope&client_ip=10.0.0.0/8")
    assert sorted(p["name"] for p in r.json()["invalid_params"]) == ["client_ip", "detection"]
    assert [a["id"] for a in web_server.get(f"/v1/inspect?ip={seed.SCANNER}").json()["alerts"]] == ["A-scan-1"]
    assert web_server.get("/v1/inspect?ip=10.1.0.5").json()["alerts"] == []


def test_connections_of_the_store_without_a_client(web_server):
    body = web_server.get("/v1/connections").json()
    uids = [c["uid"] for c in body["connections"]]
    assert len(uids) == len(set(uids)) == 24 + 2 + 1  # scanner, alice (two keep-alive connections), carol


@pytest.mark.parametrize("fields", [("auth.outcome",), ("auth.outcome", "auth.reason"), ("route_id", "auth.outcome"),
                                    ("credential_id", "auth.method", "auth.outcome"), ("consumer", "auth.outcome"),
                                    ("syn.signature", "syn.os_hint", "syn.hop_distance")])
def test_inspect_counts_in_hand_as_the_store_counts(web_server, fields):
    """An address whose records all fit on its inspect page is counted from them (local_groups): the same
    groups as the store's group_by, for every breakdown the page shows (with and without SYN facts)."""
    from authwire.query import http_api
    from authwire.store.record_store import Store
    from authwire.v1 import query_pb2

    store = Store(web_server.db, read_only=True)
    for ip in (seed.SCANNER, "10.1.0.5", "2001:db8::7", "192.0.2.50"):
        f = query_pb2.Filters(client_ip=ip)
        records = store.query(f, 1000).records
        local = {tuple(g.values): g.count for g in http_api.local_groups(records, fields)}
        stored = {tuple(g.values): g.count for g in store.query(f, 1000, "", list(fields)).groups}
        assert local == stored, (ip, fields)


@pytest.mark.parametrize("path, parameter", [("/?colour=red", "colour"), ("/?client_ip=999.1.1.1", "client_ip"),
                                             ("/inspect", "ip"), ("/inspect?ip=10.0.0.0/8", "ip"),
                                             ("/?login=", "login")])
def test_the_pages_check_their_parameters_too(web_server, path, parameter):
    r = web_server.get(path)
    assert r.status_code == 400 and [p["name"] for p in r.json()["invalid_params"]] == [parameter]


def test_static_files(web_server):
    r = web_server.get("/static/app.js", token=None)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/javascript")
    assert web_server.get("/static/../token", token=None).status_code == 404
    assert web_server.get("/static/nope.js", token=None).status_code == 404

"""End to end with the kernel: real Envoy in a gateway namespace, clients with distinct TCP stacks in their
own namespaces, `authwire serve` with the inspector on the gateway's veths.

Every auth case (JWT valid / missing / expired / bad signature, Basic valid / wrong password) produces one
record joined EXACT to its connection, with the right outcome, reason and consumer, and the SYN facts of the
client stack that sent it (TTL and hop distance, MSS, window scaling, SACK, timestamps).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from authwire.demo.credentials import DemoCredentials, basic_header
from authwire.demo.envoy_runner import EnvoyProcess, EnvoyUnavailable, GatewaySpec, envoy_binary
from authwire.demo.lab import ClientStack, Lab
from authwire.v1 import auth_event_pb2 as ae
from authwire.v1 import query_pb2, record_pb2
from support import require, require_root_bcc, start_sidecar, wait_until

pytestmark = [pytest.mark.kernel, pytest.mark.gateway]

STACKS = [
    ClientStack("linux", ttl=64, mtu=1500),
    ClientStack("bare", ttl=128, mtu=1400, window_scaling=False, sack=False, timestamps=False, hops=1),
]

# case: (path, how to authenticate, status, method, outcome, reason, consumer)
CASES = {
    "jwt_valid": ("/jwt/a", "jwt", 200, ae.AUTH_METHOD_JWT, ae.AUTH_OUTCOME_SUCCESS,
                  ae.FAILURE_REASON_UNSPECIFIED, "alice"),
    "jwt_missing": ("/jwt/b", "", 401, ae.AUTH_METHOD_JWT, ae.AUTH_OUTCOME_FAILURE,
                    ae.FAILURE_REASON_MISSING_CREDENTIALS, ""),
    "jwt_expired": ("/jwt/c", "jwt_expired", 401, ae.AUTH_METHOD_JWT, ae.AUTH_OUTCOME_FAILURE,
                    ae.FAILURE_REASON_EXPIRED, ""),
    "jwt_bad_signature": ("/jwt/d", "jwt_bad_signature", 401, ae.AUTH_METHOD_JWT, ae.AUTH_OUTCOME_FAILURE,
                          ae.FAILURE_REASON_BAD_SIGNATURE, ""),
    "basic_valid": ("/basic/e", "basic", 200, ae.AUTH_METHOD_BASIC, ae.AUTH_OUTCOME_SUCCESS,
                    ae.FAILURE_REASON_UNSPECIFIED, "bob"),
    "basic_wrong_password": ("/basic/f", "basic_wrong", 401, ae.AUTH_METHOD_BASIC, ae.AUTH_OUTCOME_FAILURE,
                             ae.FAILURE_REASON_INVALID_CREDENTIALS, ""),
}


def authorization(creds: DemoCredentials, kind: str) -> str:
    return {
        "": lambda: "",
        "jwt": lambda: "Bearer " + creds.token("alice"),
        "jwt_expired": lambda: "Bearer " + creds.token("alice", expired=True),
        "jwt_bad_signature": lambda: "Bearer " + creds.token("alice", bad_signature=True),
        "basic": lambda: basic_header("bob", creds.users["bob"]),
        "basic_wrong": lambda: basic_header("bob", "wrong"),
    }[kind]()


@pytest.fixture
def gateway_lab(tmp_path):
    require_root_bcc()
    try:
        envoy_binary()
    except EnvoyUnavailable as exc:
        require(False, str(exc))
    lab = Lab(tag=f"{os.getpid()}e", net=78)
    sidecar = envoy = None
    try:
        lab.create_gateway()
        for stack in STACKS:
            lab.add_client(stack)
        args = [a for iface in lab.gateway_ifaces for a in ("--iface", iface)]
        sidecar = start_sidecar(tmp_path, *args, "--join-wait", "1.0", netns=lab.gateway_ns, inspector=True)
        stats = sidecar.query().Stats(query_pb2.StatsRequest(), timeout=5)
        assert stats.inspector_running, f"inspector did not start: {stats.inspector_status}"
        creds = DemoCredentials()
        spec = GatewaySpec(listen="0.0.0.0:8080", als_target=sidecar.address,
                           admin_socket=str(tmp_path / "envoy-admin.sock"), node_id="netns-gw")
        envoy = EnvoyProcess(spec, creds, tmp_path / "envoy", netns=lab.gateway_ns)
        envoy.wait_ready()
        yield lab, sidecar, envoy, creds
    finally:
        if envoy is not None:
            envoy.stop()
        if sidecar is not None:
            sidecar.stop()
        lab.close()


def send(lab: Lab, host_index: int, requests: list[dict[str, str]]) -> list[dict]:
    """One new TCP connection per request, from the given client namespace (authwire.demo.traffic)."""
    host = lab.clients[host_index]
    plan = {"base": f"http://{host.gateway_ip}:8080", "deadline_s": 20, "sessions": [[r] for r in requests]}
    result = subprocess.run(lab.argv(host.netns, [sys.executable, "-m", "authwire.demo.traffic"]),
                            input=json.dumps(plan), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_each_auth_case_is_exact_joined_with_its_client_stacks_syn(gateway_lab):
    lab, sidecar, envoy, creds = gateway_lab
    expected: dict[tuple[str, int], tuple[str, int]] = {}  # (client ip, port) -> (case, stack index)
    for index in range(len(STACKS)):
        requests = [{"case": case, "path": path, "authorization": authorization(creds, kind)}
                    for case, (path, kind, *_rest) in CASES.items()]
        for item in send(lab, index, requests):
            assert item["status"] == CASES[item["case"]][2], item
            expected[(lab.clients[index].ip, item["local_port"])] = (item["case"], index)

    def stored():
        records = sidecar.query().Query(query_pb2.QueryRequest(limit=100), timeout=5).records
        return records if len(records) >= len(expected) else None

    records = wait_until(stored, 20, f"{len(expected)} records")
    assert len(records) == len(expected)
    for record in records:
        key = (record.event.client.ip, record.event.client.port)
        assert key in expected, f"unexpected record from {key}"
        case, index = expected.pop(key)
        _path, _kind, status, method, outcome, reason, consumer = CASES[case]
        stack = STACKS[index]
        auth, syn = record.event.auth, record.connection.syn
        label = f"{case} from {stack.name}"
        assert record.join.status == record_pb2.JOIN_STATUS_EXACT, label
        assert (auth.method, auth.outcome, auth.reason, auth.consumer) == (method, outcome, reason, consumer), label
        assert record.event.http.status == status, label
        assert (record.connection.client.ip, record.connection.client.port) == key, label
        assert syn.ttl == stack.ttl - stack.hops, label  # each router on the way decrements it
        assert syn.hop_distance == stack.hops, label
        assert syn.mss == stack.mss, label
        assert (syn.window_scale >= 0) == stack.window_scaling, label
        assert syn.timestamps == stack.timestamps, label
        assert syn.sack_permitted == stack.sack, label
    assert not expected
    dropped = envoy.stats("access_logs.grpc_access_log.logs_dropped")
    assert dropped.get("access_logs.grpc_access_log.logs_dropped", 0) == 0

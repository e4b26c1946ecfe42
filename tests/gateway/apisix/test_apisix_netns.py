"""End to end with the kernel: a real APISIX 3.18 in a gateway network namespace, curl in client namespaces
with distinct TCP stacks, `authwire serve` with the inspector on the gateway's veths.

curl sends its request right after the handshake, usually in the same millisecond as its SYN. APISIX's
start time has millisecond resolution; before the fix the plugin turned it into nanoseconds through a
double (.382999897), the sidecar's 1 ms slack for whole-ms clocks never applied and such requests were
NO_CONNECTION (issue 10 item 2). Every first request of a fresh connection must be joined EXACT with the
SYN facts of the stack that sent it.
"""

from __future__ import annotations

import os
import subprocess

import apisix_runtime
import pytest
import readme_config
from gateway_fixtures import python_pass

from authwire.demo.lab import ClientStack, Lab
from authwire.v1 import auth_event_pb2 as ae
from authwire.v1 import query_pb2, record_pb2
from support import require_root_bcc, start_sidecar, wait_until

pytestmark = [pytest.mark.kernel, pytest.mark.gateway]

STACKS = [
    ClientStack("linux", ttl=64, mtu=1500),
    ClientStack("bare", ttl=128, mtu=1400, window_scaling=False, sack=False, timestamps=False, hops=1),
]
API_KEY = "alice-secret-key"  # the README's consumer
PER_STACK = 8  # fresh connections (one curl each) per client stack


@pytest.fixture
def apisix_lab(apisix_available, tmp_path):
    require_root_bcc()
    lab = Lab(tag=f"{os.getpid()}a", net=79)
    sidecar = gw = None
    try:
        lab.create_gateway()
        for stack in STACKS:
            lab.add_client(stack)
        args = [a for iface in lab.gateway_ifaces for a in ("--iface", iface)]
        sock = tmp_path / "gw.sock"
        sidecar = start_sidecar(tmp_path, *args, "--grpc-web-listen", f"unix:{sock}", "--join-wait", "1.0",
                                netns=lab.gateway_ns, inspector=True)
        stats = sidecar.query().Stats(query_pb2.StatsRequest(), timeout=5)
        assert stats.inspector_running, f"inspector did not start: {stats.inspector_status}"
        routes = readme_config.routes_and_consumers(f"unix:{sock}")
        gw = apisix_runtime.start_apisix(routes, config=readme_config.config(), plugins=["authwire"],
                                         listen_ip="0.0.0.0", netns_argv=lab.argv(lab.gateway_ns, []))
        yield lab, sidecar, gw
    finally:
        if gw is not None:
            gw.stop()
        if sidecar is not None:
            sidecar.stop()
        lab.close()


def curl(lab: Lab, index: int, url: str, *headers: str) -> tuple[int, int]:
    """One curl in client `index`'s namespace: (status, its local port)."""
    argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{local_port}", "--max-time", "10"]
    for header in headers:
        argv += ["-H", header]
    out = subprocess.run(lab.argv(lab.clients[index].netns, [*argv, url]), capture_output=True, text=True,
                         timeout=30, check=True).stdout.split()
    return int(out[0]), int(out[1])


def test_first_requests_on_fresh_connections_join_exact_with_their_syn(apisix_lab):
    lab, sidecar, gw = apisix_lab
    expected: dict[tuple[str, int], tuple[int, int]] = {}  # (client ip, port) -> (stack index, status)
    for index, host in enumerate(lab.clients):
        base = f"http://{host.gateway_ip}:{gw.port}"
        for i in range(PER_STACK):
            ok = i % 2 == 0  # a success and a failure in turn
            status, port = curl(lab, index, f"{base}/key/n{i}", f"apikey: {API_KEY if ok else 'wrong-0112'}")
            assert status == (200 if ok else 401)
            expected[(host.ip, port)] = (index, status)

    def stored():
        records = sidecar.query().Query(query_pb2.QueryRequest(limit=100), timeout=5).records
        return records if len(records) >= len(expected) else None

    records = wait_until(stored, 30, f"{len(expected)} records")
    assert len(records) == len(expected)
    for record in records:
        key = (record.event.client.ip, record.event.client.port)
        index, status = expected.pop(key)
        stack, syn = STACKS[index], record.connection.syn
        label = f"{key} from {stack.name}"
        assert record.join.status == record_pb2.JOIN_STATUS_EXACT, label
        assert record.event.start_time.nanos % 1_000_000 == 0, label  # whole ms, as nginx's clock
        assert record.event.connection_requests == 1, label
        assert record.event.http.status == status, label
        assert record.event.auth.outcome == (ae.AUTH_OUTCOME_SUCCESS if status == 200 else ae.AUTH_OUTCOME_FAILURE)
        assert (record.connection.client.ip, record.connection.client.port) == key, label
        assert syn.ttl == stack.ttl - stack.hops and syn.hop_distance == stack.hops, label
        assert syn.mss == stack.mss, label
        assert (syn.window_scale >= 0) == stack.window_scaling, label
        assert syn.timestamps == stack.timestamps and syn.sack_permitted == stack.sack, label
    assert not expected
    # What the real plugin sends day to day takes the native pass (authwire.ingest.event_rows), not the
    # Python path: the cost figures in the README assume it.
    assert python_pass(sidecar) == 0

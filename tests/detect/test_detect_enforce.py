"""A detection's alert puts its source IP in the real kernel block list (serve --detect-block): with --enforce
that client's new SYNs are dropped; without, the same path runs as a dry run and nothing is dropped."""

from __future__ import annotations

import json
import socket

import pytest

from authwire.demo.lab import Topology
from authwire.v1 import auth_event_pb2 as ae
from authwire.v1 import ingest_pb2
from tests.support import auth_event, require_root_bcc, start_sidecar, wait_until

pytestmark = pytest.mark.kernel


def _connects(client, ip: str, port: int, timeout: float = 0.4) -> bool:
    sock = client.socket(socket.AF_INET)
    sock.settimeout(timeout)
    try:
        sock.connect((ip, port))
        return True
    except OSError:  # the SYN (and its retry) was dropped
        return False
    finally:
        sock.close()


def _stuffing_from(ip: str, n: int = 30) -> list[ae.AuthEvent]:
    events = []
    for i in range(n):
        e = auth_event(f"enf-{ip}-{i}", client=(ip, 41000), method=ae.AUTH_METHOD_BASIC,
                       outcome=ae.AUTH_OUTCOME_FAILURE, consumer="", credential_id=f"user{i}")
        e.gateway_connection_id = 5
        events.append(e)
    return events


@pytest.mark.parametrize("enforce", [True, False])
def test_keepalive_stuffing_alert_blocks_its_client(tmp_path, enforce):
    require_root_bcc()
    with Topology(clients=1) as topo:
        attacker = topo.clients[0]
        flags = ["--iface", topo.server_ifaces[0], "--detect-block", "keepalive_stuffing:10m"]
        sidecar = start_sidecar(tmp_path, *flags, *(["--enforce"] if enforce else []), inspector=True,
                                netns=topo.server_ns)
        server = topo.server_socket(0)
        port = server.getsockname()[1]
        try:
            assert _connects(attacker, attacker.server_ip4, port)
            sidecar.ingest().Report(ingest_pb2.ReportRequest(events=_stuffing_from(attacker.ip4)), timeout=10)

            def blocked_alert():
                out = sidecar.cli("alerts", "--format", "json").stdout
                alerts = [json.loads(line) for line in out.splitlines()]
                return [a for a in alerts if a.get("blocked")]
            [alert] = wait_until(blocked_alert, 10, "an alert that blocked its client")
            assert alert["detection"] == "keepalive_stuffing" and alert["blocked"] == [attacker.ip4]
            rows = [json.loads(line) for line in sidecar.cli("block", "list", "--format", "json").stdout.splitlines()]
            assert [r["ip"] for r in rows] == [attacker.ip4] and alert["id"] in rows[0]["reason"]
            assert _connects(attacker, attacker.server_ip4, port) is not enforce
            stats = json.loads(sidecar.cli("stats", "--format", "json").stdout)
            counters = {c["name"]: int(c.get("value", 0)) for c in stats["counters"]}
            assert counters["detect.blocked"] == 1
            assert counters.get("kernel.block_dropped" if enforce else "kernel.block_would_drop", 0) >= 1
            if not enforce:
                assert counters.get("kernel.block_dropped", 0) == 0
        finally:
            server.close()
            assert sidecar.stop() == 0

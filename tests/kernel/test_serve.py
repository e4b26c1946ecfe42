"""`authwire serve` with the inspector, as a user runs it: attach, `authwire connections`, `authwire stats`,
detach on SIGTERM, and stale filters of a killed run removed by the next start."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest

from authwire.demo.lab import Topology
from authwire.kernel.loader import list_filters
from support import AUTHWIRE, require_root_bcc, start_sidecar, wait_until

pytestmark = pytest.mark.kernel

PORT = 8080
OURS = ["authwire-ingress", "authwire-egress"]


def cli(sidecar, *args: str) -> str:
    server = sidecar.address
    return subprocess.run([AUTHWIRE, *args, "--server", server], check=True, capture_output=True, text=True,
                          timeout=30).stdout


def test_serve_connections_stats_and_detach_after_kill(tmp_path):
    require_root_bcc()
    with Topology(clients=1) as topo:
        client = topo.clients[0]
        iface = topo.server_ifaces[0]
        args = ("--iface", iface, "--max-flows", "1024")
        first = start_sidecar(tmp_path, *args, inspector=True, netns=topo.server_ns)
        try:
            assert sorted(list_filters(topo.server_ns, iface)) == sorted(OURS)
            server = topo.server_socket(PORT)
            sock = client.socket()
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 61)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1234)
            sock.connect((client.server_ip4, PORT))
            peer, _ = server.accept()
            sock.sendall(b"q" * 321)
            assert len(peer.recv(1000)) == 321
            local_port = sock.getsockname()[1]

            def listed():
                for line in cli(first, "connections", "--format", "json").splitlines():
                    row = json.loads(line)
                    if row["client"]["port"] == local_port and row["to_server"].get("bytes") in (321, "321"):
                        return row
                return None

            row = wait_until(listed, 10, "the connection in `authwire connections`")
            assert row["client"]["ip"] == client.ip4
            assert row["server"] == {"ip": client.server_ip4, "port": PORT}
            assert row["syn"]["ttl"] == 61 and row["syn"]["mss"] == 1234
            assert row["syn"]["option_kinds"] == [2, 4, 8, 1, 3]
            assert row["syn"]["sack_permitted"] is True and row["syn"]["timestamps"] is True
            assert int(row["to_server"]["packets"]) >= 3
            assert row["state"] == "CONNECTION_STATE_ESTABLISHED"
            assert row["history"].startswith("ShA")
            # Every field the issue promises is present, zeros and false included.
            for direction in ("to_server", "to_client"):
                assert {"bytes", "packets", "retransmits"} <= set(row[direction])
            assert row["to_server"]["retransmits"] in (0, "0")
            assert {"ttl", "mss", "window", "window_scale", "option_kinds", "sack_permitted",
                    "timestamps"} <= set(row["syn"])
            assert row["mid_stream"] is False
            assert row["handshake_rtt"].endswith("s")
            table = cli(first, "connections")
            assert f"{client.ip4}:{local_port}" in table
            stats = cli(first, "stats")
            assert "kernel.packets" in stats and "kernel.parse_errors" in stats
            sock.close()
            peer.close()
            server.close()
        finally:
            first.kill()   # SIGKILL: no chance to detach
        # A crashed run leaves its filters behind ...
        assert sorted(list_filters(topo.server_ns, iface)) == sorted(OURS)
        second = start_sidecar(tmp_path, *args, inspector=True, netns=topo.server_ns)
        try:
            # ... the next start replaces them instead of stacking a second set ...
            assert sorted(list_filters(topo.server_ns, iface)) == sorted(OURS)
        finally:
            assert second.stop() == 0
        # ... and a clean stop (SIGTERM) leaves nothing.
        assert list_filters(topo.server_ns, iface) == []
        tc = subprocess.run(["tc", "-n", topo.server_ns, "filter", "show", "dev", iface, "ingress"],
                            capture_output=True, text=True, check=True).stdout
        assert "authwire" not in tc


def test_serve_without_privileges_runs_with_inspector_off(tmp_path):
    """Degrade clearly: no capabilities -> serve still runs, stats and the log say what is missing and the fix."""
    require_root_bcc()   # root is needed to drop the capabilities
    sock = tmp_path / "authwire.sock"
    # uid 0 with every capability dropped: unprivileged for BPF and tc, yet it can still read the venv
    # wherever CI cloned the repository
    proc = subprocess.Popen(
        ["setpriv", "--bounding-set=-all", "--inh-caps=-all", AUTHWIRE, "serve",
         "--listen", f"unix:{sock}", "--db", str(tmp_path / "authwire.db"), "--grpc-web-listen", "off"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: sock.exists() or proc.poll() is not None, 20, "serve to listen")
        assert proc.poll() is None, proc.stdout.read()
        stats = wait_until(lambda: _stats_or_none(sock), 20, "`authwire stats` to answer")
        assert "kernel inspector: off" in stats
        assert "missing capabilities CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN" in stats
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert "kernel inspector off: missing capabilities" in out
    assert "Fix: run as root, or grant CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN" in out


def test_a_second_sidecar_does_not_take_over_the_first_ones_inspector(tmp_path):
    require_root_bcc()
    with Topology(clients=1) as topo:
        iface = topo.server_ifaces[0]
        args = ("--iface", iface, "--max-flows", "1024")
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        first = start_sidecar(tmp_path / "a", *args, inspector=True, netns=topo.server_ns)
        try:
            second = start_sidecar(tmp_path / "b", *args, inspector=True, netns=topo.server_ns)
            try:
                stats = cli(second, "stats")
                assert "kernel inspector: off" in stats
                assert "another authwire kernel inspector (pid " in stats
            finally:
                assert second.stop() == 0
            # the second one's exit removed nothing of the first one's
            assert sorted(list_filters(topo.server_ns, iface)) == sorted(OURS)
            assert "kernel inspector: running" in cli(first, "stats")
        finally:
            assert first.stop() == 0
        assert list_filters(topo.server_ns, iface) == []


def _stats_or_none(sock: Path) -> str | None:
    done = subprocess.run([AUTHWIRE, "stats", "--server", f"unix:{sock}"], capture_output=True, text=True,
                          timeout=30)
    return done.stdout if done.returncode == 0 else None

"""`authwire serve` with the inspector, as a user runs it: attach, `authwire connections`, `authwire stats`,
detach on SIGTERM, and stale filters of a killed run removed by the next start."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from authwire.kernel.loader import list_filters
from netns import Topology
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


def test_serve_without_root_runs_with_inspector_off():
    """Degrade clearly: no privileges -> serve still runs, stats and the log say why and how to fix it."""
    require_root_bcc()   # root is needed to drop to an unprivileged user
    nobody = 65534
    home = Path(tempfile.mkdtemp(prefix=f"authwire-nobody-{os.getpid()}-"))   # pytest's tmp is root-only
    os.chown(home, nobody, nobody)
    sock = home / "authwire.sock"
    proc = subprocess.Popen(
        ["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups", AUTHWIRE, "serve",
         "--listen", f"unix:{sock}", "--db", str(home / "authwire.db"), "--grpc-web-listen", "off"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: sock.exists() or proc.poll() is not None, 20, "serve to listen")
        assert proc.poll() is None, proc.stdout.read()
        stats = wait_until(lambda: _stats_or_none(sock), 20, "`authwire stats` to answer")
        assert "kernel inspector: off" in stats
        assert "not running as root" in stats
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
        shutil.rmtree(home, ignore_errors=True)
    assert "kernel inspector off: not running as root" in out
    assert "Fix: run `authwire serve` as root" in out


def _stats_or_none(sock: Path) -> str | None:
    done = subprocess.run([AUTHWIRE, "stats", "--server", f"unix:{sock}"], capture_output=True, text=True,
                          timeout=30)
    return done.stdout if done.returncode == 0 else None

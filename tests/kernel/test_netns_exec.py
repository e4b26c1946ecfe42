"""`authwire serve` started the way a sidecar joins a gateway's namespace outside containers:
`ip netns exec NS authwire serve` (issue 10 item 6), and its log at the default level (item 9)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from authwire.demo.lab import Topology
from authwire.kernel.loader import list_filters
from support import AUTHWIRE, require_root_bcc, start_sidecar, wait_until

pytestmark = pytest.mark.kernel

CONNECTIONS = 20


def _cli(sidecar, *args: str) -> str:
    return subprocess.run([AUTHWIRE, *args, "--server", sidecar.address], check=True, capture_output=True,
                          text=True, timeout=30).stdout


def _host_mounts() -> list[str]:
    """This process' (the host's) tracefs/debugfs/bpffs mount points; other mounts come and go with
    whatever else runs on the machine (e.g. /run/netns/*)."""
    return sorted(line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
                  if line.split(" - ")[-1].split()[0] in ("tracefs", "debugfs", "bpf"))


def test_serve_under_ip_netns_exec_mounts_tracefs_itself_and_leaves_nothing_behind(tmp_path):
    require_root_bcc()
    host_mounts = _host_mounts()
    with Topology(clients=1) as topo:
        client = topo.clients[0]
        iface = topo.server_ifaces[0]
        # The fresh mount namespace `ip netns exec` makes really has no tracefs: the bug's precondition.
        probe = subprocess.run(["ip", "netns", "exec", topo.server_ns, "ls", "/sys/kernel/tracing"],
                               capture_output=True, text=True, timeout=10)
        assert probe.stdout.strip() == "", probe.stdout
        sidecar = start_sidecar(tmp_path, "--iface", iface, "--max-flows", "1024", "--log-level", "info",
                                inspector=True, launcher=["ip", "netns", "exec", topo.server_ns])
        sock_path = Path(sidecar.address[len("unix:"):])
        try:
            stats = _cli(sidecar, "stats")
            assert "kernel inspector: running" in stats, stats + sidecar.log_text()
            assert sorted(list_filters(topo.server_ns, iface)) == ["authwire-egress", "authwire-ingress"]
            server = topo.server_socket(8080, backlog=CONNECTIONS)
            ports = set()
            for _ in range(CONNECTIONS):
                sock = client.socket()
                sock.connect((client.server_ip4, 8080))
                peer, _ = server.accept()
                sock.sendall(b"ping")
                assert peer.recv(4) == b"ping"
                ports.add(sock.getsockname()[1])
                sock.close()
                peer.close()
            server.close()

            def all_listed():
                rows = [json.loads(line) for line in
                        _cli(sidecar, "connections", "--all", "--format", "json").splitlines()]
                rows = [r for r in rows if r["client"]["port"] in ports]
                return rows if len(rows) == CONNECTIONS else None

            rows = wait_until(all_listed, 10, f"{CONNECTIONS} connections in `authwire connections --all`")
            assert all(r["community_id"].startswith("1:") for r in rows)   # the library really ran
        finally:
            assert sidecar.stop() == 0
        log = sidecar.log_text()
        assert "mounted debugfs, tracefs, bpffs" in log, log
        # issue 10 item 9: the communityid library logged 8 lines per connection at the default level
        assert "communityid" not in log.lower(), log
        assert len(log.splitlines()) < 20, log
        # SIGTERM: the socket file is gone and the filters are detached
        assert not sock_path.exists()
        assert list_filters(topo.server_ns, iface) == []
    assert _host_mounts() == host_mounts   # the mounts stayed inside serve's own mount namespace


def test_serve_under_ip_netns_exec_without_cap_sys_admin_refuses_with_the_fix(tmp_path):
    require_root_bcc()
    with Topology(clients=1) as topo:
        launcher = ["ip", "netns", "exec", topo.server_ns,
                    "setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin"]
        sidecar = start_sidecar(tmp_path, "--iface", topo.server_ifaces[0], inspector=True, launcher=launcher)
        try:
            stats = _cli(sidecar, "stats")
        finally:
            assert sidecar.stop() == 0
        assert "kernel inspector: off" in stats
        assert "tracefs is not mounted in this mount namespace and mounting it failed" in stats
        assert "nsenter --net=/run/netns/NS authwire serve" in stats
        assert "Fix: mount -t tracefs tracefs /sys/kernel/tracing in the same mount namespace" in \
            sidecar.log_text()

"""The opt-in in-kernel response (issue 12 item 3): blocked source IPs' new SYNs dropped at tc ingress with
--enforce, only counted without it; established connections, loopback and the allow-list untouched."""

from __future__ import annotations

import ctypes as ct
import json
import socket
import struct
import time

import pytest
from kernel_running import running_inspector, wait_connection

from authwire.demo.lab import Topology, call_in_netns
from authwire.kernel import blocklist, progrun
from authwire.v1 import connection_pb2
from support import require_root_bcc, start_sidecar, wait_until

pytestmark = pytest.mark.kernel

PORT = 8080
TC_ACT_UNSPEC = 0xFFFFFFFF   # -1 as the u32 BPF_PROG_TEST_RUN reports
TC_ACT_SHOT = 2
ST = connection_pb2


@pytest.fixture(scope="module")
def enforce_program():
    """inspector.c compiled with AW_ENFORCE (what `serve --enforce` loads)."""
    require_root_bcc()
    from authwire.kernel.loader import CompiledProgram

    compiled = CompiledProgram(128, enforce=True)
    yield compiled
    compiled.close()


def _frame(src: str, dst: str, flags: int, sport: int = 40000) -> bytes:
    v6 = ":" in src
    tcp = struct.pack("!HHIIBBHHH", sport, PORT, 1000, 0, 5 << 4, flags, 64240, 0, 0)
    if v6:
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64, socket.inet_pton(socket.AF_INET6, src),
                         socket.inet_pton(socket.AF_INET6, dst))
        return b"\x02" * 6 + b"\x04" * 6 + b"\x86\xdd" + ip + tcp
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0, socket.inet_aton(src),
                     socket.inet_aton(dst))
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + tcp


def _raw_insert(program, ip: str, ttl: float) -> None:
    """Put an entry into the kernel map bypassing user space's checks (to test the kernel's own)."""
    key = blocklist._addr_bytes(ip)
    value = blocklist.AwBlock(expires_ns=time.monotonic_ns() + int(ttl * 1e9))
    assert program._lib.bpf_update_elem(program.blocked_fd, ct.byref(key), ct.byref(value), 0) == 0


def _connects(client, dst_ip: str, timeout: float = 0.4) -> bool:
    family = socket.AF_INET6 if ":" in dst_ip else socket.AF_INET
    sock = client.socket(family)
    sock.settimeout(timeout)
    try:
        sock.connect((dst_ip, PORT))
        return True
    except OSError:   # TimeoutError: the SYN (and its retry) was dropped
        return False
    finally:
        sock.close()


@pytest.mark.parametrize("enforce", [False, True])
def test_verdicts_in_the_kernel(program, enforce_program, topo, enforce):
    """BPF_PROG_TEST_RUN on the loaded program: only a blocked source's new SYN at ingress, only when
    compiled to enforce, gets anything but TC_ACT_UNSPEC."""
    prog = enforce_program if enforce else program
    prog.clear_flows()
    blocks = blocklist.BlockList(prog)
    bad, bad6, good, dst, dst6 = "10.66.0.2", "fd66::2", "10.66.0.3", "10.66.0.1", "fd66::1"
    assert blocks.add(bad, 60, "t") == (True, bad)
    assert blocks.add(bad6, 60, "t") == (True, bad6)
    _raw_insert(prog, "127.0.0.1", 60)
    _raw_insert(prog, "::1", 60)
    _raw_insert(prog, "10.66.0.9", -1)   # already expired, not yet deleted
    ifindex = call_in_netns(topo.server_ns, lambda: socket.if_nametoindex(topo.server_ifaces[0]))

    def verdict(frame: bytes, fn=prog.ingress, on=ifindex) -> int:
        return call_in_netns(topo.server_ns, lambda: progrun.test_run(fn.fd, frame, on))

    before = prog.counter_sums()
    blocked_verdict = TC_ACT_SHOT if enforce else TC_ACT_UNSPEC
    assert verdict(_frame(bad, dst, 0x02)) == blocked_verdict
    assert verdict(_frame(bad6, dst6, 0x02)) == blocked_verdict
    assert verdict(_frame(bad, dst, 0x10)) == TC_ACT_UNSPEC          # an ACK: established traffic passes
    assert verdict(_frame(bad, dst, 0x12)) == TC_ACT_UNSPEC          # a SYN-ACK is no new connection
    assert verdict(_frame(bad, dst, 0x02), fn=prog.egress) == TC_ACT_UNSPEC   # egress never drops
    assert verdict(_frame(good, dst, 0x02)) == TC_ACT_UNSPEC
    assert verdict(_frame("10.66.0.9", dst, 0x02)) == TC_ACT_UNSPEC  # expired
    assert verdict(_frame("127.0.0.1", "127.0.0.1", 0x02)) == TC_ACT_UNSPEC   # loopback source
    assert verdict(_frame("::1", "::1", 0x02)) == TC_ACT_UNSPEC
    assert verdict(_frame(bad, dst, 0x02, sport=40001), on=1) == TC_ACT_UNSPEC   # arriving on lo
    after = prog.counter_sums()
    moved = {k: after[k] - before[k] for k in ("block_dropped", "block_would_drop", "block_loopback_passed")}
    assert moved == {"block_dropped": 2 if enforce else 0, "block_would_drop": 0 if enforce else 2,
                     "block_loopback_passed": 3}
    entries = {e.ip: e for e in blocks.entries()}
    assert set(entries) == {bad, bad6, "127.0.0.1", "::1"}   # the expired one is not listed ...
    assert (entries[bad].drops, entries[bad].would_drops) == ((1, 0) if enforce else (0, 1))
    assert blocks.expire() == 1                              # ... and is deleted by the sweep
    prog.clear_flows()


def test_enforce_drops_new_syns_only_and_never_the_allow_list_or_loopback(enforce_program):
    require_root_bcc()
    with Topology(clients=2) as topo, running_inspector(enforce_program, topo, iface=[*topo.server_ifaces, "lo"],
                                                        block_allow=["10.77.1.0/24"]) as insp:
        attacker, friend = topo.clients
        server = topo.server_socket(PORT, family=socket.AF_INET6)   # dual-stack: IPv4 and IPv6
        assert insp.enforce
        # An established connection from the soon-blocked address.
        est = attacker.socket()
        est.settimeout(5)
        est.connect((attacker.server_ip4, PORT))
        peer, _ = server.accept()
        src = est.getsockname()

        assert insp.block(attacker.ip4, 30, "brute force") is True
        assert insp.block(attacker.ip6, 30, "brute force") is True
        assert not _connects(attacker, attacker.server_ip4)
        assert not _connects(attacker, attacker.server_ip6)
        counters = insp.counters()
        assert counters["block_dropped"] >= 2 and counters["block_would_drop"] == 0
        entry = next(e for e in insp.blocked() if e.ip == attacker.ip4)
        assert entry.drops >= 1 and entry.reason == "brute force"
        assert entry.expires_at > time.time() + 25

        # The established connection is untouched, both ways.
        est.sendall(b"still here")
        assert peer.recv(10) == b"still here"
        peer.sendall(b"yes")
        assert est.recv(3) == b"yes"
        assert wait_connection(insp, (src[0], src[1]), (attacker.server_ip4, PORT)).state == \
            ST.CONNECTION_STATE_ESTABLISHED

        # The allow-list and loopback are refused in user space (and counted) ...
        assert insp.block(friend.ip4, 30, "x") is False
        assert _connects(friend, friend.server_ip4)
        for ip in ("127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1", "0.0.0.0", "not an ip"):
            assert insp.block(ip, 30, "x") is False, ip
        counters = insp.counters()
        assert counters["block_refused_allow_list"] == 1 and counters["block_refused_loopback"] == 4
        assert counters["block_refused_unspecified"] == 1 and counters["block_refused_invalid_ip"] == 1
        # ... and the kernel never drops a loopback-sourced SYN even when such an entry is in the map.
        _raw_insert(enforce_program, "127.0.0.1", 30)
        loop = call_in_netns(topo.server_ns, lambda: socket.socket())
        loop.settimeout(2)
        loop.connect(("127.0.0.1", PORT))
        loop.close()
        assert insp.counters()["block_loopback_passed"] >= 1

        # Unblock: new connections work again.
        assert insp.unblock(attacker.ip4) is True and insp.unblock(attacker.ip4) is False
        assert _connects(attacker, attacker.server_ip4)

        # Entries expire.
        assert insp.block(attacker.ip4, 1.0, "short") is True
        assert not _connects(attacker, attacker.server_ip4, timeout=0.3)
        wait_until(lambda: _connects(attacker, attacker.server_ip4, timeout=0.3), 5, "the entry to expire")
        assert attacker.ip4 not in [e.ip for e in insp.blocked()]
        for s in (est, peer, server):
            s.close()


def test_dry_run_drops_nothing_but_counts(program, topo):
    with running_inspector(program, topo) as insp:
        client = topo.clients[0]
        server = topo.server_socket(PORT)
        assert not insp.enforce
        assert insp.block(client.ip4, 30, "dry") is True
        for _ in range(3):
            assert _connects(client, client.server_ip4)
            server.accept()[0].close()
        counters = insp.counters()
        assert counters["block_would_drop"] == 3 and counters["block_dropped"] == 0
        assert [(e.ip, e.would_drops, e.drops) for e in insp.blocked()] == [(client.ip4, 3, 0)]
        server.close()


def test_block_cli_against_serve_enforce(tmp_path):
    require_root_bcc()
    with Topology(clients=2) as topo:
        attacker, friend = topo.clients
        sidecar = start_sidecar(tmp_path, "--iface", topo.server_ifaces[0], "--iface", topo.server_ifaces[1],
                                "--enforce", "--block-allow", "10.77.1.0/24", inspector=True, netns=topo.server_ns)
        try:
            server = topo.server_socket(PORT)
            added = sidecar.cli("block", "add", attacker.ip4, "--ttl", "10m", "--reason", "stuffing")
            assert f"blocked {attacker.ip4} until" in added.stdout and "new SYNs are dropped" in added.stdout
            rows = [json.loads(line) for line in sidecar.cli("block", "list", "--format", "json").stdout.splitlines()]
            assert [(r["ip"], r["reason"]) for r in rows] == [(attacker.ip4, "stuffing")]
            assert not _connects(attacker, attacker.server_ip4)
            stats = json.loads(sidecar.cli("stats", "--format", "json").stdout)
            assert "kernel.block_dropped" in json.dumps(stats)
            table = sidecar.cli("block", "list").stdout
            assert "enforce (dropping)" in table and attacker.ip4 in table
            for ip, why in (("127.0.0.1", "loopback"), (friend.ip4, "allow_list"), ("a" * 500, "invalid_ip")):
                refused = sidecar.cli("block", "add", ip, check=False)
                assert refused.returncode == 1 and refused.stdout == f"not blocked: {why}\n"
            assert sidecar.cli("block", "remove", attacker.ip4).stdout == "removed\n"
            assert sidecar.cli("block", "remove", attacker.ip4, check=False).returncode == 1
            assert _connects(attacker, attacker.server_ip4)
            server.close()
        finally:
            assert sidecar.stop() == 0


def test_block_cli_without_inspector_says_why(sidecar):
    done = sidecar.cli("block", "list", check=False)
    assert done.returncode == 2
    assert "FAILED_PRECONDITION" in done.stderr and "kernel inspector is off" in done.stderr

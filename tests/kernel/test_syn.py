"""SYN facts recorded by the kernel inspector equal what the client host sent (captured on its veth)."""

from __future__ import annotations

import socket
import struct

import pytest
from kernel_capture import Capture, option_kinds, option_value
from kernel_running import running_inspector, wait_connection

from authwire.demo.lab import Topology
from support import require_root_bcc

pytestmark = pytest.mark.kernel

PORT = 8080
STACKS = [
    # (client sysctls, expected option layout as Linux 6.x builds it)
    ({}, [2, 4, 8, 1, 3]),                                             # MSS, SACK-perm, TS, NOP, WS
    ({"net.ipv4.tcp_timestamps": "0"}, [2, 1, 1, 4, 1, 3]),            # MSS, NOP, NOP, SACK-perm, NOP, WS
    ({"net.ipv4.tcp_timestamps": "0", "net.ipv4.tcp_sack": "0", "net.ipv4.tcp_window_scaling": "0"}, [2]),
]


def _syn_from(capture: Capture, port: int):
    for seg in capture.drain():
        if seg.outgoing and seg.flags & 0x12 == 0x02 and seg.src[1] == port:
            return seg
    raise AssertionError(f"no SYN from port {port} captured")


def _connect(topo: Topology, client, family: int, *, ttl: int, mss: int, rcvbuf: int | None):
    server = topo.server_socket(PORT, family)
    capture = Capture(client.ns, client.iface)
    sock = client.socket(family)
    try:
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        target = client.server_ip4 if family == socket.AF_INET else client.server_ip6
        sock.settimeout(5)
        sock.connect((target, PORT))
        peer, _ = server.accept()
        port = sock.getsockname()[1]
        syn = _syn_from(capture, port)
        peer.close()
        return (sock.getsockname()[0], port), (target, PORT), syn
    finally:
        sock.close()
        server.close()
        capture.close()


def _assert_same(conn, syn, *, ttl: int, mss: int, kinds: list[int], version: int) -> None:
    fp = conn.syn
    # What the client's stack put on the wire (captured on its own veth) ...
    assert fp.ttl == syn.ttl == ttl
    assert fp.mss == struct.unpack("!H", option_value(syn.options, 2))[0] == mss
    assert list(fp.option_kinds) == option_kinds(syn.options) == kinds
    assert fp.window == syn.window
    assert fp.df == syn.df
    assert fp.ip_id == syn.ip_id
    assert fp.ip_version == version
    ws = option_value(syn.options, 3)
    assert fp.window_scale == (ws[0] if ws is not None else -1)   # absent is -1, never 0
    assert fp.sack_permitted == (option_value(syn.options, 4) is not None)
    ts = option_value(syn.options, 8)
    assert fp.timestamps == (ts is not None)
    assert fp.ts_val == (struct.unpack("!I", ts[:4])[0] if ts is not None else 0)
    assert fp.payload_bytes == 0 and fp.ip_options_len == 0
    # ... and the connection is oriented by who sent the SYN.
    assert not conn.mid_stream
    assert conn.HasField("syn_time")


def test_syn_fields_follow_client_stack_ipv4(program):
    require_root_bcc()
    sysctls = [s for s, _ in STACKS]
    with Topology(clients=len(STACKS), client_sysctls=sysctls) as topo, running_inspector(program, topo) as insp:
        for (client, (_, kinds)), ttl, mss, rcvbuf in zip(
                zip(topo.clients, STACKS, strict=True), (77, 64, 200), (1000, 1200, 536), (None, 8192, None),
                strict=True):
            src, dst, syn = _connect(topo, client, socket.AF_INET, ttl=ttl, mss=mss, rcvbuf=rcvbuf)
            conn = wait_connection(insp, src, dst)
            _assert_same(conn, syn, ttl=ttl, mss=mss, kinds=kinds, version=4)
            assert conn.interface == f"srv{client.index}"
        # A small receive buffer shrinks the advertised window: the recorded window follows it.
        windows = {c.syn.window for c in insp.table.all(include_closed=True)}
        assert len(windows) > 1


def test_syn_fields_ipv6(program):
    require_root_bcc()
    sysctls = [{}, {"net.ipv4.tcp_timestamps": "0", "net.ipv4.tcp_sack": "0",
                    "net.ipv4.tcp_window_scaling": "0"}]   # net.ipv4.tcp_* also govern IPv6 TCP
    with Topology(clients=2, client_sysctls=sysctls) as topo, running_inspector(program, topo) as insp:
        for client, kinds in zip(topo.clients, ([2, 4, 8, 1, 3], [2]), strict=True):
            src, dst, syn = _connect(topo, client, socket.AF_INET6, ttl=33, mss=1100, rcvbuf=None)
            conn = wait_connection(insp, src, dst)
            assert conn.client.ip == client.ip6 and conn.server.ip == client.server_ip6
            _assert_same(conn, syn, ttl=33, mss=1100, kinds=kinds, version=6)
            assert conn.syn.df is False and conn.syn.ip_id == 0

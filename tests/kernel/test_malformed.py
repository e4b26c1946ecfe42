"""Malformed packets fed to the tc program with BPF_PROG_TEST_RUN: verdict unchanged, parse error counted,
no flow created. A well-formed SYN next to them proves the harness can see a flow being created."""

from __future__ import annotations

import socket
import struct

import pytest

from authwire.kernel import events as ev
from authwire.kernel.progrun import test_run as prog_test_run

pytestmark = pytest.mark.kernel

TC_ACT_UNSPEC = 0xFFFFFFFF   # -1 as the u32 retval: "no opinion", the packet goes on unchanged
SRC4, DST4 = "10.99.0.2", "10.99.0.1"
SRC6, DST6 = "fd99::2", "fd99::1"
SYN, ACK = 0x02, 0x10
_ports = iter(range(20000, 30000))


def eth(ethertype: int) -> bytes:
    return b"\x02" * 6 + b"\x04" * 6 + struct.pack("!H", ethertype)


def tcp(sport: int, *, flags: int = SYN, doff: int | None = None, options: bytes = b"", payload: bytes = b"") -> bytes:
    words = doff if doff is not None else 5 + len(options) // 4
    return struct.pack("!HHIIBBHHH", sport, 80, 1000, 0, words << 4, flags, 64240, 0, 0) + options + payload


def ipv4(l4: bytes, *, ihl: int = 5, tot_len: int | None = None, proto: int = 6) -> bytes:
    total = tot_len if tot_len is not None else ihl * 4 + len(l4)
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, 1, 0x4000, 64, proto, 0,
                         socket.inet_aton(SRC4), socket.inet_aton(DST4))
    return eth(0x0800) + header + b"\x00" * max(0, ihl * 4 - 20) + l4


def ipv6(l4: bytes, *, payload_len: int | None = None) -> bytes:
    plen = payload_len if payload_len is not None else len(l4)
    header = struct.pack("!IHBB16s16s", 0x60000000, plen, 6, 64, socket.inet_pton(socket.AF_INET6, SRC6),
                         socket.inet_pton(socket.AF_INET6, DST6))
    return eth(0x86DD) + header + l4


MSS_OPT = b"\x02\x04\x05\xb4"


def vlan(frame: bytes, vid: int = 42) -> bytes:
    """Insert one 802.1Q tag into an Ethernet frame."""
    return eth(0x8100) + struct.pack("!H", vid) + frame[12:]


def malformed_cases() -> list[tuple[str, bytes, int, int]]:
    """(name, packet, sport, ip version) — each must count exactly one parse error and create nothing."""
    cases = []

    def add(name: str, build, version: int = 4) -> None:
        port = next(_ports)
        cases.append((name, build(port), port, version))

    # BPF_PROG_TEST_RUN itself rejects a frame whose ethertype is IP but whose IP header is cut short, so
    # the truncated-IP cases carry a VLAN tag (the program must still catch them after the tag).
    add("truncated IPv4 header", lambda p: vlan(ipv4(tcp(p)))[:18 + 12])
    add("IHL below 5", lambda p: ipv4(tcp(p), ihl=4))
    add("IPv4 total length below IHL", lambda p: ipv4(tcp(p), tot_len=12))
    add("truncated TCP header", lambda p: ipv4(tcp(p)[:10]))
    add("TCP header cut by IP length", lambda p: ipv4(tcp(p), tot_len=20 + 12))
    add("doff below 5", lambda p: ipv4(tcp(p, doff=4)))
    add("doff beyond the IP payload", lambda p: ipv4(tcp(p, doff=15)))
    add("doff beyond the packet", lambda p: ipv4(tcp(p, doff=15), tot_len=20 + 60))
    add("option length overruns the header", lambda p: ipv4(tcp(p, options=b"\x02\x0a\x05\xb4")))
    add("option length below 2", lambda p: ipv4(tcp(p, options=MSS_OPT + b"\x03\x01\x00\x00")))
    add("option kind without a length byte", lambda p: ipv4(tcp(p, options=b"\x01\x01\x01\x08")))
    add("truncated IPv6 header", lambda p: vlan(ipv6(tcp(p)))[:18 + 30], 6)
    add("IPv6 TCP doff below 5", lambda p: ipv6(tcp(p, doff=3)), 6)
    add("IPv6 option overrun", lambda p: ipv6(tcp(p, options=MSS_OPT + b"\x08\x0a\x00\x00")), 6)
    add("truncated VLAN tag", lambda p: eth(0x8100) + b"\x00\x01")
    return cases


def _key(sport: int, version: int) -> bytes:
    src, dst = (SRC4, DST4) if version == 4 else (SRC6, DST6)
    return bytes(ev.make_key(src, sport, dst, 80))


@pytest.mark.parametrize("case", malformed_cases(), ids=lambda c: c[0])
def test_malformed_packet_counts_parse_error_and_creates_no_flow(program, case):
    name, packet, sport, version = case
    before = program.counter_sums()
    for fn in (program.ingress, program.egress):
        assert prog_test_run(fn.fd, packet) == TC_ACT_UNSPEC, name
    after = program.counter_sums()
    assert after["parse_errors"] - before["parse_errors"] == 2, name   # once per hook
    assert after["flows_opened"] == before["flows_opened"], name
    assert program.lookup(_key(sport, version)) is None, name


@pytest.mark.parametrize("version", [4, 6])
def test_well_formed_syn_creates_a_flow(program, version):
    sport = next(_ports)
    opts = MSS_OPT + b"\x01\x03\x03\x07"   # MSS 1460, NOP, window scale 7
    packet = ipv4(tcp(sport, options=opts)) if version == 4 else ipv6(tcp(sport, options=opts))
    before = program.counter_sums()
    assert prog_test_run(program.ingress.fd, packet) == TC_ACT_UNSPEC
    after = program.counter_sums()
    assert after["parse_errors"] == before["parse_errors"]
    assert after["flows_opened"] == before["flows_opened"] + 1
    flow = program.lookup(_key(sport, version))
    assert flow is not None
    assert flow.syn.mss == 1460 and flow.syn.window_scale == 7 and flow.syn.sack_permitted == 0
    assert ev.option_kinds(flow) == [2, 1, 3]
    assert flow.syn.ip_version == version and flow.syn.ttl == 64


def test_vlan_tagged_syn_is_parsed(program):
    sport = next(_ports)
    packet = vlan(ipv4(tcp(sport, options=MSS_OPT)))
    before = program.counter_sums()
    assert prog_test_run(program.ingress.fd, packet) == TC_ACT_UNSPEC
    after = program.counter_sums()
    assert after["vlan"] == before["vlan"] + 1
    flow = program.lookup(_key(sport, 4))
    assert flow is not None and flow.syn.mss == 1460


def test_non_tcp_is_skipped_and_counted(program):
    udp = struct.pack("!HHHH", 53, 53, 8, 0)
    before = program.counter_sums()
    assert prog_test_run(program.ingress.fd, ipv4(udp, proto=17)) == TC_ACT_UNSPEC
    after = program.counter_sums()
    assert after["non_tcp"] == before["non_tcp"] + 1
    assert after["parse_errors"] == before["parse_errors"]

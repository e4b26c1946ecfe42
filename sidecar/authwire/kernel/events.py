"""ctypes mirrors of bpf/inspector.h and decoding of what the kernel reports.

The mirrors are written out (rather than taken from bcc's generated types) so decoding works without a
compiled program; tests/kernel/test_layout.py checks them against the layout bcc actually compiled.
"""

from __future__ import annotations

import ctypes as ct
import functools
import ipaddress
import socket
import struct
from typing import NamedTuple

AW_MAX_OPTIONS = 40
AW_HISTORY_LEN = 24

EV_OPENED = 1
EV_ESTABLISHED = 2   # no longer emitted by inspector.c; still understood
EV_CLOSED = 3

CLOSE_NONE = 0
CLOSE_FIN = 1
CLOSE_RST = 2
CLOSE_EVICTED = 3

# Per-CPU counter slots, in the order of AW_C_* in bpf/inspector.h.
COUNTER_NAMES = (
    "packets",
    "non_tcp",
    "parse_errors",
    "ringbuf_reserve_failed",
    "evictions",
    "flows_opened",
    "midstream_flows",
    "late_after_evicted_close",
    "untracked_rst",
    "vlan",
    "tracepoint_facts",
    "tracepoint_pending",
    "tracepoint_foreign",
    "block_dropped",
    "block_would_drop",
    "block_loopback_passed",
)

# Linux TCP states as the sock:inet_sock_set_state tracepoint reports them.
TCP_STATES = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "NEW_SYN_RECV",
}


_V4_PREFIX = bytes(10) + b"\xff\xff"


class AwKey(ct.Structure):
    _fields_ = [
        ("addr_a", ct.c_uint8 * 16),
        ("addr_b", ct.c_uint8 * 16),
        ("port_a", ct.c_uint16),
        ("port_b", ct.c_uint16),
        ("pad", ct.c_uint32),
    ]


class AwDir(ct.Structure):
    _fields_ = [
        ("packets", ct.c_uint64),
        ("bytes", ct.c_uint64),
        ("retransmits", ct.c_uint64),
        ("sk", ct.c_uint64),
        ("zero_windows", ct.c_uint32),
        ("rsts", ct.c_uint32),
        ("fins", ct.c_uint32),
        ("stack_retransmits", ct.c_uint32),
        ("snd_max", ct.c_uint32),
        ("seen", ct.c_uint16),
        ("seq_valid", ct.c_uint8),
        ("socket_state", ct.c_uint8),
        ("pad", ct.c_uint8 * 8),
    ]


class AwSyn(ct.Structure):
    _fields_ = [
        ("ts_val", ct.c_uint32),
        ("ip_id", ct.c_uint16),
        ("window", ct.c_uint16),
        ("mss", ct.c_uint16),
        ("window_scale", ct.c_int16),
        ("payload_bytes", ct.c_uint16),
        ("ttl", ct.c_uint8),
        ("df", ct.c_uint8),
        ("ecn", ct.c_uint8),
        ("tcp_ecn", ct.c_uint8),
        ("sack_permitted", ct.c_uint8),
        ("timestamps", ct.c_uint8),
        ("ip_version", ct.c_uint8),
        ("ip_options_len", ct.c_uint8),
        ("n_options", ct.c_uint8),
        ("pad", ct.c_uint8 * 3),
        ("option_kinds", ct.c_uint8 * AW_MAX_OPTIONS),
    ]


class AwFlow(ct.Structure):
    _fields_ = [
        ("client_is_a", ct.c_uint8),
        ("state", ct.c_uint8),
        ("closed_by", ct.c_uint8),
        ("mid_stream", ct.c_uint8),
        ("close_reported", ct.c_uint8),
        ("history_len", ct.c_uint8),
        ("pad", ct.c_uint8 * 2),
        ("synack_seq", ct.c_uint32),
        ("ifindex", ct.c_uint32),
        ("first_ns", ct.c_uint64),
        ("last_ns", ct.c_uint64),
        ("syn_ns", ct.c_uint64),
        ("synack_ns", ct.c_uint64),
        ("established_ns", ct.c_uint64),
        ("close_ns", ct.c_uint64),
        ("dir", AwDir * 2),
        ("syn", AwSyn),
        ("history", ct.c_char * AW_HISTORY_LEN),
    ]


class AwEvent(ct.Structure):
    _fields_ = [
        ("type", ct.c_uint32),
        ("reason", ct.c_uint32),
        ("key", AwKey),
        ("flow", AwFlow),
    ]


@functools.lru_cache(maxsize=65536)
def ip_text(raw: bytes) -> str:
    """16 address bytes as the kernel stored them -> text; IPv4-mapped addresses become plain IPv4."""
    if raw[:12] == _V4_PREFIX:   # the common case, without ipaddress' cost
        return socket.inet_ntoa(raw[12:])
    addr = ipaddress.IPv6Address(raw)
    if addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def ip_bytes(text: str) -> bytes:
    """Text address -> the kernel's 16-byte form (IPv4 and ::ffff:a.b.c.d both become IPv4-mapped)."""
    addr = ipaddress.ip_address(text)
    if isinstance(addr, ipaddress.IPv4Address):
        return bytes(10) + b"\xff\xff" + addr.packed
    if addr.ipv4_mapped is not None:
        return bytes(10) + b"\xff\xff" + addr.ipv4_mapped.packed
    return addr.packed


def _port(net_order: int) -> int:
    return int.from_bytes(net_order.to_bytes(2, "little"), "big")


def _port_net(port: int) -> int:
    return int.from_bytes(port.to_bytes(2, "big"), "little")


class FlowEndpoints(NamedTuple):   # a NamedTuple: built once per flow on the poller's hot path
    client_ip: str
    client_port: int
    server_ip: str
    server_port: int


def endpoints(key: AwKey, flow: AwFlow) -> FlowEndpoints:
    return FlowEndpoints(*endpoints_from_key(bytes(key), flow.client_is_a))


_KEY = struct.Struct("!16s16sHH")   # aw_key: two addresses, then the ports in network byte order


def endpoints_from_key(key: bytes, client_is_a: int) -> tuple[str, int, str, int]:
    """(client ip, client port, server ip, server port) from the kernel key's bytes: addresses at 0 and
    16, ports (network byte order) at 32 and 34. A plain tuple: building a NamedTuple costs more than the
    rest of this on the poller's hot path."""
    a, b, a_port, b_port = _KEY.unpack_from(key)
    if client_is_a:
        return ip_text(a), a_port, ip_text(b), b_port
    return ip_text(b), b_port, ip_text(a), a_port


def make_key(ip1: str, port1: int, ip2: str, port2: int) -> AwKey:
    """The kernel's normalized key for a 4-tuple (same endpoint ordering as inspector.c)."""
    e1 = (ip_bytes(ip1), _port_net(port1))
    e2 = (ip_bytes(ip2), _port_net(port2))

    def order(e: tuple[bytes, int]) -> tuple[int, int, int]:
        # inspector.c compares the two native (little-endian) u64 halves, then the raw port value.
        return (int.from_bytes(e[0][:8], "little"), int.from_bytes(e[0][8:], "little"), e[1])

    a, b = (e1, e2) if order(e1) <= order(e2) else (e2, e1)
    key = AwKey()
    ct.memmove(key.addr_a, a[0], 16)
    ct.memmove(key.addr_b, b[0], 16)
    key.port_a = a[1]
    key.port_b = b[1]
    return key


def key_bytes(key: AwKey) -> bytes:
    return bytes(key)


def history_text(flow: AwFlow) -> str:
    return bytes(flow.history)[: flow.history_len].decode("ascii", "replace")


def option_kinds(flow: AwFlow) -> list[int]:
    return list(flow.syn.option_kinds[: flow.syn.n_options])


def copy_flow(flow: AwFlow) -> AwFlow:
    out = AwFlow()
    ct.memmove(ct.byref(out), ct.byref(flow), ct.sizeof(AwFlow))
    return out


EVENT_SIZE = ct.sizeof(AwEvent)
FLOW_OFFSET = AwEvent.flow.offset
FLOW_SIZE = ct.sizeof(AwFlow)
# The fields the connection table needs per event, read in one unpack from the ring buffer's memory:
# type, reason, key, flow.client_is_a, flow.state, flow.mid_stream, flow.ifindex, flow.first_ns.
_HEAD = struct.Struct("<II40sBBxB8xIQ")
assert (AwEvent.key.offset, FLOW_OFFSET + AwFlow.state.offset, FLOW_OFFSET + AwFlow.mid_stream.offset,
        FLOW_OFFSET + AwFlow.ifindex.offset, FLOW_OFFSET + AwFlow.first_ns.offset, _HEAD.size) == \
    (8, 49, 51, 60, 64, 72), "inspector.h layout changed: update _HEAD"

# (type, reason, key bytes, client_is_a, state, mid_stream, ifindex, first_ns, flow bytes)
EventRecord = tuple[int, int, bytes, int, int, int, int, int, bytes]


def read_events(memory: memoryview, offsets: list[int], lengths: list[int]) -> tuple[list[EventRecord], int]:
    """Decode ring-buffer records in place: (records, how many were too short to be an aw_event).
    The flow is copied out as bytes (the ring's memory is reused) and turned into an AwFlow only when a
    Connection is built from it."""
    unpack = _HEAD.unpack_from
    out = []
    bad = 0
    for offset, length in zip(offsets, lengths, strict=True):
        if length < EVENT_SIZE:
            bad += 1
            continue
        start = offset + FLOW_OFFSET
        out.append((*unpack(memory, offset), bytes(memory[start:start + FLOW_SIZE])))
    return out, bad


def event_record(event: AwEvent) -> EventRecord:
    """The same record from an AwEvent (tests, and anything that already holds one)."""
    raw = bytes(event)
    return (*_HEAD.unpack_from(raw, 0), raw[FLOW_OFFSET:FLOW_OFFSET + FLOW_SIZE])


def decode_event(data: int, size: int) -> AwEvent:
    """Copy a ring-buffer record out of the (reused) ring memory."""
    if size < ct.sizeof(AwEvent):
        raise ValueError(f"ring-buffer record of {size} bytes, expected {ct.sizeof(AwEvent)}")
    ev = AwEvent()
    ct.memmove(ct.byref(ev), data, ct.sizeof(AwEvent))
    return ev

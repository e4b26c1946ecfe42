"""Ground truth for kernel tests: an AF_PACKET capture on a client's veth, parsed independently of bpf/.

Kept deliberately plain (struct unpacking by the RFCs) so a bug in inspector.c cannot hide in a shared
parser.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

from authwire.demo.lab import call_in_netns as in_netns

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


@dataclass
class Segment:
    outgoing: bool
    src: tuple[str, int]
    dst: tuple[str, int]
    ip_version: int
    ttl: int
    df: bool
    ip_id: int
    flags: int
    window: int
    options: bytes
    payload_len: int


def parse_frame(frame: bytes, outgoing: bool) -> Segment | None:
    eth_type = struct.unpack("!H", frame[12:14])[0]
    if eth_type == 0x0800:
        ihl = (frame[14] & 0x0F) * 4
        tot_len, ip_id, frag, ttl, proto = struct.unpack("!HHHBB", frame[16:24])
        if proto != 6:
            return None
        src_ip, dst_ip = socket.inet_ntoa(frame[26:30]), socket.inet_ntoa(frame[30:34])
        l4 = 14 + ihl
        l4_len = tot_len - ihl
        version, df = 4, bool(frag & 0x4000)
    elif eth_type == 0x86DD:
        payload_len, nexthdr, hop = struct.unpack("!HBB", frame[18:22])
        if nexthdr != 6:
            return None
        src_ip = socket.inet_ntop(socket.AF_INET6, frame[22:38])
        dst_ip = socket.inet_ntop(socket.AF_INET6, frame[38:54])
        l4, l4_len, ttl, ip_id, version, df = 54, payload_len, hop, 0, 6, False
    else:
        return None
    sport, dport, _seq, _ack, off_flags, window = struct.unpack("!HHIIHH", frame[l4:l4 + 16])
    doff = (off_flags >> 12) * 4
    return Segment(outgoing, (src_ip, sport), (dst_ip, dport), version, ttl, df, ip_id, off_flags & 0xFF,
                   window, frame[l4 + 20:l4 + doff], l4_len - doff)


@dataclass
class Capture:
    """Packets of one interface in one namespace, read until stop()."""

    ns: str
    iface: str
    sock: socket.socket = field(init=False)
    segments: list[Segment] = field(default_factory=list)

    def __post_init__(self) -> None:
        def make() -> socket.socket:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            s.bind((self.iface, 0))
            s.settimeout(0.05)
            return s
        self.sock = in_netns(self.ns, make)

    def drain(self, quiet: float = 0.2, limit: float = 5.0) -> list[Segment]:
        """Read until no packet arrived for `quiet` seconds (bounded by `limit`)."""
        deadline = time.monotonic() + limit
        last = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last < quiet:
            try:
                frame, addr = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            last = time.monotonic()
            seg = parse_frame(frame, addr[2] == PACKET_OUTGOING)
            if seg is not None:
                self.segments.append(seg)
        return self.segments

    def close(self) -> None:
        self.sock.close()


def option_kinds(options: bytes) -> list[int]:
    kinds, i = [], 0
    while i < len(options):
        kind = options[i]
        kinds.append(kind)
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        i += options[i + 1]
    return kinds


def option_value(options: bytes, wanted: int) -> bytes | None:
    i = 0
    while i < len(options):
        kind = options[i]
        if kind == 0:
            return None
        if kind == 1:
            i += 1
            continue
        length = options[i + 1]
        if kind == wanted:
            return options[i + 2:i + length]
        i += length
    return None

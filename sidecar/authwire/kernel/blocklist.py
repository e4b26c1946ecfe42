"""The opt-in in-kernel response: source IPs whose new TCP connections the tc ingress program refuses.

User space owns the `blocked` BPF hash (bpf/inspector.c): it inserts an entry per source address with an
expiry time, refusing loopback, unspecified addresses and the configured allow-list (`block_allow`), and
deletes entries once they expire. The kernel checks new SYNs (SYN without ACK) at ingress only, so
established connections are never touched; it also refuses to drop loopback-sourced SYNs on its own.
Whether a match drops (`serve --enforce`) or is only counted as "would drop" (the default dry run) is
fixed when the program is compiled (loader.CompiledProgram(enforce=...)).
"""

from __future__ import annotations

import ctypes as ct
import ipaddress
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

MAX_TTL_SECONDS = 30 * 86400
MAX_REASON_CHARS = 200
_BPF_ANY = 0


class AwBlock(ct.Structure):
    """Mirror of struct aw_block (bpf/inspector.h)."""

    _fields_ = [
        ("expires_ns", ct.c_uint64),
        ("dropped", ct.c_uint64),
        ("would_drop", ct.c_uint64),
    ]


AwAddr = ct.c_uint8 * 16


@dataclass(frozen=True)
class BlockEntry:
    ip: str                 # normalized text (IPv4 plain, IPv6 compressed)
    expires_at: float       # wall clock, epoch seconds
    reason: str             # bounded, printable
    drops: int              # new SYNs dropped (--enforce)
    would_drops: int        # new SYNs that would have been dropped (dry run)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_allow_list(cidrs: list[str]) -> list[Network]:
    """CIDRs (or single IPs) -> networks; raises ValueError naming the bad entry."""
    out = []
    for text in cidrs:
        try:
            out.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{text[:64]!r} is not an IP network (e.g. 10.0.0.0/8, 2001:db8::/32)") from None
    return out


def _plain(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def check(ip: str, ttl_seconds: float, allow: list[Network]) -> tuple[str, str]:
    """(normalized ip, "") when ip may be blocked for ttl_seconds, else ("", why) — why is one of
    invalid_ip, bad_ttl, loopback, unspecified, allow_list. Never raises on any input."""
    if not isinstance(ip, str) or len(ip) > 64:
        return "", "invalid_ip"
    try:
        addr = _plain(ipaddress.ip_address(ip.strip()))
    except ValueError:
        return "", "invalid_ip"
    try:
        ttl = float(ttl_seconds)
    except (TypeError, ValueError):
        return "", "bad_ttl"
    if not 0 < ttl <= MAX_TTL_SECONDS:   # also refuses NaN
        return "", "bad_ttl"
    if addr.is_loopback:
        return "", "loopback"
    if addr.is_unspecified:
        return "", "unspecified"
    if any(addr.version == net.version and addr in net for net in allow):
        return "", "allow_list"
    return str(addr), ""


def bounded_reason(reason: str) -> str:
    """At most MAX_REASON_CHARS printable characters (the reason may come from a client)."""
    text = "".join(c if c.isprintable() else "?" for c in str(reason)[:MAX_REASON_CHARS])
    return text


def _addr_bytes(ip: str) -> AwAddr:
    addr = ipaddress.ip_address(ip)
    raw = bytes(10) + b"\xff\xff" + addr.packed if addr.version == 4 else addr.packed
    return AwAddr.from_buffer_copy(raw)


def _addr_text(raw: bytes) -> str:
    if raw[:12] == bytes(10) + b"\xff\xff":
        return str(ipaddress.IPv4Address(raw[12:]))
    return str(ipaddress.IPv6Address(raw))


class BlockList:
    """The `blocked` map of one compiled program, with the reasons and expiry user space keeps beside it."""

    def __init__(self, program: Any, allow: list[Network] | None = None) -> None:
        self._lib = program._lib
        self._fd = program.blocked_fd
        self.capacity = program.max_blocked
        self.enforce = bool(program.enforce)
        self.allow = list(allow or [])
        self._lock = threading.Lock()
        self._reasons: dict[str, str] = {}
        self.refused: Counter[str] = Counter()
        self.added = self.removed = self.expired = 0
        self.closed = False

    def add(self, ip: str, ttl_seconds: float, reason: str) -> tuple[bool, str]:
        """(True, normalized ip) or (False, why); see check(). A known entry gets the new TTL and reason."""
        normalized, why = check(ip, ttl_seconds, self.allow)
        if why:
            self.refused[why] += 1
            return False, why
        key = _addr_bytes(normalized)
        with self._lock:
            if self.closed:
                self.refused["inspector_stopped"] += 1
                return False, "inspector_stopped"
            value = AwBlock()
            known = self._lib.bpf_lookup_elem(self._fd, ct.byref(key), ct.byref(value)) == 0
            if not known and len(self._reasons) >= self.capacity:
                self.refused["full"] += 1
                return False, "full"
            value.expires_ns = time.monotonic_ns() + int(float(ttl_seconds) * 1e9)
            if self._lib.bpf_update_elem(self._fd, ct.byref(key), ct.byref(value), _BPF_ANY) != 0:
                self.refused["full"] += 1   # E2BIG: the kernel map is full
                return False, "full"
            self._reasons[normalized] = bounded_reason(reason)
            self.added += 1
        return True, normalized

    def remove(self, ip: str) -> bool:
        normalized, why = check(ip, 1, [])
        if why:   # loopback / unspecified can never be in the map; an invalid IP neither
            return False
        key = _addr_bytes(normalized)
        with self._lock:
            if self.closed:
                return False
            self._reasons.pop(normalized, None)
            removed = self._lib.bpf_delete_elem(self._fd, ct.byref(key)) == 0
            if removed:
                self.removed += 1
            return removed

    def _entries(self) -> list[tuple[bytes, AwBlock]]:
        out = []
        key, nxt = AwAddr(), AwAddr()
        first = True
        while len(out) <= self.capacity:
            if self._lib.bpf_get_next_key(self._fd, None if first else ct.byref(key), ct.byref(nxt)) != 0:
                break
            first = False
            ct.memmove(key, nxt, 16)
            value = AwBlock()
            if self._lib.bpf_lookup_elem(self._fd, ct.byref(key), ct.byref(value)) == 0:
                out.append((bytes(key), value))
        return out

    def entries(self) -> list[BlockEntry]:
        """Live (not expired) entries, soonest expiry first."""
        with self._lock:
            if self.closed:
                return []
            now_mono, now_wall = time.monotonic_ns(), time.time()
            out = []
            for raw, value in self._entries():
                if value.expires_ns <= now_mono:
                    continue
                ip = _addr_text(raw)
                out.append(BlockEntry(ip, now_wall + (value.expires_ns - now_mono) / 1e9,
                                      self._reasons.get(ip, ""), int(value.dropped), int(value.would_drop)))
        return sorted(out, key=lambda e: e.expires_at)

    def expire(self) -> int:
        """Delete expired entries from the kernel map (the kernel already ignores them). Returns how many."""
        with self._lock:
            if self.closed:
                return 0
            now = time.monotonic_ns()
            gone = 0
            for raw, value in self._entries():
                if value.expires_ns <= now:
                    key = AwAddr.from_buffer_copy(raw)
                    if self._lib.bpf_delete_elem(self._fd, ct.byref(key)) == 0:
                        gone += 1
                    self._reasons.pop(_addr_text(raw), None)
            self.expired += gone
            return gone

    def counters(self) -> dict[str, int]:
        with self._lock:
            out = {"block_entries": len(self._reasons), "block_added": self.added,
                   "block_removed": self.removed, "block_expired": self.expired,
                   "block_refused": sum(self.refused.values())}
        for why, n in sorted(self.refused.items()):
            out[f"block_refused_{why}"] = n
        return out

    def close(self) -> None:
        with self._lock:
            self.closed = True

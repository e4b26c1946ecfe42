"""Two bpf(2) facilities bcc's Python API lacks: BPF_PROG_TEST_RUN and a program's run statistics.

Used by the malformed-packet tests and bench/kernel.py. The syscall is made directly with ctypes (the
uapi union bpf_attr layout is stable) rather than through libbpf, whose soname and version vary.
"""

from __future__ import annotations

import ctypes as ct
import os
from dataclasses import dataclass

_SYS_BPF = 321          # x86_64
_BPF_PROG_TEST_RUN = 10

_libc = ct.CDLL(None, use_errno=True)


class _TestRunAttr(ct.Structure):
    # union bpf_attr, the `test` member (uapi/linux/bpf.h), padded to the size the kernel accepts.
    _fields_ = [
        ("prog_fd", ct.c_uint32),
        ("retval", ct.c_uint32),
        ("data_size_in", ct.c_uint32),
        ("data_size_out", ct.c_uint32),
        ("data_in", ct.c_uint64),
        ("data_out", ct.c_uint64),
        ("repeat", ct.c_uint32),
        ("duration", ct.c_uint32),
        ("ctx_size_in", ct.c_uint32),
        ("ctx_size_out", ct.c_uint32),
        ("ctx_in", ct.c_uint64),
        ("ctx_out", ct.c_uint64),
        ("flags", ct.c_uint32),
        ("cpu", ct.c_uint32),
        ("batch_size", ct.c_uint32),
        ("pad", ct.c_uint32 * 5),
    ]


_SKB_CTX_SIZE = 192        # sizeof(struct __sk_buff) (uapi/linux/bpf.h, 6.x)
_SKB_IFINDEX_OFFSET = 40   # offsetof(struct __sk_buff, ifindex)


def _run(prog_fd: int, packet: bytes, repeat: int, ifindex: int = 0) -> _TestRunAttr:
    data_in = ct.create_string_buffer(packet, len(packet))
    data_out = ct.create_string_buffer(len(packet) + 256)
    attr = _TestRunAttr(prog_fd=prog_fd, data_size_in=len(packet), data_in=ct.addressof(data_in),
                        data_out=ct.addressof(data_out), data_size_out=len(data_out), repeat=repeat)
    if ifindex:   # without a context the kernel runs the packet as if it arrived on lo (ifindex 1)
        ctx = ct.create_string_buffer(_SKB_CTX_SIZE)
        ct.c_uint32.from_buffer(ctx, _SKB_IFINDEX_OFFSET).value = ifindex
        attr.ctx_in = ct.addressof(ctx)
        attr.ctx_size_in = _SKB_CTX_SIZE
    ret = _libc.syscall(_SYS_BPF, _BPF_PROG_TEST_RUN, ct.byref(attr), ct.sizeof(attr))
    if ret != 0:
        err = ct.get_errno()
        raise OSError(err, f"BPF_PROG_TEST_RUN: {os.strerror(err)}")
    return attr


def test_run(prog_fd: int, packet: bytes, ifindex: int = 0) -> int:
    """Run a tc program once on `packet` (Ethernet frame) in the kernel; returns its verdict (u32, so
    TC_ACT_UNSPEC reads 0xFFFFFFFF). ifindex: the interface it arrives on, in the calling thread's network
    namespace (default: lo)."""
    return _run(prog_fd, packet, 1, ifindex).retval


def test_run_ns(prog_fd: int, packet: bytes, repeat: int = 1_000_000) -> int:
    """Average ns per run of the program on `packet`, run `repeat` times in the kernel (hot cache)."""
    return _run(prog_fd, packet, repeat).duration


@dataclass(frozen=True)
class RunStats:
    run_time_ns: int
    run_cnt: int


def prog_stats(prog_fd: int) -> RunStats:
    """run_time_ns / run_cnt of a program (counted only while kernel.bpf_stats_enabled=1)."""
    values: dict[str, int] = {}
    with open(f"/proc/self/fdinfo/{prog_fd}") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("run_time_ns", "run_cnt"):
                values[name] = int(value.strip())
    return RunStats(values.get("run_time_ns", 0), values.get("run_cnt", 0))

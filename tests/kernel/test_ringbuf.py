"""The ring buffer read from its own memory (authwire.kernel.ringbuf): every record the kernel commits is
handed over once, in order, also across the end of the ring (it wraps every ~35k events)."""

from __future__ import annotations

import socket
import struct

import pytest

from authwire.kernel import events as ev
from authwire.kernel import progrun

pytestmark = pytest.mark.kernel


def _syn(src_port: int, src_ip: str) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", src_port, 80, 1000, 0, 5 << 4, 0x02, 64240, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0x4000, 64, 6, 0, socket.inet_aton(src_ip),
                     socket.inet_aton("10.55.0.1"))
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + tcp


def test_every_record_once_in_order_across_the_wrap(program):
    ring = program.ring
    per_lap = ring.size // ((ev.EVENT_SIZE + 8 + 7) & ~7)
    total = per_lap + per_lap // 2          # one and a half laps: the read position wraps
    seen: list[tuple[str, int]] = []

    def collect(memory, offsets, lengths):
        records, bad = ev.read_events(memory, offsets, lengths)
        assert bad == 0
        for etype, _, key, client_is_a, *_ in records:
            assert etype == ev.EV_OPENED
            client_ip, client_port, _, _ = ev.endpoints_from_key(key, client_is_a)
            seen.append((client_ip, client_port))

    program.clear_flows()
    while ring.pending():       # whatever an earlier test left
        ring.consume(lambda *a: None)
    program.consumer = collect
    failed = program.counter_sums()["ringbuf_reserve_failed"]
    try:
        sent = []
        for i in range(total):
            # distinct flows: each SYN opens one (the session program's table is small; evictions are fine)
            src = (f"10.55.{1 + i // 50000}.{2 + i % 200}", 1024 + i % 50000)
            sent.append(src)
            progrun.test_run(program.ingress.fd, _syn(src[1], src[0]))
            if i % 10_000 == 9_999:
                program.poll(0)
        while ring.pending():
            program.poll(0)
    finally:
        program.consumer = None
        program.clear_flows()
    assert program.counter_sums()["ringbuf_reserve_failed"] == failed
    assert seen == sent

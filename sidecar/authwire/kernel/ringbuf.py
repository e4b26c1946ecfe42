"""A BPF ring buffer read straight from its memory: mmap + epoll, records handed over in batches.

bcc's ring_buffer_poll calls a ctypes callback per record (≈ 1-2 µs each before any work), which made the
callback, not the table, the poller's main cost. The ring buffer's memory layout is kernel ABI
(kernel/bpf/ringbuf.c, tools/lib/bpf/ringbuf.c): a consumer page (read-write, the consumer position at
offset 0), then a producer page (producer position at offset 0) followed by the data area mapped twice in
a row, so a record that wraps around the end is still contiguous. Each record has an 8-byte header: a u32
length whose bit 31 says "still being written" and bit 30 "discarded", and a u32 page offset; records are
8-byte aligned. Positions only grow; the data offset is position & (size - 1).

Memory ordering: x86-64 (the only architecture this runs on here) never reorders loads with loads or
stores with earlier loads, so reading the producer position before the records and writing the consumer
position after reading them needs no explicit barrier from Python.
"""

from __future__ import annotations

import mmap
import platform
import select
import struct
from collections.abc import Callable

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HEADER = 8
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")

# handler(memory, offsets, lengths): where each committed record's data starts in `memory`, and its size
Handler = Callable[[memoryview, list[int], list[int]], None]


class RingReader:
    def __init__(self, map_fd: int, size: int) -> None:
        if platform.machine() not in ("x86_64", "AMD64"):
            raise OSError(f"RingReader relies on x86-64 memory ordering; this is {platform.machine()}")
        if size <= 0 or size & (size - 1):
            raise ValueError(f"ring buffer size {size} is not a power of two")
        page = mmap.PAGESIZE
        self.size = size
        self._mask = size - 1
        self._page = page
        self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._producer = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self.memory = memoryview(self._producer)
        self._epoll = select.epoll()
        self._epoll.register(map_fd, select.EPOLLIN)

    def pending(self) -> int:
        """Bytes produced but not consumed yet."""
        return _U64.unpack_from(self._producer, 0)[0] - _U64.unpack_from(self._consumer, 0)[0]

    def consume(self, handler: Handler, max_records: int = 4096) -> int:
        """Hand every committed record (up to max_records per batch) to handler, batch by batch; returns
        how many records were handed over. The consumer position advances after each batch, so the
        kernel can reuse that space while the next batch is read."""
        producer, consumer = self._producer, self._consumer
        mask, page = self._mask, self._page
        unpack_u32 = _U32.unpack_from
        total = 0
        cons = _U64.unpack_from(consumer, 0)[0]
        while True:
            prod = _U64.unpack_from(producer, 0)[0]
            if cons >= prod:
                return total
            offsets: list[int] = []
            lengths: list[int] = []
            batch_start = cons
            while cons < prod and len(offsets) < max_records:
                at = page + (cons & mask)
                header = unpack_u32(producer, at)[0]
                if header & BUSY_BIT:
                    break
                length = header & ~(BUSY_BIT | DISCARD_BIT)
                if not header & DISCARD_BIT:
                    offsets.append(at + HEADER)
                    lengths.append(length)
                cons += (length + HEADER + 7) & ~7
            if offsets:
                handler(self.memory, offsets, lengths)
                total += len(offsets)
            _U64.pack_into(consumer, 0, cons)
            if cons == batch_start:   # the next record is still being written
                return total

    def poll(self, handler: Handler, timeout_ms: int) -> int:
        """Consume what is there; if nothing, wait up to timeout_ms for the kernel's wake-up first."""
        n = self.consume(handler)
        if n:
            return n
        self._epoll.poll(timeout_ms / 1000)
        return self.consume(handler)

    def close(self) -> None:
        self._epoll.close()
        self.memory.release()
        self._producer.close()
        self._consumer.close()

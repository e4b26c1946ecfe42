"""Join: attach to each AuthEvent the kernel's facts about the TCP connection it arrived on.

Without a kernel inspector every record is JOIN_STATUS_INSPECTOR_OFF.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from authwire.counters import Counters
from authwire.v1 import auth_event_pb2, connection_pb2, record_pb2


class Joiner:
    def __init__(self, table, wait: float, counters: Counters) -> None:
        self.table = table
        self.wait = wait
        self.counters = counters

    async def join(self, event: auth_event_pb2.AuthEvent) -> tuple[connection_pb2.Connection | None,
                                                                    record_pb2.Join]:
        join = record_pb2.Join(status=record_pb2.JOIN_STATUS_INSPECTOR_OFF, behind_proxy=bool(event.forwarded_for))
        self.counters.inc("join", "INSPECTOR_OFF")
        return None, join

    async def join_batch(self, events: Sequence[auth_event_pb2.AuthEvent]) -> list[
            tuple[connection_pb2.Connection | None, record_pb2.Join]]:
        return list(await asyncio.gather(*(self.join(e) for e in events)))

"""Through the real pipeline and ConnectionTable (fed kernel events as the poller decodes them): a record shows
its connection as of its first join, and its final facts once the kernel reports the connection closed."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from authwire.counters import Counters
from authwire.join.joiner import Joiner
from authwire.kernel import events as ev
from authwire.kernel.connection_table import ConnectionTable
from authwire.pipeline import Pipeline
from authwire.store.record_store import Store
from authwire.v1 import connection_pb2, query_pb2, record_pb2
from support import auth_event

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "join"))
from test_join_rules import CLIENT, SERVER, kernel_event  # noqa: E402


def test_a_record_shows_first_join_facts_then_the_final_ones_after_close(tmp_path):
    async def scenario() -> None:
        counters = Counters()
        table = ConnectionTable(grace_period=30, clock_offset_ns=0)
        store = Store(tmp_path / "c.db")
        pipeline = Pipeline(store, Joiner(table, 0.0, counters), counters)
        pipeline.start()
        syn = time.time_ns() - 5_000_000_000
        opened = kernel_event(ev.EV_OPENED, syn)
        opened.flow.dir[0].packets = 3
        table.apply(opened)
        start = (syn + 1_000_000_000) / 1e9
        first = auth_event("first", client=CLIENT, server=SERVER, start=start)
        assert (await pipeline.report([first], "test")).accepted == 1
        second = auth_event("second", client=CLIENT, server=SERVER, start=start + 1)
        assert (await pipeline.report([second], "test")).accepted == 1
        stored = {r.event.request_id: r for r in store.query(query_pb2.Filters()).records}
        assert stored["first"].join.status == record_pb2.JOIN_STATUS_EXACT
        assert stored["second"].connection == stored["first"].connection      # stored once
        assert stored["second"].join.kernel_request_index == 2
        assert stored["first"].connection.to_server.packets == 3
        assert stored["first"].connection.state == connection_pb2.CONNECTION_STATE_ESTABLISHED

        closed = kernel_event(ev.EV_CLOSED, syn, close_ns=syn + 4_000_000_000)
        closed.flow.dir[0].packets = 11
        table.apply(closed)
        # the update is written by the store thread with the next batch
        assert (await pipeline.report([auth_event("other", client=("192.0.2.99", 1000), start=start)],
                                      "test")).accepted == 1
        await pipeline.close()
        for name in ("first", "second"):
            conn = store.get(name).connection
            assert conn.to_server.packets == 11 and conn.state == connection_pb2.CONNECTION_STATE_CLOSED
            assert conn.close_time.ToNanoseconds() == syn + 4_000_000_000
            assert conn.uid == stored["first"].connection.uid and conn.syn == stored["first"].connection.syn
        assert counters.get("store.connections_closed") == 1

    asyncio.run(scenario())

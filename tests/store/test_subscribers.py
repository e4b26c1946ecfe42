"""Pipeline.subscribe / subscribe_rows: subscribers see each committed batch after its ack; a failing one is counted."""

from __future__ import annotations

import asyncio

from authwire.counters import Counters
from authwire.join.joiner import Joiner
from authwire.pipeline import Pipeline
from authwire.store.columns import INDEX
from authwire.store.record_store import Store
from authwire.v1 import query_pb2
from support import auth_event


def test_subscribers_get_committed_records_after_the_ack_and_failures_are_counted(tmp_path):
    async def scenario() -> None:
        counters = Counters()
        store = Store(tmp_path / "s.db")
        pipeline = Pipeline(store, Joiner(None, 0, counters), counters)
        seen: list[tuple[list[str], bool]] = []
        acked: list[bool] = []

        def good(records) -> None:
            # The ack was given before this runs, and the records are in the store.
            ids = [r.event.request_id for r in records]
            seen.append((ids, bool(acked) and bool(store.query(query_pb2.Filters(request_id=ids[0])).records)))

        def broken(records) -> None:
            raise RuntimeError("subscriber bug")

        row_ids: list[list[str]] = []

        def rows(batch) -> None:  # plain rows: same batches, no messages
            row_ids.append([r[INDEX["request_id"]] for r in batch])

        pipeline.subscribe(broken, name="broken")
        pipeline.subscribe(good, name="good")
        pipeline.subscribe_rows(rows, name="rows")
        pipeline.subscribe_rows(broken, name="broken_rows")
        pipeline.start()
        response = await pipeline.report([auth_event("s-1"), auth_event("s-2")], "test")
        acked.append(response.accepted == 2)
        await pipeline.report([auth_event("s-3")], "test")
        for _ in range(100):
            if len(seen) == 2 and len(row_ids) == 2:
                break
            await asyncio.sleep(0.01)
        await pipeline.close()
        assert seen == [(["s-1", "s-2"], True), (["s-3"], True)]
        assert counters.get("subscriber.failed", "broken") == 2
        assert counters.get("subscriber.failed", "good") == 0
        assert row_ids == [["s-1", "s-2"], ["s-3"]]
        assert counters.get("subscriber.failed", "broken_rows") == 2

    asyncio.run(scenario())


def test_subscriber_records_equal_the_records_built_from_their_parts():
    from authwire.ingest.event_rows import native
    from authwire.pipeline import subscriber_records
    from authwire.store.columns import event_row, join_columns
    from authwire.v1 import connection_pb2, record_pb2

    conn = connection_pb2.Connection(uid="C1", community_id="1:x" * 60)  # a length needing a 2-byte varint
    join = record_pb2.Join(status=record_pb2.JOIN_STATUS_EXACT, kernel_request_index=2)
    events = [auth_event("a"), auth_event("b")]
    events[1].http.user_agent = "u" * 300
    # one event row from the Python path (source: the message), one from the native pass (its bytes)
    rows = [event_row(events[0]), native.event(events[1].SerializeToString(), 1e10) if native else event_row(events[1])]
    joined = [(conn, join_columns(join)), (None, join_columns(record_pb2.Join()))]
    got = subscriber_records(rows, joined, 1_700_000_000_000_000_001)
    want = [record_pb2.EnrichedRecord(event=events[0], connection=conn, join=join),
            record_pb2.EnrichedRecord(event=events[1], join=record_pb2.Join())]
    for w in want:
        w.received_time.FromNanoseconds(1_700_000_000_000_000_001)
    assert got == want


def test_a_failing_disk_is_logged_once_a_minute_and_every_failed_batch_counted(tmp_path, caplog):
    """A full disk fails every batch: the log gets one line per kind (issue 11 item 9), the counter all of them."""
    import errno
    import logging

    async def scenario() -> None:
        counters = Counters()
        store = Store(tmp_path / "s.db")

        def disk_full(rows) -> None:  # what SQLite raises when the file system is full
            raise OSError(errno.ENOSPC, "No space left on device")

        store.write_rows = disk_full
        pipeline = Pipeline(store, Joiner(None, 0, counters), counters)
        pipeline.start()
        for i in range(20):
            try:
                await pipeline.report([auth_event(f"full-{i}")], "test")
            except Exception as exc:  # the caller sees the failure and retries later
                assert "store write failed" in str(exc)
        await pipeline.close()
        assert counters.get("store.write_failed", "OSError") == 20

    with caplog.at_level(logging.ERROR):
        asyncio.run(scenario())
    lines = [r for r in caplog.records if "store write of" in r.getMessage()]
    assert len(lines) == 1

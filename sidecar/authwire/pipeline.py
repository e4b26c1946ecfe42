"""The one data path: validate -> join -> store (+ JSONL) -> acknowledge.

Every entry point (gRPC Ingest, gRPC-Web, Envoy ALS) calls Pipeline.report; nothing else writes the store.
Writes are group-committed: reports arriving while a commit runs are written together in the next one,
and each caller is answered only after its records are committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from google.protobuf.timestamp_pb2 import Timestamp

from authwire.counters import Counters
from authwire.ingest.validate import validate_batch
from authwire.join.joiner import Joiner
from authwire.store.jsonl import JsonlSink
from authwire.store.record_store import Store
from authwire.v1 import auth_event_pb2, ingest_pb2, record_pb2

log = logging.getLogger(__name__)

MAX_BATCH_EVENTS = 10_000  # one report larger than this is refused whole, before any work

Subscriber = Callable[[list[record_pb2.EnrichedRecord]], None]


class StoreUnavailable(RuntimeError):
    """The store could not commit; nothing of the batch was acknowledged."""


class Pipeline:
    def __init__(self, store: Store, joiner: Joiner, counters: Counters, jsonl: JsonlSink | None = None) -> None:
        self.store = store
        self.joiner = joiner
        self.counters = counters
        self.jsonl = jsonl
        self._pending: list[tuple[list[record_pb2.EnrichedRecord], asyncio.Future]] = []
        self._wakeup = asyncio.Event()
        self._committed = asyncio.Condition()
        # One thread does all SQLite writing, so the event loop never blocks on disk.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="authwire-store")
        self._writer: asyncio.Task | None = None
        self._closing = False
        self._subscribers: list[tuple[str, Subscriber]] = []

    def subscribe(self, callback: Subscriber, name: str | None = None) -> None:
        """Call callback(records) on the event loop after each batch is committed and acknowledged.

        The callers' acks are released first; subscribers run in a later loop iteration, so a slow subscriber
        delays later work on the loop but never an ack already given. An exception is logged once per
        subscriber name and counted as `subscriber.failed{name}`; the next batch is delivered again.
        """
        label = name or getattr(callback, "__qualname__", None) or repr(callback)
        self._subscribers.append((label, callback))

    def _notify(self, records: list[record_pb2.EnrichedRecord]) -> None:
        for name, callback in self._subscribers:
            try:
                callback(records)
            except Exception:
                if not self.counters.get("subscriber.failed", name):
                    log.exception("subscriber %s failed (counted as subscriber.failed{%s})", name, name)
                self.counters.inc("subscriber.failed", name)

    def start(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="authwire-writer")

    async def report(self, events: Sequence[auth_event_pb2.AuthEvent], source: str,
                     drops: ingest_pb2.ReporterDrops | None = None) -> ingest_pb2.ReportResponse:
        """Validate, join and commit a batch; returns once the accepted records are durable.

        drops: what the sending reporter lost before it could send (ReportRequest.drops); counted only once
        the report is accepted, because a failed report is sent again with the same drops.
        """
        received_at = time.perf_counter()
        self.counters.inc("ingest.received", source, len(events))
        if len(events) > MAX_BATCH_EVENTS:
            self.counters.inc("ingest.rejected", "batch_too_large", len(events))
            self.counters.inc("ingest.rejected_events", source, len(events))
            reason = f"batch of {len(events)} events is larger than {MAX_BATCH_EVENTS}; split it"
            return ingest_pb2.ReportResponse(
                rejections=[ingest_pb2.Rejection(index=i, field="events", reason=reason) for i in range(len(events))])
        good, rejections = validate_batch(events, time.time(), self.counters, source)
        if good:
            joined = await self.joiner.join_batch(good)
            received = Timestamp()
            received.GetCurrentTime()
            records = [record_pb2.EnrichedRecord(event=e, connection=c, join=j, received_time=received)
                       for e, (c, j) in zip(good, joined, strict=True)]
            await self._commit(records)
            self.counters.inc("ingest.accepted", source, len(records))
        if drops is not None:
            for kind, n in (("queue_full", drops.queue_full), ("send_failed", drops.send_failed),
                            ("encode_failed", drops.encode_failed)):
                if n:
                    self.counters.inc("gateway.dropped", kind, n)
        self.counters.observe("ingest.ack_seconds", time.perf_counter() - received_at)
        return ingest_pb2.ReportResponse(accepted=len(good), rejections=rejections)

    async def _commit(self, records: list[record_pb2.EnrichedRecord]) -> None:
        if self._closing or self._writer is None:
            raise StoreUnavailable("authwire is shutting down; retry against the next instance")
        done = asyncio.get_running_loop().create_future()
        self._pending.append((records, done))
        self._wakeup.set()
        await done

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._pending = self._pending, []
            if not batch:
                if self._closing:
                    return
                continue
            records = [r for recs, _ in batch for r in recs]
            try:
                await loop.run_in_executor(self._executor, self._write, records)
            except Exception as exc:  # the store failed: no ack, callers see the error and retry
                log.error("store write of %d records failed: %s", len(records), exc)
                self.counters.inc("store.write_failed", type(exc).__name__, len(records))
                for _, done in batch:
                    if not done.done():
                        done.set_exception(StoreUnavailable(f"store write failed: {exc}"))
                continue
            for _, done in batch:
                if not done.done():
                    done.set_result(None)
            if self._subscribers:
                loop.call_soon(self._notify, records)
            async with self._committed:
                self._committed.notify_all()
            if self._closing and not self._pending:
                return

    def _write(self, records: list[record_pb2.EnrichedRecord]) -> None:
        self.store.write(records)
        if self.jsonl is not None:
            try:
                self.jsonl.write(records)
            except OSError as exc:  # the store has them; the shipper file does not: count it
                self.counters.inc("jsonl.write_failed", type(exc).__name__, len(records))
                log.warning("JSONL write failed (%d records are in the store only): %s", len(records), exc)

    async def wait_for_commit(self, timeout: float) -> None:
        """Return after the next commit, or after timeout (for Tail)."""
        async with self._committed:
            try:
                await asyncio.wait_for(self._committed.wait(), timeout)
            except TimeoutError:
                pass

    async def close(self) -> None:
        """Flush what is pending, then stop the writer (SIGTERM path)."""
        self._closing = True
        self._wakeup.set()
        if self._writer is not None:
            await self._writer
        self._executor.shutdown(wait=True)
        if self.jsonl is not None:
            self.jsonl.close()

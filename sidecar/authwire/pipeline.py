"""The one data path: validate -> join -> store (+ JSONL) -> acknowledge -> subscribers.

Every entry point (gRPC Ingest, gRPC-Web, Envoy ALS) calls Pipeline.report; nothing else writes the store.
Writes are group-committed: reports arriving while a commit runs are written together in the next one,
and each caller is answered only after its records are committed.

Hot path: no EnrichedRecord is built per record. Each accepted event is an event row (validated in one
native pass where it can be: authwire.ingest.event_rows), which the join reads and which becomes one plain
row tuple (store.columns: the event's fields, the join's columns and the joined Connection object) that the
store and the JSONL sink both consume. Row subscribers (Pipeline.subscribe_rows: the detections, OTLP
export, /metrics' auth counts, health) get those same rows. Subscribers of Pipeline.subscribe get
EnrichedRecord messages: those are built only while somebody subscribes that way (about 2.4 us a record
here); `authwire serve` has none.

Connections: the store keeps each connection's facts once (as of its first join); when the kernel reports
a stored connection closed, the writer thread stores its final facts (update_connections).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from google.protobuf.timestamp_pb2 import Timestamp

from authwire.counters import Counters
from authwire.ingest.event_rows import admit, event_bytes, native
from authwire.ingest.problem_log import RateLimitedLog
from authwire.join.joiner import Joiner
from authwire.protowire import message_field
from authwire.store.columns import finish_rows, join_message
from authwire.store.jsonl import JsonlSink
from authwire.store.record_store import Store, StoreLost, is_closed
from authwire.v1 import auth_event_pb2, connection_pb2, ingest_pb2, record_pb2

log = logging.getLogger(__name__)
# A full or failing disk fails every batch: one line per kind a minute, the counters are the exact record.
store_failures_log = RateLimitedLog("pipeline.store")

MAX_BATCH_EVENTS = 10_000  # one report larger than this is refused whole, before any work

# Plain rows from event rows + join results: in C when the extension is built (~0.3 us a row instead of ~1).
make_rows = native.rows if native is not None else finish_rows

Subscriber = Callable[[list[record_pb2.EnrichedRecord]], None]
# Gets the committed batch's plain rows (store.columns: NAMES order, row[CONN] the Connection or None).
RowSubscriber = Callable[[list[tuple]], None]


GC_YOUNG_THRESHOLD = 20_000


def tune_gc() -> None:
    """For `serve`: the hot path makes many short-lived objects (rows, JSON dicts, messages) and no cycles
    worth chasing per batch. Objects alive after start-up are frozen (never scanned again) and young
    collections run every 20,000 allocations instead of 700: measured here, the collector took about half
    of the JSONL encoding's time with the defaults."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def subscriber_records(events: Sequence[tuple], joined: Sequence[tuple], received_ns: int
                       ) -> list[record_pb2.EnrichedRecord]:
    """EnrichedRecords for `subscribe` subscribers from event rows and their join results, made by parsing
    concatenated fields (EnrichedRecord fields 1-4): the event's own bytes, the connection's (once per
    connection), the join's and the received time."""
    received = Timestamp()
    received.FromNanoseconds(received_ns)
    tail = message_field(b"\x22", received.SerializeToString())
    conn_bytes: dict[int, bytes] = {}
    out = []
    parse = record_pb2.EnrichedRecord.FromString
    for event, (conn, join) in zip(events, joined, strict=True):
        parts = message_field(b"\x0a", event_bytes(event))
        if conn is not None:
            cb = conn_bytes.get(id(conn))
            if cb is None:
                cb = conn_bytes[id(conn)] = message_field(b"\x12", conn.SerializeToString())
            parts += cb
        out.append(parse(parts + message_field(b"\x1a", join_message(join).SerializeToString()) + tail))
    return out


class StoreUnavailable(RuntimeError):
    """The store could not commit; nothing of the batch was acknowledged."""


class Pipeline:
    def __init__(self, store: Store, joiner: Joiner, counters: Counters, jsonl: JsonlSink | None = None) -> None:
        self.store = store
        self.joiner = joiner
        self.counters = counters
        self.jsonl = jsonl
        self._pending: list[tuple[list[tuple], list[record_pb2.EnrichedRecord] | None, asyncio.Future]] = []
        self._wakeup = asyncio.Event()
        self._committed = asyncio.Condition()
        # One thread does all SQLite writing, so the event loop never blocks on disk.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="authwire-store")
        self._writer: asyncio.Task | None = None
        self._closing = False
        self._lost_logged = False
        self._subscribers: list[tuple[str, Subscriber]] = []
        self._row_subscribers: list[tuple[str, RowSubscriber]] = []
        self._closed_conns: deque[connection_pb2.Connection] = deque(maxlen=65536)
        if joiner.table is not None:
            joiner.table.add_listener(self._on_connection)
        joiner.known = store.facts_of  # the join builds a Connection only for one the store does not keep

    def _on_connection(self, conn: connection_pb2.Connection) -> None:
        """Kernel poller thread: remember stored connections that closed, for the writer to update."""
        if is_closed(conn) and self.store.knows(conn.uid):
            self._closed_conns.append(conn)

    def subscribe(self, callback: Subscriber, name: str | None = None) -> None:
        """Call callback(records) on the event loop after each batch is committed and acknowledged.

        The callers' acks are released first; subscribers run in a later loop iteration, so a slow subscriber
        delays later work on the loop but never an ack already given. An exception is logged once per
        subscriber name and counted as `subscriber.failed{name}`; the next batch is delivered again.
        """
        label = name or getattr(callback, "__qualname__", None) or repr(callback)
        self._subscribers.append((label, callback))

    def subscribe_rows(self, callback: RowSubscriber, name: str | None = None) -> None:
        """Like subscribe, but callback(rows) gets the batch's plain rows (authwire.store.columns: values in
        NAMES order, row[CONN] the joined Connection message or None) instead of EnrichedRecords: no
        message is built for it. Rows are shared between subscribers: read-only."""
        label = name or getattr(callback, "__qualname__", None) or repr(callback)
        self._row_subscribers.append((label, callback))

    def _notify(self, subscribers: list[tuple[str, Callable[[list], None]]], batch: list) -> None:
        for name, callback in subscribers:
            try:
                callback(batch)
            except Exception:
                if not self.counters.get("subscriber.failed", name):
                    log.exception("subscriber %s failed (counted as subscriber.failed{%s})", name, name)
                self.counters.inc("subscriber.failed", name)

    def start(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="authwire-writer")

    async def report(self, events: Sequence[tuple | auth_event_pb2.AuthEvent], source: str,
                     drops: ingest_pb2.ReporterDrops | None = None) -> ingest_pb2.ReportResponse:
        """Validate, join and commit a batch; returns once the accepted records are durable.

        events: AuthEvent messages, or event rows the native pass made (authwire.ingest.event_rows).

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
        good, rejections = admit(events, time.time(), self.counters, source)
        if good:
            joined = await self.joiner.join_rows(good)
            received_ns = time.time_ns()
            rows = make_rows(good, received_ns, joined)
            records = subscriber_records(good, joined, received_ns) if self._subscribers else None
            await self._commit(rows, records)
            self.counters.inc("ingest.accepted", source, len(rows))
        if drops is not None:
            for kind, n in (("queue_full", drops.queue_full), ("send_failed", drops.send_failed),
                            ("encode_failed", drops.encode_failed)):
                if n:
                    self.counters.inc("gateway.dropped", kind, n)
        self.counters.observe("ingest.ack_seconds", time.perf_counter() - received_at)
        return ingest_pb2.ReportResponse(accepted=len(good), rejections=rejections)

    async def _commit(self, rows: list[tuple], records: list[record_pb2.EnrichedRecord] | None) -> None:
        if self._closing or self._writer is None:
            raise StoreUnavailable("authwire is shutting down; retry against the next instance")
        done = asyncio.get_running_loop().create_future()
        self._pending.append((rows, records, done))
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
            rows = [r for rws, _, _ in batch for r in rws]
            try:
                await loop.run_in_executor(self._executor, self._write, rows)
            except Exception as exc:  # the store failed: no ack, callers see the error and retry
                if isinstance(exc, StoreLost):
                    self.counters.inc("store.lost", "", len(rows))
                    if not self._lost_logged:
                        self._lost_logged = True
                        log.error("%s", exc)
                else:
                    store_failures_log.log(type(exc).__name__, f"store write of {len(rows)} records failed: {exc} "
                                           f"(counted as store.write_failed)", logging.ERROR)
                self.counters.inc("store.write_failed", type(exc).__name__, len(rows))
                for _, _, done in batch:
                    if not done.done():
                        done.set_exception(StoreUnavailable(f"store write failed: {exc}"))
                continue
            for _, _, done in batch:
                if not done.done():
                    done.set_result(None)
            if self._subscribers:
                records = [r for _, recs, _ in batch if recs is not None for r in recs]
                if records:
                    loop.call_soon(self._notify, self._subscribers, records)
            if self._row_subscribers and rows:
                loop.call_soon(self._notify, self._row_subscribers, rows)
            async with self._committed:
                self._committed.notify_all()
            if self._closing and not self._pending:
                return

    def _write(self, rows: list[tuple]) -> None:
        """The store thread: commit, then the JSONL lines, then final facts of connections that closed."""
        self.store.write_rows(rows)
        if self.jsonl is not None:
            self.jsonl.write(rows, self.store.connection_json)
        if self._closed_conns:
            self._update_closed()

    def _update_closed(self) -> None:
        table = self.joiner.table
        final = []
        while self._closed_conns:
            light = self._closed_conns.popleft()
            for uid, _, _, _, handle in table.candidate_times(light.client.ip, light.client.port, light.server.ip,
                                                             light.server.port):
                if uid == light.uid:
                    final.append(table.connection(handle))
                    break
        try:
            self.counters.inc("store.connections_closed", "", self.store.update_connections(final))
        except Exception as exc:  # the records are committed; only the connection's final counters are missing
            self.counters.inc("store.connection_update_failed", type(exc).__name__, len(final))
            log.warning("storing the final facts of %d closed connections failed: %s", len(final), exc)

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

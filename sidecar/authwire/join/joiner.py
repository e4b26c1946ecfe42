"""Join: attach to each event (its row: authwire.store.columns.event_row) the kernel's facts about the TCP
connection it arrived on.

Rule (first match wins, connections of the report's 4-tuple, newest SYN first):

1. No kernel inspector -> JOIN_STATUS_INSPECTOR_OFF, no connection.
2. EXACT: the newest connection whose SYN is at or before the request start and which was open then
   (not closed, or closed at/after the start). Closed connections stay candidates for the table's grace
   period, so reports sent after the connection ended ("late reports") still join. A connection seen
   mid-stream (its SYN predates the inspector) is taken as open since before any request on it.
   A start time in whole milliseconds (nginx's clock) may precede its connection's SYN by up to 1 ms:
   for such times only, a connection whose SYN is within 1 ms after the start is taken when nothing
   matches exactly.
   A connection to which reports with a different gateway connection id (AuthEvent.gateway_connection_id,
   same gateway node) were already joined is skipped: the gateway itself says it is another connection.
3. Otherwise the report waits, at most `wait` seconds, for the kernel's event about its tuple: the
   connection table calls us back (add_listener, from its poller thread) and the check above is redone.
   The wait only ever ends in a connection that satisfies rule 2, so a report that raced ahead of the
   kernel is never joined to an OLDER connection that used the same tuple (port reuse): that one was
   closed before the new SYN, hence before the request started.
4. Still nothing -> JOIN_STATUS_NO_CONNECTION, no connection.

Addresses are compared in canonical text, IPv4-mapped IPv6 (::ffff:a.b.c.d) as plain IPv4, because
dual-stack gateways report v4 peers that way while the kernel sees IPv4 packets (validation has made event
rows' addresses canonical; `join`/`join_batch` on AuthEvent messages canonicalize them first).

Enrichment (record.proto Join; returned as the row's six join columns, store.columns.join_message):
- behind_proxy: forwarded_for is set. The kernel facts then describe the TCP peer (the proxy or load
  balancer), never the client named in forwarded_for, which stays in the event.
- connection_age: request start - SYN time (unset when the SYN was not seen: mid-stream).
- kernel_request_index: this report's number (from 1) among the reports joined to that connection uid by
  this sidecar, in join order. Tracked for the newest MAX_TRACKED connections only (LRU): a connection
  that falls out starts again at 1 (counted as join.index_forgotten).
- waited: time the report spent waiting for the kernel (rule 3).
- kernel_events_lost: events the inspector lost (ConnectionTable.events_lost(): ring-buffer reserve
  failures, parse errors, flow evictions) in the window that could have affected this record: for EXACT,
  from the connection's SYN to the join; otherwise from LOST_LOOKBACK_S before the request start to the
  join. The cumulative counter is read at most every SAMPLE_INTERVAL_S (reading the per-CPU kernel map
  costs more than a join) and the sample at or before the window start is the base, so a window may
  include losses from up to one interval before it; losses in the last interval before the join show on
  the next records instead. Windows older than the kept history (LOST_HISTORY_S) start at the oldest
  sample; the first sample is taken when the joiner starts.
- The connection: the facts the store already keeps for it (`known(uid)`: those of its first join, or of its
  close), else a snapshot built now (counters, state and close time as the kernel has them, the SYN annotated
  by authwire.join.fingerprint, the Community ID as the table computed it). Selection reads only uid, SYN
  and close times (ConnectionTable.candidate_times), so a record on a known keep-alive connection costs no
  Connection message and no kernel map read.

Counters: ("join", <status name>) per join; ("join.wait", "started" / "found" / "timed_out") for reports
that had to wait; ("join.gateway_conn_mismatch", "") candidates skipped by the gateway-connection-id rule;
("join.index_forgotten", "") connections dropped from the request-index memory.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from authwire.addresses import normalize_ip
from authwire.counters import Counters
from authwire.join import fingerprint
from authwire.store.columns import INDEX, event_row, join_message
from authwire.v1 import auth_event_pb2, connection_pb2, record_pb2

MAX_TRACKED = 262_144  # connections whose report count and gateway connection id are remembered
SAMPLE_INTERVAL_S = 0.05
LOST_HISTORY_S = 600.0
LOST_LOOKBACK_S = 60.0
MS_SLACK_NS = 1_000_000
# What the join reads of an event row (authwire.store.columns.event_row).
_START, _XFF, _GATEWAY_NODE, _GATEWAY_CONN = (INDEX[n] for n in ("time_ns", "forwarded_for", "gateway_node",
                                                                  "gateway_connection_id"))
_CLIENT_IP, _CLIENT_PORT, _SERVER_IP, _SERVER_PORT = (INDEX[n] for n in ("client_ip", "client_port", "server_ip",
                                                                         "server_port"))

Key = tuple[str, int, str, int]
# (connection, the row's six join columns: status, kernel_events_lost, connection_age ns | None,
# kernel_request_index, behind_proxy, waited ns | None): store.columns.join_columns / join_message.
JoinResult = tuple[connection_pb2.Connection | None, tuple]
Candidate = tuple[str, int, int, bool, object]  # ConnectionTable.candidate_times(): uid, SYN ns, close ns, ...


def canonical_ip(text: str) -> str:
    """Canonical text, IPv4-mapped IPv6 as IPv4; text that is no IP is returned as is (never matches)."""
    try:
        return normalize_ip(text)
    except ValueError:
        return text


def _ns(ts) -> int:
    return ts.seconds * 1_000_000_000 + ts.nanos


def _conn_key(conn: connection_pb2.Connection) -> Key:
    return (canonical_ip(conn.client.ip), conn.client.port, canonical_ip(conn.server.ip), conn.server.port)


class _LostHistory:
    """Samples of the table's cumulative events_lost() over wall-clock time, to answer 'lost since t'."""

    def __init__(self, read) -> None:
        self._read = read
        self._times: list[int] = []
        self._values: list[int] = []
        self._memo: list = [None, {}]  # (now_ns, {since_ns: lost}) of the latest batch
        self.sample(time.time_ns())  # the baseline: losses before the first join are not hidden

    def sample(self, now_ns: int) -> int:
        if self._times and now_ns - self._times[-1] < SAMPLE_INTERVAL_S * 1e9:
            return self._values[-1]
        value = int(self._read())
        self._times.append(now_ns)
        self._values.append(value)
        horizon = now_ns - int(LOST_HISTORY_S * 1e9)
        old = bisect.bisect_right(self._times, horizon) - 1  # keep the newest sample older than the horizon
        if old > 0:
            del self._times[:old]
            del self._values[:old]
        return value

    def lost_since(self, since_ns: int, now_ns: int) -> int:
        memo = self._memo
        if memo[0] != now_ns:  # a batch shares its now: records of one connection share their window too
            memo[0], memo[1] = now_ns, {}
        lost = memo[1].get(since_ns)
        if lost is None:
            now_value = self.sample(now_ns)
            i = bisect.bisect_right(self._times, since_ns) - 1
            lost = memo[1][since_ns] = max(now_value - self._values[max(i, 0)], 0)
        return lost


class _Tracked:
    __slots__ = ("reports", "gateway")

    def __init__(self) -> None:
        self.reports = 0
        self.gateway: tuple[str, int] | None = None  # (gateway node, gateway connection id) of its reports


class Joiner:
    """Joins AuthEvents to connections of a ConnectionTable (None = no inspector: INSPECTOR_OFF)."""

    def __init__(self, table, wait: float, counters: Counters) -> None:
        self.table = table
        self.wait = max(float(wait), 0.0)
        self.counters = counters
        self._tracked: OrderedDict[str, _Tracked] = OrderedDict()
        # Per tuple, in arrival order: woken first-come first-served, so a connection's reports get their
        # kernel_request_index in the order they arrived.
        self._waiters: dict[Key, list[asyncio.Event]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lost = _LostHistory(table.events_lost) if table is not None else None
        # uid -> the Connection facts already kept for it (the store's), or None: set by the pipeline.
        self.known: Callable[[str], connection_pb2.Connection | None] = lambda uid: None

    # -- kernel side: woken from the table's poller thread ---------------------------------------------

    def _ensure_listener(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self.table.add_listener(self._on_connection)

    def _on_connection(self, conn: connection_pb2.Connection) -> None:
        """Poller thread. Cheap when nobody waits: one dict truth test."""
        if not self._waiters:
            return
        key = _conn_key(conn)
        if key in self._waiters and self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._wake, key)
            except RuntimeError:  # loop closed during shutdown: nobody is waiting any more
                pass

    def _wake(self, key: Key) -> None:
        for waiter in self._waiters.get(key, ()):
            waiter.set()

    # -- selection -------------------------------------------------------------------------------------

    def _select(self, key: Key, start_ns: int, gateway: tuple[str, int] | None,
                candidates: list[Candidate] | None = None) -> Candidate | None:
        # Gateways on nginx report start times truncated to the millisecond (ngx.req.start_time()), which
        # can put the start of a connection's first request up to 1 ms BEFORE its SYN. For such times a
        # connection whose SYN falls in (start, start + 1 ms] is accepted, but only when no connection
        # matches exactly; precise (sub-ms) times get no slack at all.
        slack = MS_SLACK_NS if start_ns % 1_000_000 == 0 else 0
        fallback = None
        for cand in self.table.candidate_times(*key) if candidates is None else candidates:
            uid, syn_ns, close_ns, mid_stream, _ = cand
            if syn_ns and not mid_stream and syn_ns > start_ns:
                # Opened after the request started: a later connection on this tuple.
                if fallback is None and syn_ns <= start_ns + slack and self._same_gateway(uid, gateway):
                    fallback = cand
                continue
            if close_ns and close_ns < start_ns:
                # Closed before the request started. Candidates are newest first, so every older one
                # closed even earlier: none of them can be this request's connection.
                break
            if not self._same_gateway(uid, gateway):
                continue
            return cand
        return fallback

    def _same_gateway(self, uid: str, gateway: tuple[str, int] | None) -> bool:
        """False when reports from another gateway connection were already joined to connection uid."""
        if gateway is None:
            return True
        tracked = self._tracked.get(uid)
        if tracked is None or tracked.gateway is None or tracked.gateway == gateway:
            return True
        self.counters.inc("join.gateway_conn_mismatch")
        return False

    async def join_row(self, row: tuple) -> JoinResult:
        """Join one event row (authwire.store.columns.event_row: validated, addresses canonical)."""
        if self.table is None:
            return self._inspector_off(row)
        self._ensure_listener()
        key, start_ns, gateway = self._parse(row)
        began = time.monotonic()
        conn = self._select(key, start_ns, gateway)
        if conn is None and self.wait > 0:
            self.counters.inc("join.wait", "started")
            conn = await self._wait_for(key, start_ns, gateway, began + self.wait)
            self.counters.inc("join.wait", "found" if conn is not None else "timed_out")
            self.counters.observe("join.wait_seconds", time.monotonic() - began)
        if conn is not None:
            self.counters.inc("join", "EXACT")
        return self._result(row, conn, start_ns, gateway, time.monotonic() - began)

    def _join_now(self, row: tuple, parsed: tuple[Key, int, tuple[str, int] | None], candidates: list[Candidate],
                  now_ns: int) -> JoinResult | None:
        """The join when it needs no waiting, else None (then join_row() must run: it waits)."""
        key, start_ns, gateway = parsed
        conn = self._select(key, start_ns, gateway, candidates)
        if conn is None and self.wait > 0:
            return None
        return self._result(row, conn, start_ns, gateway, 0.0, now_ns)

    def _inspector_off(self, row: tuple) -> JoinResult:
        self.counters.inc("join", "INSPECTOR_OFF")
        return None, (record_pb2.JOIN_STATUS_INSPECTOR_OFF, 0, None, 0, bool(row[_XFF]), None)

    @staticmethod
    def _parse(row: tuple) -> tuple[Key, int, tuple[str, int] | None]:
        key = (row[_CLIENT_IP], row[_CLIENT_PORT], row[_SERVER_IP], row[_SERVER_PORT])
        gateway = (row[_GATEWAY_NODE], row[_GATEWAY_CONN]) if row[_GATEWAY_CONN] else None
        return key, row[_START], gateway

    def _result(self, row: tuple, cand: Candidate | None, start_ns: int,
                gateway: tuple[str, int] | None, waited: float, now_ns: int | None = None) -> JoinResult:
        behind_proxy = bool(row[_XFF])
        waited_ns = int(waited * 1e9) if waited > 0.0005 else None
        if now_ns is None:
            now_ns = time.time_ns()
        if cand is None:
            lost = self._lost.lost_since(start_ns - int(LOST_LOOKBACK_S * 1e9), now_ns)
            self.counters.inc("join", "NO_CONNECTION")
            return None, (record_pb2.JOIN_STATUS_NO_CONNECTION, lost, None, 0, behind_proxy, waited_ns)
        uid, syn_ns, _, mid_stream, handle = cand
        # The facts the store keeps for a connection are those of its first join (then its close): build
        # the Connection (kernel map read, message) only for a connection the store does not know yet.
        snapshot = self.known(uid)
        if snapshot is None:
            snapshot = self.table.connection(handle)
            if snapshot.syn.ip_version and not snapshot.syn.signature:
                fingerprint.annotate(snapshot.syn)
        syn_ns = syn_ns if not mid_stream else 0
        age = max(start_ns - syn_ns, 0) if syn_ns else None
        index = self._count_report(uid, gateway)
        lost = self._lost.lost_since(syn_ns or start_ns, now_ns)
        return snapshot, (record_pb2.JOIN_STATUS_EXACT, lost, age, index, behind_proxy, waited_ns)

    async def _wait_for(self, key: Key, start_ns: int, gateway: tuple[str, int] | None,
                        deadline: float) -> Candidate | None:
        waiter = asyncio.Event()
        self._waiters.setdefault(key, []).append(waiter)
        try:
            while True:
                # Clear, then re-check: a wake-up that arrives after the check sets the event again, so
                # none is lost (the callback runs on this loop, never between these two lines).
                waiter.clear()
                conn = self._select(key, start_ns, gateway)
                remaining = deadline - time.monotonic()
                if conn is not None or remaining <= 0:
                    return conn
                try:
                    await asyncio.wait_for(waiter.wait(), remaining)
                except TimeoutError:
                    return self._select(key, start_ns, gateway)
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[key]

    def _count_report(self, uid: str, gateway: tuple[str, int] | None) -> int:
        tracked = self._tracked.get(uid)
        if tracked is None:
            tracked = self._tracked[uid] = _Tracked()
            if len(self._tracked) > MAX_TRACKED:
                self._tracked.popitem(last=False)
                self.counters.inc("join.index_forgotten")
        else:
            self._tracked.move_to_end(uid)
        tracked.reports += 1
        if tracked.gateway is None and gateway is not None:
            tracked.gateway = gateway
        return tracked.reports

    async def join_rows(self, rows: Sequence[tuple]) -> list[JoinResult]:
        """Join a batch of event rows. Reports that need no waiting are joined inline, in order (a task per
        event costs ~10 us at ingest rates); only those that must wait for the kernel become tasks,
        concurrently, so one early report never holds up the rest of its batch."""
        if self.table is None:
            return [self._inspector_off(r) for r in rows]
        self._ensure_listener()
        now_ns = time.time_ns()
        parsed = [self._parse(r) for r in rows]
        candidates = self.table.candidate_times_of([p[0] for p in parsed])  # one lock for the batch
        results: list[JoinResult | None] = [self._join_now(r, p, c, now_ns)
                                            for r, p, c in zip(rows, parsed, candidates, strict=True)]
        exact = sum(1 for r in results if r is not None and r[0] is not None)  # counted once per batch
        if exact:
            self.counters.inc("join", "EXACT", exact)
        later = [i for i, r in enumerate(results) if r is None]
        if later:
            for i, r in zip(later, await asyncio.gather(*(self.join_row(rows[i]) for i in later)), strict=True):
                results[i] = r
        return results  # type: ignore[return-value]

    # -- AuthEvent messages (tests, tools): addresses canonicalized here, the Join as a message ------------

    async def join(self, event: auth_event_pb2.AuthEvent) -> tuple[connection_pb2.Connection | None, record_pb2.Join]:
        conn, cols = await self.join_row(_row_of(event))
        return conn, join_message(cols)

    async def join_batch(self, events: Sequence[auth_event_pb2.AuthEvent]
                         ) -> list[tuple[connection_pb2.Connection | None, record_pb2.Join]]:
        return [(conn, join_message(cols)) for conn, cols in await self.join_rows([_row_of(e) for e in events])]


def _row_of(event: auth_event_pb2.AuthEvent) -> tuple:
    row = list(event_row(event))
    row[_CLIENT_IP], row[_SERVER_IP] = canonical_ip(row[_CLIENT_IP]), canonical_ip(row[_SERVER_IP])
    return tuple(row)

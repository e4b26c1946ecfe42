"""The detection engine: runs every enabled detector on each committed record, after the ack, and keeps alerts.

Data path: Pipeline.subscribe_rows(engine.submit) hands over each committed batch's plain rows
(authwire.store.columns; no EnrichedRecord is built for the detections) on the event loop; submit only
queues them (bounded: beyond `detect_queue` records a batch is dropped and counted as
`detect.dropped{queue_full}`), so detection never delays an ack. The engine's own task takes the queued
rows off in slices of up to CHUNK (after waiting up to COALESCE_S for more when few are queued: one pass
per few records would cost more per record), reads each row's few fields once (authwire.detect.fields) and
gives them to every detector.

Deduplication: an alert is about one (detection, key). The first match raises it (written at once); further
matches of the same key update it (counts, samples, last_time) and it is rewritten at most every
UPDATE_EVERY_S; a key with no match for the detection's window is closed, and a later match raises a new
alert. So one alert per key and window, never one per request. Open alerts are bounded (`detect_max_keys`
per detection, LRU; a forgotten one is written out first and counted as `detect.alerts_forgotten`).

Every alert is committed to the alert store (authwire.store.alerts) before anything reports it: then it is
appended to the alerts JSONL file (when `--jsonl` is on), the tail is woken and alert subscribers
(`subscribe_alerts`, e.g. OTLP export) are called. When `detect_block` names the detection and the kernel
inspector runs, the alert's source IPs go into the kernel block list (inspector.block) with that TTL; with
`--enforce` off the kernel only counts what it would have dropped.

Counters (`authwire stats`): detect.records, detect.cpu_ns (the detectors' CPU), detect.dropped{reason},
detect.forgotten{detection}, detect.rate_limited{detection}, alerts.raised{detection},
alerts.updated{detection}, alerts.write_failed, alerts.jsonl_written, alerts.jsonl_failed,
alerts.subscriber_failed{name}, detect.blocked{detection}, detect.block_refused{detection},
detect.block_skipped{reason}.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from pathlib import Path

from authwire.counters import Counters
from authwire.detect.credential_replay import CredentialReplay
from authwire.detect.fields import RecordFields
from authwire.detect.finding import MAX_LISTED, Detector, Finding
from authwire.detect.keepalive_stuffing import KeepaliveStuffing
from authwire.detect.settings import DetectSettings
from authwire.detect.stack_stuffing import StackStuffing
from authwire.detect.ua_stack_mismatch import UaStackMismatch
from authwire.records import to_dict
from authwire.store.alerts import AlertStore
from authwire.store.jsonl import RotatingFile
from authwire.v1 import auth_event_pb2, record_pb2

log = logging.getLogger(__name__)

UPDATE_EVERY_S = 1.0     # an open alert is rewritten at most this often while it keeps matching
CHUNK = 512              # records per slice of work before yielding the event loop
COALESCE_S = 0.05        # while fewer than CHUNK records are queued, wait this long for more before a pass
MAX_REQUEST_IDS = 32     # per alert: the first 16 and the latest 16
MAX_UIDS = 32
RETENTION_EVERY_S = 60.0

AlertSubscriber = Callable[[record_pb2.Alert, bool], None]


def build_detectors(settings: DetectSettings) -> list[Detector]:
    s = settings
    made: dict[str, Detector] = {
        "stack_stuffing": lambda: StackStuffing(s.stack_stuffing_window, s.stack_stuffing_min_failures,
                                                s.stack_stuffing_min_ips, s.stack_stuffing_min_credentials,
                                                s.stack_stuffing_min_failure_ratio, s.max_keys),
        "credential_replay": lambda: CredentialReplay(s.credential_replay_window, s.credential_replay_concurrent,
                                                      s.max_keys),
        "ua_stack_mismatch": lambda: UaStackMismatch(s.ua_stack_mismatch_window,
                                                     s.ua_stack_mismatch_max_new_per_minute, s.max_keys),
        "keepalive_stuffing": lambda: KeepaliveStuffing(s.keepalive_stuffing_window,
                                                        s.keepalive_stuffing_min_failures,
                                                        s.keepalive_stuffing_min_credentials, s.max_keys),
    }
    return [made[name]() for name in settings.enabled]


def alerts_jsonl_path(jsonl: str) -> Path:
    """records.jsonl -> records.alerts.jsonl in the same directory."""
    path = Path(jsonl)
    return path.with_name(f"{path.stem}.alerts.jsonl")


def _merge(existing: Sequence[str], new: Sequence[str], bound: int) -> list[str]:
    merged = list(dict.fromkeys([*existing, *new]))
    if len(merged) > bound:  # keep the first ones (how it started) and the latest ones
        merged = merged[:bound // 2] + merged[-(bound - bound // 2):]
    return merged


class _Open:
    """An alert being kept up to date while its key keeps matching."""

    __slots__ = ("alert", "detector", "key", "last_hit", "hits", "dirty", "written", "last_write", "blocked")

    def __init__(self, alert: record_pb2.Alert, detector: Detector, key, t: float) -> None:
        self.alert = alert
        self.detector = detector
        self.key = key
        self.last_hit = t
        self.hits = 0
        self.dirty = True
        self.written = False
        self.last_write = 0.0
        self.blocked: set[str] = set()


class DetectionEngine:
    def __init__(self, settings: DetectSettings, store: AlertStore | None, counters: Counters,
                 jsonl_path: str | Path | None = None, jsonl_max_bytes: int = 0, jsonl_keep: int = 5,
                 inspector=None, retention_age_s: float = 0.0, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.store = store
        self.counters = counters
        self.detectors = build_detectors(settings)
        # Which detectors read a record of each outcome (a call saved per record and detector that would
        # only return at once).
        self._every_outcome = tuple(d for d in self.detectors if d.outcomes is None)
        self._by_outcome = {o: tuple(d for d in self.detectors if d.outcomes is None or o in d.outcomes)
                            for o in (auth_event_pb2.AUTH_OUTCOME_SUCCESS, auth_event_pb2.AUTH_OUTCOME_FAILURE)}
        self.inspector = inspector
        self.retention_age_s = retention_age_s
        self.clock = clock
        self.monotonic = monotonic
        self._jsonl = RotatingFile(jsonl_path, jsonl_max_bytes, jsonl_keep) if jsonl_path else None
        self._fields = RecordFields()
        self._open: OrderedDict[tuple[str, object], _Open] = OrderedDict()
        self._max_open = settings.max_keys * max(len(self.detectors), 1)
        self._forced: list[_Open] = []  # forgotten while dirty: written with the next commit
        self._queue: deque[list[tuple]] = deque()  # committed plain rows (shared, read-only)
        self._queued = 0
        self._wakeup: asyncio.Event | None = None
        self._written: asyncio.Condition | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self._subscribers: list[tuple[str, AlertSubscriber]] = []
        self._seen_forgotten = {d.name: 0 for d in self.detectors}
        self._seen_rate_limited = 0

    # --- the hooks --------------------------------------------------------------------------------------
    def submit(self, rows: list[tuple]) -> None:
        """Pipeline row subscriber: queue a committed batch's plain rows (fast; drops beyond the bound, counted)."""
        if self._queued + len(rows) > self.settings.queue or self._closing:
            self.counters.inc("detect.dropped", "queue_full" if not self._closing else "closing", len(rows))
            return
        self._queue.append(rows)
        self._queued += len(rows)
        if self._wakeup is not None:
            self._wakeup.set()

    def subscribe_alerts(self, callback: AlertSubscriber, name: str | None = None) -> None:
        """callback(alert, new) on the event loop after each alert write is committed (new=False: an update)."""
        self._subscribers.append((name or getattr(callback, "__qualname__", repr(callback)), callback))

    # --- the work ---------------------------------------------------------------------------------------
    def process(self, rows: Sequence[tuple]) -> None:
        """Run every detector on each record's plain row (synchronous; the engine's task calls it in slices)."""
        f = self._fields
        by_outcome = self._by_outcome
        every = self._every_outcome
        hit = self._hit
        start = time.thread_time_ns()
        for row in rows:
            f.fill(row)
            for detector in by_outcome.get(f.outcome, every):
                key = detector.observe(f)
                if key is not None:
                    hit(detector, key, f)
        self.counters.inc("detect.cpu_ns", n=time.thread_time_ns() - start)
        self.counters.inc("detect.records", n=len(rows))

    def _hit(self, detector: Detector, key, f: RecordFields) -> None:
        ident = (detector.name, key)
        current = self._open.get(ident)
        if current is not None and f.time - current.last_hit > detector.window:
            self._close(ident, current)
            current = None
        if current is None:
            finding = detector.finding(key)
            if finding is None:
                return
            current = self._open[ident] = _Open(self._new_alert(detector.name, finding, f), detector, key, f.time)
            current.hits = 1
            if len(self._open) > self._max_open:
                ident_old, old = self._open.popitem(last=False)
                self.counters.inc("detect.alerts_forgotten", ident_old[0])
                if old.dirty:
                    self._forced.append(old)
            self.counters.inc("alerts.raised", detector.name)
            return
        self._open.move_to_end(ident)
        current.hits += 1
        if f.time > current.last_hit:
            current.last_hit = f.time
        current.dirty = True

    def _close(self, ident, current: _Open) -> None:
        del self._open[ident]
        if current.dirty:
            self._forced.append(current)

    def _new_alert(self, detection: str, finding: Finding, f: RecordFields) -> record_pb2.Alert:
        alert = record_pb2.Alert(id="A" + secrets.token_hex(8), detection=detection)
        alert.time.FromNanoseconds(int(self.clock() * 1e9))
        first = finding.first_time or f.time
        alert.first_time.FromNanoseconds(int(first * 1e9))
        alert.last_time.FromNanoseconds(int(f.time * 1e9))
        self._apply(alert, finding, hits=1)
        return alert

    def _apply(self, alert: record_pb2.Alert, finding: Finding, hits: int) -> None:
        alert.severity = max(alert.severity, finding.severity)
        alert.summary = finding.summary
        alert.key = finding.key
        alert.stack = finding.stack
        if finding.client:
            alert.client.ip = finding.client
        for name, value in finding.evidence.items():
            alert.evidence[name] = max(alert.evidence.get(name, value), value)
        alert.evidence["matched_requests"] = hits
        for field, new, bound in (("request_ids", finding.request_ids, MAX_REQUEST_IDS),
                                  ("clients", finding.clients, MAX_LISTED),
                                  ("connection_uids", finding.connection_uids, MAX_UIDS),
                                  ("credentials", finding.credentials, MAX_LISTED)):
            target = getattr(alert, field)
            merged = _merge(target, new, bound)
            if merged != list(target):
                del target[:]
                target.extend(merged)
        alert.updated_time.FromNanoseconds(int(self.clock() * 1e9))

    def take_changes(self, force: bool = False) -> list[_Open]:
        """The alerts to write now: new ones, updates due (UPDATE_EVERY_S), closed or forgotten dirty ones."""
        now = self.monotonic()
        due = self._forced
        self._forced = []
        for current in self._open.values():
            if current.dirty and (force or not current.written or now - current.last_write >= UPDATE_EVERY_S):
                due.append(current)
        for current in due:
            finding = current.detector.finding(current.key)
            if finding is not None:
                self._apply(current.alert, finding, current.hits)
            current.alert.last_time.FromNanoseconds(int(current.last_hit * 1e9))
            if current.written:
                self.counters.inc("alerts.updated", current.detector.name)
            self._block(current)
            current.dirty = False
            current.last_write = now
        return due

    def _block(self, current: _Open) -> None:
        name = current.detector.name
        ttl = self.settings.block.get(name)
        if ttl is None:
            return
        finding_ips = [ip for ip in current.alert.clients if ip not in current.blocked]
        if not finding_ips:
            return
        if self.inspector is None:
            self.counters.inc("detect.block_skipped", "no_inspector", len(finding_ips))
            current.blocked.update(finding_ips)  # counted once per IP and alert, not on every update
            return
        for ip in finding_ips[:MAX_LISTED]:
            current.blocked.add(ip)
            try:
                ok = self.inspector.block(ip, ttl, f"{current.alert.id} {name}")
            except Exception as exc:  # the block list must never stop detection
                log.warning("block %s failed: %s", ip, exc)
                ok = False
            if ok:
                current.alert.blocked.append(ip)
                self.counters.inc("detect.blocked", name)
            else:
                self.counters.inc("detect.block_refused", name)

    def _count_detector_state(self) -> None:
        for detector in self.detectors:
            n = detector.forgotten()
            seen = self._seen_forgotten[detector.name]
            if n > seen:
                self.counters.inc("detect.forgotten", detector.name, n - seen)
                self._seen_forgotten[detector.name] = n
            limited = getattr(detector, "rate_limited", 0)
            if limited > self._seen_rate_limited:
                self.counters.inc("detect.rate_limited", detector.name, limited - self._seen_rate_limited)
                self._seen_rate_limited = limited

    def commit(self, changes: list[_Open]) -> None:
        """Write changed alerts (store, then JSONL); blocking disk I/O: called in a worker thread."""
        alerts = [c.alert for c in changes]
        if self.store is not None:
            self.store.upsert(alerts)
        if self._jsonl is not None:
            try:
                self._jsonl.write([json.dumps(to_dict(a), ensure_ascii=False) + "\n" for a in alerts])
                self.counters.inc("alerts.jsonl_written", n=len(alerts))
            except OSError as exc:
                self.counters.inc("alerts.jsonl_failed", type(exc).__name__, len(alerts))

    def _notify(self, changes: list[_Open]) -> None:
        for current in changes:
            new = not current.written
            current.written = True
            for name, callback in self._subscribers:
                try:
                    callback(current.alert, new)
                except Exception:
                    if not self.counters.get("alerts.subscriber_failed", name):
                        log.exception("alert subscriber %s failed", name)
                    self.counters.inc("alerts.subscriber_failed", name)

    # --- the task ---------------------------------------------------------------------------------------
    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._written = asyncio.Condition()
        if self._queue:
            self._wakeup.set()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="authwire-detect")

    async def _run(self) -> None:
        assert self._wakeup is not None
        next_retention = time.monotonic()
        while True:
            dirty = any(c.dirty for c in self._open.values()) or bool(self._forced)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), UPDATE_EVERY_S if dirty else RETENTION_EVERY_S)
            self._wakeup.clear()
            if self._queue and self._queued < CHUNK and not self._closing:
                # Let a few more batches come: one pass over more rows costs less per record than a pass
                # per small batch (fixed costs per pass, warmer caches), and alerts wait at most this long.
                await asyncio.sleep(COALESCE_S)
            await self._drain()
            await self._flush(force=self._closing)
            if self._closing:
                return
            if self.store is not None and self.retention_age_s > 0 and time.monotonic() >= next_retention:
                next_retention = time.monotonic() + RETENTION_EVERY_S
                try:
                    await asyncio.to_thread(self.store.apply_retention, self.retention_age_s)
                except Exception as exc:  # retention must never stop detection
                    log.error("alert retention failed: %s", exc)
                    self.counters.inc("alerts.retention_failed")

    def _take(self, limit: int) -> list[tuple]:
        """Up to `limit` queued rows, across batches (a copy: the batches are shared with other subscribers)."""
        rows: list[tuple] = []
        queue = self._queue
        while queue and len(rows) < limit:
            batch = queue[0]
            room = limit - len(rows)
            if len(batch) <= room:
                queue.popleft()
                rows += batch
            else:
                rows += batch[:room]
                queue[0] = batch[room:]
        self._queued -= len(rows)
        return rows

    async def _drain(self) -> None:
        while self._queue:
            rows = self._take(CHUNK)
            try:
                self.process(rows)
            except Exception:  # a detector bug must not stop the others for good: count, log once
                if not self.counters.get("detect.failed"):
                    log.exception("detection failed on a batch (counted as detect.failed)")
                self.counters.inc("detect.failed", n=len(rows))
            await self._flush()
            if self._queue:
                await asyncio.sleep(0)  # a slice at a time: the loop stays free to ack reports
        self._count_detector_state()

    async def _flush(self, force: bool = False) -> None:
        changes = self.take_changes(force)
        if not changes:
            return
        try:
            await asyncio.to_thread(self.commit, changes)
        except Exception as exc:  # not committed: not reported; written again with the next flush
            log.error("alert store write of %d alerts failed: %s", len(changes), exc)
            self.counters.inc("alerts.write_failed", type(exc).__name__, len(changes))
            for current in changes:
                current.dirty = True
                if self._open.get((current.detector.name, current.key)) is not current:
                    self._forced.append(current)  # closed or forgotten meanwhile: still owed a write
            return
        self._notify(changes)
        assert self._written is not None
        async with self._written:
            self._written.notify_all()

    async def wait_for_alerts(self, timeout: float) -> None:
        """Return after the next alert write, or after timeout (TailAlerts)."""
        if self._written is None:
            await asyncio.sleep(timeout)
            return
        async with self._written:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._written.wait(), timeout)

    async def close(self) -> None:
        """Process what is queued, write every open alert's latest state, stop (SIGTERM path)."""
        await asyncio.sleep(0)  # let the pipeline's last call_soon(subscriber) run first
        self._closing = True
        if self._task is not None and self._wakeup is not None:
            self._wakeup.set()
            await self._task
        if self._jsonl is not None:
            self._jsonl.close()

    # --- introspection (tests, bench) ---------------------------------------------------------------------
    def open_alerts(self) -> list[record_pb2.Alert]:
        return [c.alert for c in self._open.values()]

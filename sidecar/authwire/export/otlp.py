"""OTLP log export: every committed record (and alert) to an OpenTelemetry Collector over gRPC.

The pipeline hands each committed batch's plain rows (Pipeline.subscribe_rows) to `offer` on the event
loop; it only appends to a bounded queue. One sender task takes up to otlp_batch_records at a time, encodes
them (authwire.export.otlp_logs) on the event loop, ENCODE_SLICE records between yields (a worker thread
cost ~1 us more CPU per record here than it kept off the loop: GIL handoffs, rows read on another core),
and calls LogsService/Export. Failures the OTLP spec calls retryable (UNAVAILABLE, DEADLINE_EXCEEDED,
RESOURCE_EXHAUSTED, ...) are retried with exponential backoff and jitter for up to MAX_RETRY_SECONDS;
meanwhile new records queue up to otlp_queue_records, and past that are dropped. Every record that does not
reach the collector is counted as otlp.dropped{reason}: queue_full, retries_exhausted, rejected (the
collector's partial success), the status code of a non-retryable failure, or shutdown.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from prometheus_client.core import GaugeMetricFamily, Metric

from authwire.counters import Counters
from authwire.export.otlp_logs import GATEWAY, RecordEncoder, alert_log_record, export_request, resource_head
from authwire.export.otlp_settings import OtlpSettings, from_config, resolve
from authwire.v1 import record_pb2

log = logging.getLogger(__name__)

EXPORT_METHOD = "/{}/Export".format(logs_service_pb2.DESCRIPTOR.services_by_name["LogsService"].full_name)
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
             grpc.StatusCode.ABORTED, grpc.StatusCode.CANCELLED, grpc.StatusCode.OUT_OF_RANGE,
             grpc.StatusCode.DATA_LOSS}
BACKOFF_INITIAL = 0.1
BACKOFF_MAX = 5.0
MAX_RETRY_SECONDS = 60.0       # one batch is retried this long, then dropped (retries_exhausted)
MAX_REQUEST_BYTES = 3 << 20    # below the collector's default 4 MiB receive limit
SHUTDOWN_FLUSH_SECONDS = 3.0
MAX_RESOURCES = 1024           # encoded resource heads kept (one per gateway kind, node and version)
_NO_GATEWAY = (0, "", "")      # the resource of alerts
ENCODE_SLICE = 200             # records encoded between yields to the event loop (~0.2-0.4 ms of work)
CHANNEL_OPTIONS = [
    # Reconnect soon after the collector comes back (gRPC's default backoff grows to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", int(BACKOFF_MAX * 1000)),
    ("grpc.keepalive_time_ms", 30_000), ("grpc.max_send_message_length", 8 << 20),
]


def channel_credentials(settings: OtlpSettings) -> grpc.ChannelCredentials:
    def read(path: str) -> bytes | None:
        return Path(path).read_bytes() if path else None

    return grpc.ssl_channel_credentials(root_certificates=read(settings.ca_file),
                                        private_key=read(settings.key_file),
                                        certificate_chain=read(settings.cert_file))


class OtlpExporter:
    def __init__(self, settings: OtlpSettings, counters: Counters) -> None:
        self.settings = settings
        self.counters = counters
        # Plain rows (shared with the other subscribers, read-only) and alerts as encoded LogRecord bytes
        self._queue: collections.deque[tuple | bytes] = collections.deque()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._encoder = RecordEncoder()
        self._heads: dict[tuple[int, str, str], bytes] = {}
        self._channel: grpc.aio.Channel | None = None
        self._task: asyncio.Task | None = None
        self._failing_since: float | None = None
        self._logged_errors: set[str] = set()
        self.in_flight = 0

    # --- intake (event loop; must return fast) ---

    def offer(self, records: list[tuple]) -> None:
        """Pipeline row subscriber: queue the committed batch's plain rows (read-only references, no copy)."""
        room = self.settings.queue_records - self.queued()
        if self._closing:
            self.counters.inc("otlp.dropped", "shutdown", len(records))
            return
        if room < len(records):
            self.counters.inc("otlp.dropped", "queue_full", len(records) - max(room, 0))
            records = records[:max(room, 0)]
        self._queue.extend(records)
        if records:
            self._wakeup.set()

    def offer_alert(self, alert: record_pb2.Alert, new: bool) -> None:
        """Detection engine subscriber: alerts go the same way, as authwire.alert log records."""
        if self._closing or self.queued() >= self.settings.queue_records:
            self.counters.inc("otlp.dropped", "shutdown" if self._closing else "queue_full")
            return
        self._queue.append(alert_log_record(alert, new).SerializeToString())
        self._wakeup.set()

    def subscribe(self, pipeline: Any, detector: Any = None) -> None:
        """Export what the pipeline commits and, when detections run, the alerts they raise or update."""
        pipeline.subscribe_rows(self.offer, name="otlp")
        if detector is not None:
            detector.subscribe_alerts(self.offer_alert, name="otlp")

    def queued(self) -> int:
        return len(self._queue) + self.in_flight

    def gauges(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("authwire_otlp_queue_records", "Records waiting for (or in) an OTLP Export call",
                                value=self.queued())
        yield GaugeMetricFamily("authwire_otlp_queue_capacity_records", "otlp_queue_records",
                                value=self.settings.queue_records)

    # --- lifecycle ---

    async def start(self) -> None:
        s = self.settings
        options = [*CHANNEL_OPTIONS]
        if s.tls:
            self._channel = grpc.aio.secure_channel(s.target, channel_credentials(s), options=options)
        else:
            self._channel = grpc.aio.insecure_channel(s.target, options=options)
        self._export = self._channel.unary_unary(
            EXPORT_METHOD, request_serializer=None,  # the request is already encoded bytes
            response_deserializer=logs_service_pb2.ExportLogsServiceResponse.FromString)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="authwire-otlp")
        log.info("OTLP log export to %s (%s%s)", s.endpoint, "TLS" if s.tls else "plaintext",
                 f", {len(s.headers)} header(s)" if s.headers else "")

    async def close(self) -> None:
        """Flush for up to SHUTDOWN_FLUSH_SECONDS; what is left is counted as dropped (shutdown)."""
        await asyncio.sleep(0)  # let the pipeline's last notifications (loop.call_soon) reach offer()
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), SHUTDOWN_FLUSH_SECONDS)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        left = len(self._queue)
        if left:
            self.counters.inc("otlp.dropped", "shutdown", left)
            log.warning("OTLP export: %d records not exported at shutdown (counted as otlp.dropped{shutdown})",
                        left)
        self._queue.clear()
        if self._channel is not None:
            await self._channel.close()

    # --- sending ---

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            items = [self._queue.popleft() for _ in range(min(self.settings.batch_records, len(self._queue)))]
            self.in_flight = len(items)
            try:
                requests = await self._encode_batch(items)
                for body, n in requests:
                    await self._send(body, n)
                    self.in_flight -= n
            except asyncio.CancelledError:  # close() gave up waiting: what was in hand is lost, and counted
                self.counters.inc("otlp.dropped", "shutdown", self.in_flight)
                raise
            except Exception as exc:  # a bug must not stop export silently: count the batch and go on
                if type(exc).__name__ not in self._logged_errors:  # once per kind: a bug must not flood the log
                    self._logged_errors.add(type(exc).__name__)
                    log.exception("OTLP export of %d records failed (counted as otlp.dropped{internal_error})",
                                  len(items))
                self.counters.inc("otlp.dropped", "internal_error", self.in_flight)
            finally:
                self.in_flight = 0

    def _head(self, key: tuple[int, str, str]) -> bytes:
        head = self._heads.get(key)
        if head is None:
            if len(self._heads) >= MAX_RESOURCES:  # gateways name their node: bounded all the same
                self._heads.clear()
            head = self._heads[key] = resource_head(*key)
        return head

    def _encode(self, items: list[tuple | bytes]) -> list[tuple[bytes, int]]:
        """Encoded ExportLogsServiceRequests (each under MAX_REQUEST_BYTES) and their record counts."""
        return self._requests(self._encode_slice(items))

    async def _encode_batch(self, items: list[tuple | bytes]) -> list[tuple[bytes, int]]:
        """_encode on the event loop, ENCODE_SLICE records at a time: the loop is never held for long."""
        encoded: list[tuple[tuple[int, str, str], bytes]] = []
        for i in range(0, len(items), ENCODE_SLICE):
            if i:
                await asyncio.sleep(0)
            encoded += self._encode_slice(items[i:i + ENCODE_SLICE])
        return self._requests(encoded)

    def _encode_slice(self, items: list[tuple | bytes]) -> list[tuple[tuple[int, str, str], bytes]]:
        """(resource key, encoded LogRecord) per item: a row's gateway, or none for an alert."""
        encode = self._encoder.encode
        gateway = GATEWAY  # the row's (kind, node, version): its resource
        return [(_NO_GATEWAY, item) if item.__class__ is bytes else (item[gateway], encode(item))  # type: ignore
                for item in items]

    def _requests(self, encoded: list[tuple[tuple[int, str, str], bytes]]) -> list[tuple[bytes, int]]:
        requests: list[tuple[bytes, int]] = []
        groups: dict[tuple[int, str, str], list[bytes]] = {}  # resource (gateway) -> encoded LogRecords
        size = count = 0
        for key, record in encoded:
            n = len(record)
            if size + n > MAX_REQUEST_BYTES and count:
                requests.append((self._request(groups), count))
                groups, size, count = {}, 0, 0
            group = groups.get(key)
            if group is None:
                group = groups[key] = []
            group.append(record)
            size += n + 8
            count += 1
        if count:
            requests.append((self._request(groups), count))
        return requests

    def _request(self, groups: dict[tuple[int, str, str], list[bytes]]) -> bytes:
        return export_request([(self._head(key), records) for key, records in groups.items()])

    async def _send(self, body: bytes, n: int) -> None:
        s = self.settings
        backoff = BACKOFF_INITIAL
        first_failure: float | None = None
        compression = grpc.Compression.Gzip if s.compression == "gzip" else None
        while True:
            try:
                response = await self._export(body, timeout=s.timeout, metadata=s.headers or None,
                                              compression=compression)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                self.counters.inc("otlp.export_failed", code.name.lower())
                now = time.monotonic()
                first_failure = first_failure or now
                if self._failing_since is None:
                    self._failing_since = now
                    log.warning("OTLP export to %s failing (%s: %s); retrying, up to %d records queue meanwhile",
                                s.endpoint, code.name, _short(exc.details()), s.queue_records)
                if code not in RETRYABLE:
                    self.counters.inc("otlp.dropped", code.name.lower(), n)
                    return
                if now - first_failure > MAX_RETRY_SECONDS or (self._closing and now - first_failure > 1.0):
                    self.counters.inc("otlp.dropped", "retries_exhausted", n)
                    return
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            if self._failing_since is not None:
                log.info("OTLP export to %s resumed after %.1f s", s.endpoint, time.monotonic() - self._failing_since)
                self._failing_since = None
            rejected = min(response.partial_success.rejected_log_records, n)
            if rejected:
                self.counters.inc("otlp.dropped", "rejected", rejected)
                log.warning("OTLP collector rejected %d of %d records: %s", rejected, n,
                            _short(response.partial_success.error_message))
            self.counters.inc("otlp.exported", "logs", n - rejected)
            return


def _short(text: str, limit: int = 200) -> str:
    """A collector's message, bounded (it is not ours to trust)."""
    text = (text or "").replace("\n", " ")
    return text[:limit] + ("…" if len(text) > limit else "")


async def start(config: Any, counters: Counters) -> OtlpExporter | None:
    """The running exporter (then `subscribe` it), or None when otlp_endpoint is off.

    Raises OtlpSettingError naming the endpoint when its host does not resolve.
    """
    settings = from_config(config)
    if settings is None:
        return None
    await asyncio.to_thread(resolve, settings)
    exporter = OtlpExporter(settings, counters)
    await exporter.start()
    return exporter

"""Prometheus `/metrics`: every counter `authwire stats` shows, the duration histograms and a few gauges.

A custom collector reads Counters, the kernel inspector and the store at scrape time, so a record costs
nothing here (no per-record metric update). Names follow Prometheus conventions: `authwire_..._total` for
counters, base units (seconds, bytes), and only bounded label values: a transport, a field name, a kind, an
exception class — never a consumer, an IP or a credential (the route is public on loopback for that reason).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from authwire import __version__
from authwire.counters import Counters
from authwire.records import short_enum
from authwire.store.columns import INDEX
from authwire.v1 import auth_event_pb2 as ae


@dataclass(frozen=True)
class CounterSpec:
    metric: str   # without the authwire_ prefix and the _total suffix
    label: str    # the label name for the Counters label ("" = none; "a,b" = the label is "x/y": a=x, b=y)
    help: str
    scale: float = 1.0  # to base units (detect.cpu_ns is counted in ns, exposed in seconds)

    @property
    def labels(self) -> list[str]:
        return self.label.split(",") if self.label else []

    def values(self, label: str) -> list[str]:
        n = len(self.labels)
        parts = label.split("/", n - 1) if n > 1 else [label] if n else []
        return parts + [""] * (n - len(parts))


# Counters name -> how it is exposed. Names not listed here are still exposed (see _fallback), so a counter
# added elsewhere is never missing from /metrics; listing it gives it a better name, label and help text.
COUNTERS: dict[str, CounterSpec] = {
    "auth.records": CounterSpec("auth_records", "method,outcome,reason",
                                "Committed records by authentication method, outcome and failure reason"),
    "ingest.received": CounterSpec("ingest_received_records", "source",
                                   "Records received from gateways, by transport"),
    "ingest.accepted": CounterSpec("ingest_accepted_records", "source",
                                   "Records validated, joined and committed to the store, by transport"),
    "ingest.rejected_events": CounterSpec("ingest_rejected_records", "source",
                                          "Records refused by validation, by transport"),
    "ingest.rejected": CounterSpec("ingest_rejection_fields", "field",
                                   "Validation problems by field (one refused record may have several)"),
    "ingest.malformed": CounterSpec("ingest_malformed_records", "source",
                                    "Records that could not be decoded at all, by transport"),
    "ingest.redacted": CounterSpec("ingest_redacted_fields", "field",
                                   "Fields blanked because they looked like a secret"),
    "ingest.python_pass": CounterSpec("ingest_python_pass_records", "source",
                                      "Records the native pass left to the Python validation, by transport"),
    "gateway.dropped": CounterSpec("gateway_dropped_records", "kind",
                                   "Records the gateway plugins lost before sending (as they reported)"),
    "join": CounterSpec("joins", "status", "Records joined, by join status"),
    "join.wait": CounterSpec("join_waits", "outcome",
                             "Reports that waited for their connection's kernel event, by outcome"),
    "join.gateway_conn_mismatch": CounterSpec("join_gateway_connection_mismatches", "",
                                              "Candidate connections skipped: another gateway connection "
                                              "was already joined to them"),
    "join.index_forgotten": CounterSpec("join_index_forgotten", "",
                                        "Per-connection request indexes forgotten (bounded table full)"),
    "store.write_failed": CounterSpec("store_write_failed_records", "error",
                                      "Records whose store commit failed (not acknowledged), by error"),
    "store.lost": CounterSpec("store_lost_records", "",
                              "Records not stored (not acknowledged): the store file was removed or replaced"),
    "store.retention_deleted": CounterSpec("store_retention_deleted_records", "",
                                           "Records deleted by retention"),
    "store.retention_failed": CounterSpec("store_retention_failures", "", "Retention runs that failed"),
    "jsonl.write_failed": CounterSpec("jsonl_write_failed_records", "error",
                                      "Records in the store but not in the JSONL file, by error"),
    "subscriber.failed": CounterSpec("subscriber_failures", "subscriber",
                                     "Committed batches a subscriber (export, detections) failed on"),
    "grpc_web.errors": CounterSpec("grpc_web_errors", "kind", "gRPC-Web requests refused, by kind"),
    "envoy_als.streams": CounterSpec("envoy_als_streams", "", "Envoy access-log streams opened"),
    "envoy_als.entries": CounterSpec("envoy_als_entries", "", "Envoy access-log HTTP entries received"),
    "envoy_als.unmapped": CounterSpec("envoy_als_unmapped_entries", "reason",
                                      "Envoy access-log entries that could not be mapped, by reason"),
    "envoy_als.lost": CounterSpec("envoy_als_lost_entries", "reason",
                                  "Envoy access-log entries lost after mapping, by reason"),
    "envoy_als.read_paused": CounterSpec("envoy_als_read_pauses", "",
                                         "Times an Envoy access-log stream stopped reading because too many of "
                                         "its entries were in flight (Envoy drops what it cannot send)"),
    "envoy_als.no_identifier": CounterSpec("envoy_als_streams_without_identifier", "",
                                           "Envoy access-log streams whose first message had no identifier"),
    "envoy_als.malformed": CounterSpec("envoy_als_malformed", "kind",
                                       "Envoy access-log messages or entries that could not be decoded"),
    "detect.records": CounterSpec("detect_records", "", "Records the detections processed"),
    "detect.dropped": CounterSpec("detect_dropped_records", "reason",
                                  "Records the detections did not see (their queue was full), by reason"),
    "detect.cpu_ns": CounterSpec("detect_cpu_seconds", "", "CPU time the detections used", scale=1e-9),
    "alerts.raised": CounterSpec("alerts_raised", "detection", "Alerts raised, by detection"),
    "alerts.updated": CounterSpec("alerts_updated", "detection", "Alert updates, by detection"),
    "alerts.write_failed": CounterSpec("alerts_write_failed", "error", "Alert writes that failed, by error"),
    "access.denied": CounterSpec("access_denied_requests", "listener",
                                 "Requests refused for a missing or wrong token, by listener"),
    "http.busy": CounterSpec("http_busy_requests", "handler", "HTTP API requests refused with 429, by handler"),
    "otlp.exported": CounterSpec("otlp_exported_records", "signal",
                                 "Records (and alerts) the OTLP receiver accepted"),
    "otlp.dropped": CounterSpec("otlp_dropped_records", "reason",
                                "Records (and alerts) not exported over OTLP, by reason"),
    "otlp.export_failed": CounterSpec("otlp_export_failures", "code",
                                      "OTLP Export calls that failed (each retried until it is dropped)"),
}

# Kernel inspector counters (Inspector.counters()) -> help; all are `authwire_kernel_<name>_total` except the
# gauges below. Names not listed are exposed with a generic help.
KERNEL_COUNTERS = {
    "packets": "Packets the tc programs inspected",
    "non_tcp": "Non-TCP packets passed over",
    "parse_errors": "Packets whose headers could not be parsed",
    "ringbuf_reserve_failed": "Kernel events lost: ring-buffer reserve failed (reader too slow)",
    "evictions": "Flows evicted from the kernel's LRU flow table",
    "evictions_swept": "Evictions found by user space (no close event seen)",
    "flows_opened": "Flows the kernel started tracking",
    "midstream_flows": "Flows first seen without their SYN",
    "late_after_evicted_close": "Packets of a flow after its evicted close",
    "untracked_rst": "RSTs for flows not tracked",
    "vlan": "VLAN-tagged packets",
    "tracepoint_facts": "TCP facts added from tracepoints",
    "events_applied": "Kernel events applied to the connection table",
    "decode_errors": "Kernel events that could not be decoded",
    "listener_errors": "Connection-table listener callbacks that failed",
}
KERNEL_GAUGES = {
    "flows_open": ("tracked_connections", "Connections the connection table tracks as open"),
    "block_entries": ("block_entries", "Source IPs in the kernel block list now (serve --enforce or dry run)"),
}

HISTOGRAMS = {
    "ingest.ack_seconds": ("ingest_ack_seconds",
                           "Report receipt to acknowledgement (validation, join, commit), per report"),
    "join.wait_seconds": ("join_wait_seconds", "Time a report waited for its connection's kernel event"),
}

_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_]")
STORE_GAUGE_CACHE_SECONDS = 5.0  # COUNT(*) over a big store is not free; scrapes every 1 s share one count


def metric_name(counter: str) -> str:
    """A Counters name as a Prometheus metric name, without prefix or suffix ("envoy_als.lost" -> "envoy_als_lost")."""
    return _NAME_CHARS.sub("_", counter).strip("_") or "unnamed"


class AuthwireCollector(Collector):
    """Reads everything at scrape time; called from a worker thread by the /metrics handler."""

    def __init__(self, counters: Counters, store: Any = None, inspector: Any = None,
                 inspector_status: str = "", gauges: Iterable[Callable[[], Iterable[Metric]]] = ()) -> None:
        self.counters = counters
        self.store = store
        self.inspector = inspector
        self.inspector_status = inspector_status
        self.gauges = list(gauges)
        self._store_cache: tuple[float, int] = (0.0, 0)  # (monotonic time of the next count, last count)

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("authwire_build_info", "authwire's version (always 1)", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield from self._counters()
        yield from self._histograms()
        yield from self._kernel()
        yield from self._store()
        for source in self.gauges:
            yield from source()

    def _counters(self) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily] = {}
        for (name, label), value in sorted(self.counters.snapshot().items()):
            if name.startswith("kernel.") and self.inspector is not None:
                continue  # Inspector.counters() has the same names, live (see _kernel)
            spec = COUNTERS.get(name) or _fallback(name, label)
            family = families.get(spec.metric)
            if family is None:
                family = families[spec.metric] = CounterMetricFamily(
                    f"authwire_{spec.metric}", spec.help, labels=spec.labels or None)
            family.add_metric(spec.values(label), value * spec.scale if spec.scale != 1.0 else value)
        # Every known family, even before its first event: dashboards and alerts see a metric that exists
        # (no samples yet) rather than a name that might be misspelt.
        for spec in COUNTERS.values():
            if spec.metric not in families:
                families[spec.metric] = CounterMetricFamily(f"authwire_{spec.metric}", spec.help,
                                                            labels=spec.labels or None)
        yield from families.values()

    def _histograms(self) -> Iterator[Metric]:
        snapshots = self.counters.histograms()
        for name, (metric, help_text) in HISTOGRAMS.items():
            family = HistogramMetricFamily(f"authwire_{metric}", help_text)
            h = snapshots.get(name)
            if h is None:
                family.add_metric([], [("+Inf", 0)], 0.0)
            else:
                cumulative, buckets = 0, []
                for bound, n in zip((*h.buckets, float("inf")), h.counts, strict=True):
                    cumulative += n
                    buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
                family.add_metric([], buckets, h.total)
            yield family

    def _kernel(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("authwire_inspector_up", "1 when the kernel inspector runs (status in label)",
                               labels=["status"])
        up.add_metric([_bounded(self.inspector_status)], 1 if self.inspector is not None else 0)
        yield up
        if self.inspector is None:
            return
        for name, value in sorted(self.inspector.counters().items()):
            if name in KERNEL_GAUGES:
                metric, help_text = KERNEL_GAUGES[name]
                yield GaugeMetricFamily(f"authwire_kernel_{metric}", help_text, value=value)
            else:
                yield CounterMetricFamily(f"authwire_kernel_{metric_name(name)}",
                                          KERNEL_COUNTERS.get(name, f"Kernel inspector counter {name}"),
                                          value=value)

    def _store(self) -> Iterator[Metric]:
        if self.store is None:
            return
        at, rows = self._store_cache
        now = time.monotonic()
        if now >= at:
            rows = self.store.count()
            took = time.monotonic() - now
            # COUNT(*) scans an index: ~1 s on a 10M-record store. Count again after 5 s, or after 100x what
            # the count took, so that it never costs more than 1% of a core.
            self._store_cache = (now + max(STORE_GAUGE_CACHE_SECONDS, 100 * took), rows)
        yield GaugeMetricFamily("authwire_store_records", "Records in the SQLite store", value=rows)
        yield GaugeMetricFamily("authwire_store_bytes", "Size of the SQLite store (database + WAL)",
                                value=self.store.size_bytes())


def gauge(name: str, help_text: str, read: Callable[[], float]) -> Callable[[], Iterator[Metric]]:
    """A gauge read at scrape time, for `gauges=` (e.g. the alert store's size)."""
    def collect() -> Iterator[Metric]:
        yield GaugeMetricFamily(name, help_text, value=read())
    return collect


def _fallback(name: str, label: str) -> CounterSpec:
    return CounterSpec(metric_name(name), "kind" if label else "", f"authwire counter {name}")


def _bounded(text: str, limit: int = 120) -> str:
    """Inspector status as a label: short, first clause only (it is a configuration fact, not data)."""
    return text.split(";")[0][:limit]


class Metrics:
    """The registry behind /metrics, plus the /healthz facts that come from the same places."""

    def __init__(self, counters: Counters, store: Any = None, inspector: Any = None, inspector_status: str = "",
                 gauges: Iterable[Callable[[], Iterable[Metric]]] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = AuthwireCollector(counters, store, inspector, inspector_status, gauges)
        self.registry.register(self.collector)
        if os.path.exists("/proc/self/stat"):
            # process_cpu_seconds_total, resident memory, open fds: what an operator checks first.
            ProcessCollector(registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def handle(self, request: web.Request) -> web.Response:
        # In a thread: COUNT(*) and the BPF map reads must not stall the loop that acks reports.
        body = await asyncio.to_thread(self.render)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def register(http: Any, counters: Counters, store: Any = None, inspector: Any = None,
             inspector_status: str = "", pipeline: Any = None,
             gauges: Iterable[Callable[[], Iterable[Metric]]] = ()) -> Metrics:
    """Add GET /metrics (public: data-free) and the store/inspector health checks to the HTTP listener."""
    metrics = Metrics(counters, store, inspector, inspector_status, gauges)
    http.add_route("GET", "/metrics", metrics.handle, public=True)
    if pipeline is not None:
        pipeline.subscribe_rows(AuthOutcomes(counters), name="auth_outcomes")
    if hasattr(http, "add_health_check"):
        health = StoreHealth(counters, store)
        if pipeline is not None:
            pipeline.subscribe_rows(health.committed, name="health")
        http.add_health_check("store", health.check)
        http.add_health_check("inspector", lambda: (True, inspector_status or "unknown"))
    return metrics


_AUTH_METHOD, _OUTCOME, _REASON = INDEX["auth_method"], INDEX["outcome"], INDEX["reason"]


class AuthOutcomes:
    """Pipeline row subscriber: committed records by auth method/outcome/reason (all enums: bounded labels).

    Counted per batch into a local dict, then one Counters.inc per distinct key: a few tuple and dict
    operations per record (plain rows: no protobuf read), and nothing on the request path (subscribers run
    after the ack).
    """

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self._labels: dict[tuple[int, int, int], str] = {}

    def __call__(self, rows: list[tuple]) -> None:
        seen: dict[tuple[int, int, int], int] = {}
        get = seen.get
        for row in rows:
            key = (row[_AUTH_METHOD], row[_OUTCOME], row[_REASON])
            seen[key] = get(key, 0) + 1
        for key, n in seen.items():
            label = self._labels.get(key)
            if label is None:
                method, outcome, reason = key
                label = self._labels[key] = "/".join((
                    short_enum(ae.AuthMethod, method), short_enum(ae.AuthOutcome, outcome),
                    short_enum(ae.FailureReason, reason) if reason else ""))
            self.counters.inc("auth.records", label, n)


class StoreHealth:
    """The store is healthy when its file is writable and no commit failed since the last one that worked."""

    def __init__(self, counters: Counters, store: Any) -> None:
        self.counters = counters
        self.store = store
        self._failed_at_last_commit = self._failed()

    def _failed(self) -> int:
        return sum(v for (name, _), v in self.counters.snapshot().items() if name == "store.write_failed")

    def committed(self, rows: list) -> None:
        self._failed_at_last_commit = self._failed()

    def check(self) -> tuple[bool, str]:
        path = getattr(self.store, "path", None)
        if path is not None and not os.access(path, os.W_OK):
            return False, f"store {path} is not writable"
        if self._failed() > self._failed_at_last_commit:
            return False, "the last store commit failed (see authwire_store_write_failed_records_total)"
        return True, "writable"

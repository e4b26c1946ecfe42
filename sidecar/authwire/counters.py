"""Named counters: every drop, rejection and lost event is counted here and shown by `authwire stats`.

Also the duration histograms (ack latency, join wait) that /metrics exposes: fixed buckets, one bisect and a
few adds per observation, read at scrape time.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from dataclasses import dataclass

# Upper bounds (seconds) of each histogram's buckets; +Inf is implicit. Names not listed get DEFAULT_BUCKETS.
DEFAULT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
HISTOGRAM_BUCKETS: dict[str, tuple[float, ...]] = {
    # Pipeline.report: receipt to ack (validation + join + group commit); the bench goal is p99 < 50 ms.
    "ingest.ack_seconds": (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    # Joiner: how long a report waited for its connection's kernel event (bounded by --join-wait).
    "join.wait_seconds": (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0),
}


@dataclass(frozen=True)
class HistogramSnapshot:
    buckets: tuple[float, ...]  # upper bounds, ascending
    counts: tuple[int, ...]     # per bucket (not cumulative); one more than buckets: the +Inf bucket
    total: float                # sum of observed values
    count: int


class _Histogram:
    __slots__ = ("buckets", "counts", "total", "count")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.count = 0


class Counters:
    """Thread-safe (name, label) -> count. The kernel poller thread and the asyncio loop both write."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: Counter[tuple[str, str]] = Counter()
        self._histograms: dict[str, _Histogram] = {}

    def inc(self, name: str, label: str = "", n: int = 1) -> None:
        with self._lock:
            self._values[(name, label)] += n

    def get(self, name: str, label: str = "") -> int:
        with self._lock:
            return self._values[(name, label)]

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._values)

    def observe(self, name: str, seconds: float) -> None:
        """Record one duration in the histogram `name` (e.g. "ingest.ack_seconds")."""
        with self._lock:
            h = self._histograms.get(name)
            if h is None:
                h = self._histograms[name] = _Histogram(HISTOGRAM_BUCKETS.get(name, DEFAULT_BUCKETS))
            # bisect_left: a value equal to an upper bound belongs to that bucket (Prometheus's `le`).
            h.counts[bisect.bisect_left(h.buckets, seconds)] += 1
            h.total += seconds
            h.count += 1

    def histograms(self) -> dict[str, HistogramSnapshot]:
        with self._lock:
            return {name: HistogramSnapshot(h.buckets, tuple(h.counts), h.total, h.count)
                    for name, h in self._histograms.items()}

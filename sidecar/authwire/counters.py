"""Named counters: every drop, rejection and lost event is counted here and shown by `authwire stats`."""

from __future__ import annotations

import threading
from collections import Counter


class Counters:
    """Thread-safe (name, label) -> count. The kernel poller thread and the asyncio loop both write."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: Counter[tuple[str, str]] = Counter()

    def inc(self, name: str, label: str = "", n: int = 1) -> None:
        with self._lock:
            self._values[(name, label)] += n

    def get(self, name: str, label: str = "") -> int:
        with self._lock:
            return self._values[(name, label)]

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._values)

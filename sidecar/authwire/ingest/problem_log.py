"""Log lines about bad client input, rate-limited: a hostile or broken client must not flood the log.

The first line of each kind is logged, then at most one a minute with how many were skipped. Lines name
the problem, never the client's bytes, and carry no traceback (client errors are not bugs); the counters
(`authwire stats`) are the exact record.
"""

from __future__ import annotations

import logging
import time


class RateLimitedLog:
    def __init__(self, name: str, interval: float = 60.0) -> None:
        self._logger = logging.getLogger(f"authwire.{name}")
        self.interval = interval
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def log(self, kind: str, message: str, level: int = logging.WARNING) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._skipped[kind] = self._skipped.get(kind, 0) + 1
            return
        if len(self._last) > 1024:  # kinds come from a fixed set, but stay bounded whatever a caller passes
            self._last.clear()
        skipped = self._skipped.pop(kind, 0)
        self._last[kind] = now
        suffix = f" (and {skipped} more like it since the last such line)" if skipped else ""
        self._logger.log(level, "%s%s", message, suffix)

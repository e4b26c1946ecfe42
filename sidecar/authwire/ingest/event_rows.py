"""Admission: from what a transport decoded to validated event rows (authwire.store.columns.event_row).

Two passes, one set of rules:
- the native pass (authwire.ingest._eventwire, C) reads an event's wire bytes once and returns its event row
  when the event is plainly fine: the common case, ~1 us instead of ~13 (decode_report uses it on whole
  ReportRequest bodies; messages built in Python, e.g. by the Envoy ALS mapping, are serialized for it);
- everything it declines takes the Python path: authwire.ingest.validate, which names every problem,
  normalizes addresses and redacts client-sent secrets, then columns.event_row. The Python path is the
  definition; the native pass only ever accepts what it would accept unchanged (tests/ingest/test_eventwire.py).

Without the extension (no C compiler where the package was installed) everything takes the Python path:
slower, same results. `authwire stats` counts the events that took the Python path (`ingest.python_pass`).
"""

from __future__ import annotations

from collections.abc import Sequence

from authwire.ingest import validate as V
from authwire.store.columns import COLUMNS, ENUMS, EVENT_COLUMNS, event_row
from authwire.v1 import auth_event_pb2, ingest_pb2

try:
    from authwire.ingest import _eventwire as native
except ImportError:  # pragma: no cover - built by every `pip install` with a C compiler (CI checks it is)
    native = None


def _limits() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """validate's string limits and the enums' highest values, per event column (native.configure)."""
    limits, enum_max = [], []
    for _, path, kind in COLUMNS[:EVENT_COLUMNS]:
        field = path.removeprefix("event.")
        limits.append(V.MAX_STRING.get(field, V.DEFAULT_MAX_STRING) if kind in ("str", "istr", "ip") else 0)
        enum_max.append(max(v.number for v in ENUMS[kind[5:]].DESCRIPTOR.values) if kind.startswith("enum:")
                        else -1)
    return tuple(limits), tuple(enum_max)


if native is not None:
    native.configure(*_limits(), float(V.MAX_FUTURE_SECONDS), V.MAX_TIMESTAMP_SECONDS, V.MAX_DURATION_SECONDS,
                     V.MAX_NANOS)


def admit(items: Sequence[tuple | auth_event_pb2.AuthEvent], now: float, counters: V.CounterSink,
          source: str) -> tuple[list[tuple], list[ingest_pb2.Rejection]]:
    """(event rows of the accepted events, rejections naming the others), in order. items: event rows the
    native pass already made, or AuthEvent messages. Every rejected field and event is counted."""
    good: list[tuple] = []
    rejections: list[ingest_pb2.Rejection] = []
    python = 0
    for index, item in enumerate(items):
        if type(item) is tuple:
            good.append(item)
            continue
        if native is not None:
            row = native.event(item.SerializeToString(), now)
            if type(row) is tuple:
                good.append(row)
                continue
        python += 1
        problems = V.validate(item, index, now, counters)
        if problems:
            V.count_rejected(problems, counters, source)
            rejections.extend(problems)
        else:
            good.append(event_row(item))
    if python:
        counters.inc("ingest.python_pass", source, python)
    return good, rejections


def event_bytes(row: tuple) -> bytes:
    """The serialized AuthEvent of an event row (the native pass keeps the bytes it read)."""
    source = row[EVENT_COLUMNS + 1]
    return source if type(source) is bytes else source.SerializeToString()

"""How the CLI prints alerts: table (control and bidi characters escaped by query.render.table), json (one
Alert per line, proto3 JSON mapping with proto field names, like `authwire query`) or csv."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import TextIO

from authwire.query.render import _time, messages
from authwire.records import short_enum
from authwire.v1 import record_pb2

COLUMNS = ("last", "severity", "detection", "key", "clients", "requests", "summary", "id")


def alert_row(a: record_pb2.Alert) -> dict[str, str]:
    clients = list(a.clients)
    return {
        "id": a.id,
        "detection": a.detection,
        "severity": short_enum(record_pb2.AlertSeverity, a.severity),
        "first": _time(a.first_time),
        "last": _time(a.last_time),
        "key": a.key,
        "clients": ",".join(clients[:3]) + (f",+{len(clients) - 3}" if len(clients) > 3 else ""),
        "requests": f"{a.evidence.get('matched_requests', 0):g}",
        "credentials": ",".join(a.credentials[:5]),
        "stack": a.stack,
        "blocked": ",".join(a.blocked),
        "summary": a.summary,
    }


def alerts(items: Iterable[record_pb2.Alert], fmt: str, out: TextIO = sys.stdout, header: bool = True,
           columns: Sequence[str] = COLUMNS) -> None:
    messages(items, fmt, alert_row, record_pb2.Alert(), columns, out, header)

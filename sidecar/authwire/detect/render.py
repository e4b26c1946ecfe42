"""How the CLI prints alerts: table (control and bidi characters escaped by query.render.table), json (one
Alert per line, proto3 JSON mapping with proto field names, like `authwire query`) or csv."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Sequence
from typing import TextIO

from authwire.query.render import _time, safe, table
from authwire.records import short_enum, to_dict
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
    items = list(items)
    if fmt == "json":
        for a in items:
            out.write(json.dumps(to_dict(a), ensure_ascii=False) + "\n")
    elif fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=list(alert_row(record_pb2.Alert())))
        if header:
            writer.writeheader()
        writer.writerows(alert_row(a) for a in items)
    else:
        rows = [alert_row(a) for a in items]
        if header:
            table(rows, columns, out)
        else:  # a follow-up line of `alerts -f`
            for row in rows:
                out.write("  ".join(safe(row[c]) or "-" for c in columns) + "\n")
    out.flush()

"""How the CLI prints records, groups, counters and connections: table, json (one object per line) or csv."""

from __future__ import annotations

import csv
import datetime as dt
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TextIO

from google.protobuf import json_format
from google.protobuf.message import Message

from authwire.records import short_enum, to_dict
from authwire.v1 import auth_event_pb2, connection_pb2, query_pb2, record_pb2

FORMATS = ("table", "json", "csv")


def _time(ts) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    return dt.datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def _ms(d) -> str:
    return f"{(d.seconds * 1e3 + d.nanos / 1e6):.2f}" if (d.seconds or d.nanos) else "-"


def record_row(r: record_pb2.EnrichedRecord) -> dict[str, str]:
    """The flat columns of a record (table and csv)."""
    e, a, c = r.event, r.event.auth, r.connection
    has_conn = r.HasField("connection")
    return {
        "time": _time(e.start_time),
        "request_id": e.request_id,
        "client": f"{e.client.ip}:{e.client.port}",
        "forwarded_for": e.forwarded_for,
        "method": e.http.method,
        "path": e.http.path,
        "status": str(e.http.status or ""),
        "auth": short_enum(auth_event_pb2.AuthMethod, a.method),
        "outcome": short_enum(auth_event_pb2.AuthOutcome, a.outcome),
        "reason": short_enum(auth_event_pb2.FailureReason, a.reason) if a.reason else "",
        "consumer": a.consumer,
        "credential": a.credential_id,
        "join": short_enum(record_pb2.JoinStatus, r.join.status),
        "rtt_ms": _ms(c.handshake_rtt) if has_conn else "-",
        "ttl": str(c.syn.ttl) if has_conn else "-",
        "mss": str(c.syn.mss) if has_conn else "-",
        "os": (c.syn.os_hint or "-") if has_conn else "-",
        "retrans": str(c.to_server.retransmits + c.to_client.retransmits) if has_conn else "-",
        "community_id": c.community_id,
    }


# Terminal safety: record fields come from clients (request ids, consumers, paths, user agents). In a table
# every C0/C1 control character, DEL and bidirectional override is shown as an escape (\x1b, \r, \u202e),
# so no value can move the cursor, recolour or rewrite the terminal, or fake a line. JSON is exact (its
# encoder escapes control characters itself); CSV is for programs and stays exact too.
_UNSAFE = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A),
           0x200E, 0x200F, 0x061C, 0x2028, 0x2029]
_ESCAPES = {c: (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _UNSAFE}


def safe(text: str) -> str:
    """text with every control or bidi character escaped (for terminal output)."""
    return text.translate(_ESCAPES) if not text.isprintable() else text


TABLE_COLUMNS = ("time", "client", "method", "path", "status", "auth", "outcome", "reason", "consumer", "join",
                 "rtt_ms", "ttl", "mss", "os", "retrans", "request_id")


def table(rows: Sequence[dict[str, str]], columns: Sequence[str], out: TextIO) -> None:
    rows = [{c: safe(r.get(c, "") or "") for c in columns} for r in rows]
    widths = {c: max([len(c), *(len(r.get(c, "")) for r in rows)]) for c in columns}
    out.write("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip() + "\n")
    for r in rows:
        out.write("  ".join((r.get(c, "") or "").ljust(widths[c]) for c in columns).rstrip() + "\n")


def messages(items: Iterable[Message], fmt: str, row_of: Callable[[Message], dict[str, str]], empty: Message,
             columns: Sequence[str], out: TextIO = sys.stdout, header: bool = True) -> None:
    """Records or alerts as json (one message per line, proto3 JSON mapping), csv or a table.

    header=False is a follow-up batch of `tail -f` / `alerts -f`: no header, no realigning of earlier lines.
    """
    items = list(items)
    if fmt == "json":
        for m in items:
            out.write(json.dumps(to_dict(m), ensure_ascii=False) + "\n")
    elif fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=list(row_of(empty)))
        if header:
            writer.writeheader()
        writer.writerows(row_of(m) for m in items)
    else:
        rows = [row_of(m) for m in items]
        if header:
            table(rows, columns, out)
        else:
            for row in rows:
                out.write("  ".join(safe(row[c]) or "-" for c in columns) + "\n")
    out.flush()


def records(items: Iterable[record_pb2.EnrichedRecord], fmt: str, out: TextIO = sys.stdout,
            header: bool = True) -> None:
    messages(items, fmt, record_row, record_pb2.EnrichedRecord(), TABLE_COLUMNS, out, header)


def groups(group_by: Sequence[str], items: Sequence[query_pb2.Group], fmt: str, out: TextIO = sys.stdout) -> None:
    rows = [{"count": str(g.count), **dict(zip(group_by, g.values, strict=False))} for g in items]
    columns = ["count", *group_by]
    if fmt == "json":
        for row in rows:
            out.write(json.dumps({**row, "count": int(row["count"])}) + "\n")
    elif fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    else:
        table(rows, columns, out)


def stats(response: query_pb2.StatsResponse, fmt: str, out: TextIO = sys.stdout) -> None:
    if fmt == "json":
        out.write(json.dumps(to_dict(response), indent=2) + "\n")
        return
    out.write(f"store: {response.store_records} records, {response.store_bytes} bytes; "
              f"{response.store_alerts} alerts\n")
    out.write(f"kernel inspector: {'running' if response.inspector_running else 'off'}"
              f"{'' if response.inspector_running else ' (' + response.inspector_status + ')'}\n")
    table([{"counter": c.name, "label": c.label, "value": str(c.value)} for c in response.counters],
          ("counter", "label", "value"), out)


def connection_row(c: connection_pb2.Connection) -> dict[str, str]:
    return {
        "client": f"{c.client.ip}:{c.client.port}",
        "server": f"{c.server.ip}:{c.server.port}",
        "state": short_enum(connection_pb2.ConnectionState, c.state),
        "rtt_ms": _ms(c.handshake_rtt),
        "ttl": str(c.syn.ttl), "mss": str(c.syn.mss), "wscale": str(c.syn.window_scale),
        "win": str(c.syn.window), "opts": ",".join(str(k) for k in c.syn.option_kinds),
        "os": c.syn.os_hint or "-",
        "pkts_in/out": f"{c.to_server.packets}/{c.to_client.packets}",
        "bytes_in/out": f"{c.to_server.bytes}/{c.to_client.bytes}",
        "retrans": f"{c.to_server.retransmits}/{c.to_client.retransmits}",
        "history": c.history, "uid": c.uid,
    }


def connections(items: Sequence[connection_pb2.Connection], fmt: str, out: TextIO = sys.stdout) -> None:
    if fmt == "json":
        for c in items:
            # Zero counters and false flags are facts here (0 retransmits, no SACK): print every field.
            d = json_format.MessageToDict(c, preserving_proto_field_name=True,
                                          always_print_fields_with_no_presence=True)
            out.write(json.dumps(d) + "\n")
        return
    rows = [connection_row(c) for c in items]
    table(rows, list(connection_row(connection_pb2.Connection())), out)

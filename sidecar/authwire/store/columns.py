"""How one EnrichedRecord is laid out as a row, and how a row becomes an EnrichedRecord or a JSON object again.

A record row holds every AuthEvent field and the per-request join figures; the connection's facts live once
per connection in the segment's `connections` table (Zeek's conn.log + http.log joined by uid) and the row
refers to them by row id. Strings that repeat (hosts, paths, user agents, consumers, ...) are interned into
the segment's `strings` table and stored as small integers; request ids, forwarded-for and jti hashes, which
rarely repeat, are stored as text.

COLUMNS is the single list: event_row() (hand-written for speed, checked against COLUMNS by
tests/store/test_columns.py; the native pass authwire.ingest._eventwire builds the same tuples from an
event's bytes) extracts an event's values, finish_rows() adds the join's to make plain rows, the generated
`intern_row` turns a plain row into the tuple SQLite stores, `json_dict` into the proto3 JSON object
(exactly records.to_dict of the assembled record) and `assemble` into the message.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from authwire.records import json_fraction
from authwire.v1 import auth_event_pb2, connection_pb2, record_pb2

# kinds: ts / dur = Timestamp / Duration as integer nanoseconds (NULL = not set); ts_rel = a Timestamp stored
# as nanoseconds after the first column (received - start: 3 bytes instead of 8); str = text (NULL = "");
# istr = interned text; ip = packed address (4 or 16 bytes); int / u64 / bool / enum:<Type> = integers.
COLUMNS: list[tuple[str, str, str]] = [
    ("time_ns", "event.start_time", "ts"),
    ("received_ns", "received_time", "ts_rel"),
    ("request_id", "event.request_id", "str"),
    ("latency_ns", "event.latency", "dur"),
    ("gateway_kind", "event.gateway.kind", "enum:GatewayKind"),
    ("gateway_node", "event.gateway.node", "istr"),
    ("gateway_version", "event.gateway.version", "istr"),
    ("client_ip", "event.client.ip", "ip"),
    ("client_port", "event.client.port", "int"),
    ("server_ip", "event.server.ip", "istr"),
    ("server_port", "event.server.port", "int"),
    ("forwarded_for", "event.forwarded_for", "str"),
    ("gateway_connection_id", "event.gateway_connection_id", "u64"),
    ("connection_requests", "event.connection_requests", "int"),
    ("http_method", "event.http.method", "istr"),
    ("host", "event.http.host", "istr"),
    ("path", "event.http.path", "istr"),
    ("status", "event.http.status", "int"),
    ("user_agent", "event.http.user_agent", "istr"),
    ("request_bytes", "event.http.request_bytes", "u64"),
    ("response_bytes", "event.http.response_bytes", "u64"),
    ("route_id", "event.route_id", "istr"),
    ("service_id", "event.service_id", "istr"),
    ("auth_method", "event.auth.method", "enum:AuthMethod"),
    ("outcome", "event.auth.outcome", "enum:AuthOutcome"),
    ("plugin", "event.auth.plugin", "istr"),
    ("consumer", "event.auth.consumer", "istr"),
    ("credential_id", "event.auth.credential_id", "istr"),
    ("reason", "event.auth.reason", "enum:FailureReason"),
    ("message", "event.auth.message", "istr"),
    ("jwt_iss", "event.auth.jwt.iss", "istr"),
    ("jwt_sub", "event.auth.jwt.sub", "istr"),
    ("jwt_aud", "event.auth.jwt.aud", "istr"),
    ("jwt_kid", "event.auth.jwt.kid", "istr"),
    ("jwt_exp", "event.auth.jwt.exp", "i64"),
    ("jwt_iat", "event.auth.jwt.iat", "i64"),
    ("jwt_jti_hash", "event.auth.jwt.jti_hash", "str"),
    ("jwt_alg", "event.auth.jwt.alg", "istr"),
    ("join_status", "join.status", "enum:JoinStatus"),
    ("kernel_events_lost", "join.kernel_events_lost", "u64"),
    ("connection_age_ns", "join.connection_age", "dur"),
    ("kernel_request_index", "join.kernel_request_index", "int"),
    ("behind_proxy", "join.behind_proxy", "bool"),
    ("waited_ns", "join.waited", "dur"),
]
# Sub-messages that may be set while all their fields are defaults (then proto3 JSON still shows `{}`):
# their presence is one bit each of the `present` column.
CONTAINERS = ["event.gateway", "event.client", "event.server", "event.http", "event.auth", "event.auth.jwt",
              "join"]
PRESENT = len(COLUMNS)      # index of the presence bitmask in a plain row
CONN = len(COLUMNS) + 1     # index of the Connection (plain row) / connection row id (stored row)
NAMES = [name for name, _, _ in COLUMNS] + ["present", "conn"]
INDEX = {name: i for i, name in enumerate(NAMES)}

ENUMS = {"GatewayKind": auth_event_pb2.GatewayKind, "AuthMethod": auth_event_pb2.AuthMethod,
          "AuthOutcome": auth_event_pb2.AuthOutcome, "FailureReason": auth_event_pb2.FailureReason,
          "JoinStatus": record_pb2.JoinStatus}


def _pton(ip: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)


def ip_text(packed: bytes) -> str:
    return str(ipaddress.ip_address(packed))


def ip_key(ip: str) -> bytes:
    """The stored form of a (validated, normalized) address: 4 bytes for IPv4, 16 for IPv6."""
    return _pton(ip)


EVENT_COLUMNS = COLUMNS.index(("join_status", "join.status", "enum:JoinStatus"))  # 38: the event's columns
EVENT_PRESENT = EVENT_COLUMNS       # event row: presence bits of the event's sub-messages (CONTAINERS 0-5)
EVENT_SOURCE = EVENT_COLUMNS + 1    # event row: the event itself, as bytes (native pass) or its message
JOIN_BIT = 1 << CONTAINERS.index("join")


def event_row(e: auth_event_pb2.AuthEvent) -> tuple:
    """The event's part of a plain row (COLUMNS up to the join's, received_ns None), its presence bits and
    the message itself. Python's path; authwire.ingest._eventwire builds the same tuple from the bytes."""
    g, c, s, h, a = e.gateway, e.client, e.server, e.http, e.auth
    w = a.jwt
    has = e.HasField
    present = ((has("gateway") and 1) | (has("client") and 2) | (has("server") and 4) | (has("http") and 8)
               | (has("auth") and 16) | (a.HasField("jwt") and 32))
    st = e.start_time if has("start_time") else None
    lat = e.latency if has("latency") else None
    return (
        st.seconds * 1_000_000_000 + st.nanos if st is not None else None, None, e.request_id,
        lat.seconds * 1_000_000_000 + lat.nanos if lat is not None else None,
        g.kind, g.node, g.version, c.ip, c.port, s.ip, s.port, e.forwarded_for, e.gateway_connection_id,
        e.connection_requests, h.method, h.host, h.path, h.status, h.user_agent, h.request_bytes,
        h.response_bytes, e.route_id, e.service_id, a.method, a.outcome, a.plugin, a.consumer,
        a.credential_id, a.reason, a.message, w.iss, w.sub, w.aud, w.kid, w.exp, w.iat, w.jti_hash, w.alg,
        present, e,
    )


def join_columns(j: record_pb2.Join) -> tuple:
    """A Join message as the row's six join columns (what the joiner returns)."""
    age = j.connection_age if j.HasField("connection_age") else None
    waited = j.waited if j.HasField("waited") else None
    return (j.status, j.kernel_events_lost, age.seconds * 1_000_000_000 + age.nanos if age is not None else None,
            j.kernel_request_index, j.behind_proxy,
            waited.seconds * 1_000_000_000 + waited.nanos if waited is not None else None)


def join_message(cols: tuple) -> record_pb2.Join:
    """The Join message of the row's six join columns."""
    status, lost, age, index, behind_proxy, waited = cols
    j = record_pb2.Join(status=status, kernel_events_lost=lost, kernel_request_index=index, behind_proxy=behind_proxy)
    if age is not None:
        j.connection_age.FromNanoseconds(age)
    if waited is not None:
        j.waited.FromNanoseconds(waited)
    return j


def finish_rows(events: list[tuple], received_ns: int, joined: list[tuple]) -> list[tuple]:
    """Plain rows from event rows and their join results ((connection, join columns) each). Python's
    version of authwire.ingest._eventwire.rows (used when the extension is not built)."""
    n = EVENT_COLUMNS
    return [(ev[0], received_ns, *ev[2:n], *cols, ev[n] | JOIN_BIT, conn)
            for ev, (conn, cols) in zip(events, joined, strict=True)]


def plain_row(e: auth_event_pb2.AuthEvent, received_ns: int, conn: connection_pb2.Connection | None,
              j: record_pb2.Join) -> tuple:
    """The record's values in COLUMNS order (+ present, + the Connection)."""
    return finish_rows([event_row(e)], received_ns, [(conn, join_columns(j))])[0]


def plain_row_of(record: record_pb2.EnrichedRecord) -> tuple:
    """plain_row for a whole record (migration, bench store builds, tests): the join as the record has it."""
    received = record.received_time
    received_ns = received.seconds * 1_000_000_000 + received.nanos if record.HasField("received_time") else None
    row = plain_row(record.event, received_ns, record.connection if record.HasField("connection") else None,
                    record.join)
    if not record.HasField("join"):
        row = (*row[:PRESENT], row[PRESENT] & ~64, row[CONN])
    return row


# -- generated converters ---------------------------------------------------------------------------------

def _kind_code(kind: str, src: str) -> str:
    """Expression converting value `src` of a plain row into its stored form (strings interned via I)."""
    if kind == "istr":
        return f"I[{src}]"
    if kind == "str":
        return f"({src} or None)"
    if kind == "ip":
        return f"_pton({src}) if {src} else None"
    if kind == "ts_rel":
        return f"(None if {src} is None else {src} - (r[0] or 0))"
    return src


def _make_intern() -> Callable[[tuple, Any, Any], tuple]:
    parts = [_kind_code(kind, f"r[{i}]") for i, (_, _, kind) in enumerate(COLUMNS)]
    code = f"def intern_row(r, I, C):\n    return ({', '.join(parts)}, r[{PRESENT}], C)\n"
    scope: dict[str, Any] = {"_pton": _pton}
    exec(code, scope)  # noqa: S102 - generated from COLUMNS above, no outside input
    return scope["intern_row"]


intern_row = _make_intern()
intern_row.__doc__ = "intern_row(plain, interner, conn_row_id) -> the tuple stored in `records` (NAMES order)."


def _stored_rows(rows: list[tuple], strings: Any, connection_id: Callable[[Any], int], first_id: int) -> list[tuple]:
    """The tuples stored in `records` (row id first, then intern_row's), in Python; stored_rows below is
    the C version (authwire.store._rows) when built. connection_id(conn) -> the connection's row id."""
    return [(first_id + i, *intern_row(row, strings, None if row[CONN] is None else connection_id(row[CONN])))
            for i, row in enumerate(rows)]

_DAY_CACHE: dict[int, str] = {}


_LAST_TS: list = [None, ""]  # a batch's records share their received time: formatted once


def ts_json(ns: int) -> str:
    """proto3 JSON of a Timestamp given in ns (what records.to_dict prints)."""
    last = _LAST_TS
    if ns == last[0]:
        return last[1]
    text = _ts_json(ns)
    last[0], last[1] = ns, text
    return text


def _ts_json(ns: int) -> str:
    seconds, nanos = divmod(ns, 1_000_000_000)
    if not 0 <= seconds < 253402300800:
        ts = Timestamp(seconds=seconds, nanos=nanos)
        return ts.ToJsonString()
    day, rest = divmod(seconds, 86400)
    prefix = _DAY_CACHE.get(day)
    if prefix is None:
        if len(_DAY_CACHE) > 4096:
            _DAY_CACHE.clear()
        prefix = _DAY_CACHE[day] = time.strftime("%Y-%m-%dT", time.gmtime(day * 86400))
    h, rest = divmod(rest, 3600)
    m, sec = divmod(rest, 60)
    return f"{prefix}{h:02d}:{m:02d}:{sec:02d}{json_fraction(nanos)}Z"


def dur_json(ns: int) -> str:
    if ns < 0:
        from google.protobuf.duration_pb2 import Duration
        d = Duration()
        d.FromNanoseconds(ns)
        return d.ToJsonString()
    seconds, nanos = divmod(ns, 1_000_000_000)
    return f"{seconds}{json_fraction(nanos)}s"


def _enum_names(name: str) -> dict[int, str]:
    return {v.number: v.name for v in ENUMS[name].DESCRIPTOR.values}


def _make_json() -> Callable[[tuple, Any], dict]:
    """json_dict(plain_row, connection_json) -> proto3 JSON object of the record (records.to_dict's)."""
    scope: dict[str, Any] = {"ts_json": ts_json, "dur_json": dur_json}
    var = {"": "out", "event": "ev"}
    for i, path in enumerate(CONTAINERS):
        var[path] = f"m{i}"
    lines = ["def json_dict(r, cj):", "    out = {}", "    ev = {}"]
    for path in CONTAINERS:
        lines.append(f"    {var[path]} = {{}}")
    for i, (_, path, kind) in enumerate(COLUMNS):
        parent, _, leaf = path.rpartition(".")
        target = var[parent]
        v = f"r[{i}]"
        if kind in ("ts", "ts_rel"):  # plain rows hold absolute times
            expr = f"ts_json({v})"
            cond = f"{v} is not None"
        elif kind == "dur":
            expr = f"dur_json({v})"
            cond = f"{v} is not None"
        elif kind in ("u64", "i64"):
            expr, cond = f"str({v})", v
        elif kind.startswith("enum:"):
            table = f"E{i}"
            scope[table] = _enum_names(kind[5:])
            expr, cond = f"{table}.get({v}, {v})", v
        else:
            expr, cond = v, v
        lines.append(f"    if {cond}: {target}[{leaf!r}] = {expr}")
    # Children into parents, deepest first; a container appears when its presence bit is set.
    for bit, path in sorted(enumerate(CONTAINERS), key=lambda item: -item[1][1].count(".")):
        parent, _, leaf = path.rpartition(".")
        lines.append(f"    if r[{PRESENT}] & {1 << bit}: {var[parent]}[{leaf!r}] = {var[path]}")
    lines.append("    res = {'event': ev}")
    lines.append("    if cj is not None: res['connection'] = cj")
    lines.append(f"    if r[{PRESENT}] & {1 << CONTAINERS.index('join')}: res['join'] = m{CONTAINERS.index('join')}")
    lines.append("    if 'received_time' in out: res['received_time'] = out['received_time']")
    lines.append("    return res")
    code = "\n".join(lines) + "\n"
    exec(code, scope)  # noqa: S102 - generated from COLUMNS above, no outside input
    return scope["json_dict"]


_json_dict = _make_json()  # the definition; the C builder below must give equal objects (tests/store/test_rowjson.py)


try:
    from authwire.store import _rows
except ImportError:  # pragma: no cover - built by every `pip install` with a C compiler (CI checks it is)
    _rows = None


def _native_json_dict() -> Callable[[tuple, Any], dict] | None:
    """authwire.store._rows.json_dict configured from COLUMNS and CONTAINERS, or None if not built."""
    if _rows is None:
        return None
    boxes = ["", "event"] + sorted(CONTAINERS, key=lambda path: -path.count("."))
    box_of = {path: i for i, path in enumerate(boxes)}
    kinds = {"ts": 1, "ts_rel": 1, "dur": 2, "u64": 3, "i64": 3}
    cols = []
    for _, path, kind in COLUMNS:
        parent, _, leaf = path.rpartition(".")
        enum = _enum_names(kind[5:]) if kind.startswith("enum:") else None
        cols.append((4 if enum is not None else kinds.get(kind, 0), box_of[parent], leaf, enum))
    spec = [(0, -1, "")] + [(0, -1, "event")]
    for path in boxes[2:]:
        parent, _, leaf = path.rpartition(".")
        spec.append((CONTAINERS.index(path), -1 if path == "join" else box_of[parent], leaf))
    _rows.configure(tuple(cols), tuple(spec), PRESENT, box_of["event"], box_of["join"], ts_json, dur_json)
    return _rows.json_dict


json_dict = _native_json_dict() or _json_dict
if _rows is not None:
    _rows.configure_store(tuple({"istr": 1, "str": 2, "ip": 3, "ts_rel": 4}.get(kind, 0) for _, _, kind in COLUMNS))
stored_rows = _rows.stored_rows if _rows is not None else _stored_rows


# -- assembling a message at read time -------------------------------------------------------------------

def _resolve(record: record_pb2.EnrichedRecord, path: str):
    obj = record
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def assemble(stored: tuple, strings: dict[int, str], connection: connection_pb2.Connection | None
             ) -> record_pb2.EnrichedRecord:
    """The EnrichedRecord of a stored row (NAMES order, strings resolved through `strings`)."""
    record = record_pb2.EnrichedRecord()
    record.event.SetInParent()  # every stored record has an event
    present = stored[PRESENT]
    for bit, path in enumerate(CONTAINERS):
        if present & (1 << bit):
            _resolve(record, path).SetInParent()
    for i, (_, path, kind) in enumerate(COLUMNS):
        value = stored[i]
        if value is None or (not value and kind not in ("ts", "ts_rel", "dur")):
            continue  # defaults are not set: setting one would mark its parent message present
        parent_path, _, leaf = path.rpartition(".")
        parent = _resolve(record, parent_path) if parent_path else record
        if kind == "ts":
            getattr(parent, leaf).FromNanoseconds(value)
        elif kind == "ts_rel":
            getattr(parent, leaf).FromNanoseconds(value + (stored[0] or 0))
        elif kind == "dur":
            getattr(parent, leaf).FromNanoseconds(value)
        elif kind == "istr":
            setattr(parent, leaf, strings[value])
        elif kind == "ip":
            setattr(parent, leaf, ip_text(value))
        elif kind == "bool":
            setattr(parent, leaf, bool(value))
        elif value:
            setattr(parent, leaf, value)
    if connection is not None:
        record.connection.CopyFrom(connection)
    return record

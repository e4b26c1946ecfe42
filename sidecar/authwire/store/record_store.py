"""The SQLite store of EnrichedRecords: written only by the pipeline, read by query, tail and `--db`.

Each record is kept whole (serialized protobuf) plus the columns people filter and group on. Writes are
group-committed by the pipeline; WAL lets readers run beside the writer.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from authwire.records import short_enum
from authwire.v1 import auth_event_pb2, query_pb2, record_pb2

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id             INTEGER PRIMARY KEY,
    time_ns        INTEGER NOT NULL,   -- event.start_time
    received_ns    INTEGER NOT NULL,
    request_id     TEXT NOT NULL,
    gateway_kind   INTEGER NOT NULL,
    client_ip      TEXT NOT NULL,
    client_ip_key  BLOB NOT NULL,      -- 16 bytes, IPv4 mapped into IPv6: CIDR = one range scan
    client_port    INTEGER NOT NULL,
    server_ip      TEXT NOT NULL,
    server_port    INTEGER NOT NULL,
    forwarded_for  TEXT,
    http_method    TEXT,
    host           TEXT,
    path           TEXT,
    status         INTEGER,
    route_id       TEXT,
    auth_method    INTEGER NOT NULL,
    outcome        INTEGER NOT NULL,
    reason         INTEGER NOT NULL,
    consumer       TEXT,
    credential_id  TEXT,
    join_status    INTEGER NOT NULL,
    community_id   TEXT,
    connection_uid TEXT,
    os_hint        TEXT,
    syn_signature  TEXT,
    hop_distance   INTEGER,
    rtt_us         INTEGER,
    retransmits    INTEGER,
    record         BLOB NOT NULL
);
-- records_time and records_failures also carry the triage columns so that time-window group-bys
-- (`--since 1h --group-by syn.signature,auth.outcome`) read only the index (bench/query.py: 10M rows).
CREATE INDEX IF NOT EXISTS records_time ON records (time_ns, outcome, os_hint, syn_signature);
CREATE INDEX IF NOT EXISTS records_request_id ON records (request_id);
CREATE INDEX IF NOT EXISTS records_client_ip ON records (client_ip_key, time_ns);
-- Each index costs ~5 us per insert here, so indexes on optional or skewed columns are partial: only the
-- rows that have the value (or the rare value people look for) pay for them.
CREATE INDEX IF NOT EXISTS records_consumer ON records (consumer, time_ns) WHERE consumer IS NOT NULL;
CREATE INDEX IF NOT EXISTS records_credential ON records (credential_id, time_ns) WHERE credential_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS records_failures ON records (time_ns, outcome, os_hint, syn_signature)
    WHERE outcome = 3;
CREATE INDEX IF NOT EXISTS records_community_id ON records (community_id) WHERE community_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS records_os_hint ON records (os_hint, time_ns) WHERE os_hint IS NOT NULL;
CREATE INDEX IF NOT EXISTS records_syn_signature ON records (syn_signature, time_ns) WHERE syn_signature IS NOT NULL;
CREATE INDEX IF NOT EXISTS records_join_unmatched ON records (join_status, time_ns) WHERE join_status != 1;
"""

# --group-by names (proto-ish paths users see) -> column and how to print it.
GROUP_FIELDS: dict[str, tuple[str, type | None]] = {
    "client_ip": ("client_ip", None),
    "server_ip": ("server_ip", None),
    "consumer": ("consumer", None),
    "credential_id": ("credential_id", None),
    "auth.method": ("auth_method", auth_event_pb2.AuthMethod),
    "auth.outcome": ("outcome", auth_event_pb2.AuthOutcome),
    "auth.reason": ("reason", auth_event_pb2.FailureReason),
    "route_id": ("route_id", None),
    "http.status": ("status", None),
    "http.host": ("host", None),
    "http.path": ("path", None),
    "join.status": ("join_status", record_pb2.JoinStatus),
    "community_id": ("community_id", None),
    "syn.os_hint": ("os_hint", None),
    "syn.signature": ("syn_signature", None),
    "syn.hop_distance": ("hop_distance", None),
    "gateway.kind": ("gateway_kind", auth_event_pb2.GatewayKind),
}
GROUP_ALIASES = {"outcome": "auth.outcome", "method": "auth.method", "reason": "auth.reason",
                 "status": "http.status", "os": "syn.os_hint", "os_hint": "syn.os_hint",
                 "syn_signature": "syn.signature", "signature": "syn.signature",
                 "hop_distance": "syn.hop_distance", "join_status": "join.status", "route": "route_id",
                 "credential": "credential_id", "host": "http.host", "path": "http.path"}

DEFAULT_LIMIT = 100
MAX_LIMIT = 10000


class QueryError(ValueError):
    """A filter, group or page token that cannot be used; the message names it."""


_V4_MAPPED = b"\0" * 10 + b"\xff\xff"


def ip_key(ip: str) -> bytes:
    """16 bytes that sort like the address; IPv4 as IPv4-mapped IPv6 so one index serves both."""
    try:
        return _V4_MAPPED + socket.inet_pton(socket.AF_INET, ip)
    except OSError:
        return ipaddress.IPv6Address(ip).packed


def cidr_range(text: str) -> tuple[bytes, bytes]:
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise QueryError(f"client_ip: not an IP or CIDR: {text!r}") from None
    return ip_key(str(net.network_address)), ip_key(str(net.broadcast_address))


def _ns(ts) -> int:
    return ts.seconds * 1_000_000_000 + ts.nanos


def _duration_us(d) -> int:
    return d.seconds * 1_000_000 + d.nanos // 1000


def _row(record: record_pb2.EnrichedRecord) -> tuple:
    e, c, a = record.event, record.connection, record.event.auth
    has_conn = record.HasField("connection")
    return (
        _ns(e.start_time), _ns(record.received_time), e.request_id, e.gateway.kind,
        e.client.ip, ip_key(e.client.ip), e.client.port, e.server.ip, e.server.port, e.forwarded_for or None,
        e.http.method, e.http.host, e.http.path, e.http.status, e.route_id or None,
        a.method, a.outcome, a.reason, a.consumer or None, a.credential_id or None, record.join.status,
        c.community_id or None, c.uid or None, (c.syn.os_hint or None) if has_conn else None,
        (c.syn.signature or None) if has_conn else None,
        c.syn.hop_distance if has_conn and c.syn.initial_ttl else None,
        _duration_us(c.handshake_rtt) if has_conn and c.HasField("handshake_rtt") else None,
        c.to_server.retransmits + c.to_client.retransmits if has_conn else None,
        record.SerializeToString(),
    )


_INSERT = ("INSERT INTO records (time_ns, received_ns, request_id, gateway_kind, client_ip, client_ip_key, "
           "client_port, server_ip, server_port, forwarded_for, http_method, host, path, status, route_id, "
           "auth_method, outcome, reason, consumer, credential_id, join_status, community_id, connection_uid, "
           "os_hint, syn_signature, hop_distance, rtt_us, retransmits, record) "
           "VALUES (" + ",".join("?" * 29) + ")")


@dataclass
class QueryResult:
    records: list[record_pb2.EnrichedRecord]
    next_page_token: str
    groups: list[query_pb2.Group]
    last_id: int = 0
    ids: list[int] = field(default_factory=list)  # store row ids of records, same order


class Store:
    """One SQLite file. A Store opened read_only never writes (used by `authwire query --db`)."""

    def __init__(self, path: str | os.PathLike, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._local = threading.local()
        if read_only:
            if not self.path.exists():
                raise FileNotFoundError(f"no authwire store at {self.path}")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = self._connect()
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            db.commit()

    def _connect(self) -> sqlite3.Connection:
        """One connection per thread: the writer thread and reader threads never share one."""
        db = getattr(self._local, "db", None)
        if db is None:
            if self.read_only:
                db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            else:
                db = sqlite3.connect(self.path)
                # NORMAL in WAL mode: a commit survives a process crash (kill -9); only an OS crash or
                # power loss may lose the last transactions.
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("PRAGMA wal_autocheckpoint=10000")  # fewer, larger checkpoints under load
            db.execute("PRAGMA cache_size=-65536")  # 64 MiB: keeps the index pages hot
            db.execute("PRAGMA busy_timeout=5000")
            self._local.db = db
        return db

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # -- writing (pipeline only) ------------------------------------------------------------------------

    def write(self, records: Sequence[record_pb2.EnrichedRecord]) -> None:
        """Insert and commit; when this returns the records survive a crash of this process."""
        db = self._connect()
        with db:
            db.executemany(_INSERT, [_row(r) for r in records])

    def apply_retention(self, max_age_s: float, max_bytes: int) -> int:
        """Delete records older than max_age_s and, while the file is bigger than max_bytes, the oldest."""
        db = self._connect()
        deleted = 0
        if max_age_s > 0:
            cutoff = time.time_ns() - int(max_age_s * 1e9)
            with db:
                deleted += db.execute("DELETE FROM records WHERE time_ns < ?", (cutoff,)).rowcount
        while max_bytes > 0 and self.size_bytes() > max_bytes:
            with db:
                n = db.execute("DELETE FROM records WHERE id IN (SELECT id FROM records ORDER BY id LIMIT "
                               "(SELECT MAX(1000, COUNT(*) / 10) FROM records))").rowcount
            if n == 0:
                break
            deleted += n
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.execute("VACUUM")
        return deleted

    # -- reading ----------------------------------------------------------------------------------------

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                total += p.stat().st_size
        return total

    def count(self) -> int:
        return self._connect().execute("SELECT COUNT(*) FROM records").fetchone()[0]

    def max_id(self) -> int:
        return self._connect().execute("SELECT COALESCE(MAX(id), 0) FROM records").fetchone()[0]

    def query(self, filters: query_pb2.Filters, limit: int = 0, page_token: str = "",
              group_by: Iterable[str] = (), after_id: int = 0, through_id: int = 0) -> QueryResult:
        """Records newest first, or groups; with through_id (tail), records with after_id < id <= through_id
        oldest first, and last_id = the id to continue after."""
        where, params = _where(filters)
        limit = min(limit or DEFAULT_LIMIT, MAX_LIMIT)
        db = self._connect()
        group_by = [GROUP_ALIASES.get(g, g) for g in group_by]
        if group_by:
            unknown = [g for g in group_by if g not in GROUP_FIELDS]
            if unknown:
                raise QueryError(f"group_by: unknown field {unknown[0]!r} (known: {', '.join(GROUP_FIELDS)})")
            cols = [GROUP_FIELDS[g][0] for g in group_by]
            sql = (f"SELECT {', '.join(cols)}, COUNT(*) AS n FROM records {where} GROUP BY {', '.join(cols)} "
                   f"ORDER BY n DESC LIMIT ?")
            groups = []
            for row in db.execute(sql, (*params, limit)):
                values = [_group_value(GROUP_FIELDS[g][1], v) for g, v in zip(group_by, row, strict=False)]
                groups.append(query_pb2.Group(values=values, count=row[-1]))
            return QueryResult([], "", groups)
        if through_id:
            clause = f"{where} {'AND' if where else 'WHERE'} id > ? AND id <= ?"
            rows = db.execute(f"SELECT id, time_ns, record FROM records {clause} ORDER BY id LIMIT ?",
                              (*params, after_id, through_id, limit)).fetchall()
            last = rows[-1][0] if len(rows) == limit else through_id
            return QueryResult([_parse(r[2]) for r in rows], "", [], last, [r[0] for r in rows])
        if page_token:
            t, i = _decode_token(page_token)
            where = f"{where} {'AND' if where else 'WHERE'} (time_ns, id) < (?, ?)"
            params = [*params, t, i]
        rows = db.execute(f"SELECT id, time_ns, record FROM records {where} ORDER BY time_ns DESC, id DESC "
                          f"LIMIT ?", (*params, limit + 1)).fetchall()
        token = ""
        if len(rows) > limit:
            rows = rows[:limit]
            token = _encode_token(rows[-1][1], rows[-1][0])
        return QueryResult([_parse(r[2]) for r in rows], token, [], 0, [r[0] for r in rows])


def _parse(blob: bytes) -> record_pb2.EnrichedRecord:
    record = record_pb2.EnrichedRecord()
    record.ParseFromString(blob)
    return record


def _group_value(enum, value) -> str:
    if value is None:
        return ""
    if enum is not None:
        return short_enum(enum, value)
    return str(value)


def _encode_token(time_ns: int, row_id: int) -> str:
    return base64.urlsafe_b64encode(f"{time_ns}:{row_id}".encode()).decode()


def _decode_token(token: str) -> tuple[int, int]:
    try:
        t, i = base64.urlsafe_b64decode(token.encode()).decode().split(":")
        return int(t), int(i)
    except (ValueError, UnicodeDecodeError):
        raise QueryError(f"page_token: not a token this server issued: {token[:40]!r}") from None


# Filters field -> SQL comparison on its column; applied when the field is set (non-zero, or present for
# proto3 `optional` fields, where 0 is a real value).
_COMPARISONS: list[tuple[str, str]] = [
    ("consumer", "consumer = ?"), ("credential_id", "credential_id = ?"), ("method", "auth_method = ?"),
    ("reason", "reason = ?"), ("route_id", "route_id = ?"), ("status", "status = ?"),
    ("request_id", "request_id = ?"), ("community_id", "community_id = ?"), ("os_hint", "os_hint = ?"),
    ("syn_signature", "syn_signature = ?"), ("min_rtt_us", "rtt_us >= ?"), ("max_rtt_us", "rtt_us <= ?"),
    ("retransmits_gt", "retransmits > ?"), ("hop_distance", "hop_distance = ?"),
]
_OPTIONAL = {fd.name for fd in query_pb2.Filters.DESCRIPTOR.fields if fd.has_presence}


def _where(f: query_pb2.Filters) -> tuple[str, list]:
    clauses: list[str] = []
    params: list = []
    if f.HasField("since"):
        clauses.append("time_ns >= ?")
        params.append(_ns(f.since))
    if f.HasField("until"):
        clauses.append("time_ns < ?")
        params.append(_ns(f.until))
    if f.client_ip:
        lo, hi = cidr_range(f.client_ip)
        clauses.append("client_ip_key BETWEEN ? AND ?")
        params += [lo, hi]
    for name, comparison in _COMPARISONS:
        if f.HasField(name) if name in _OPTIONAL else getattr(f, name):
            clauses.append(comparison)
            params.append(getattr(f, name))
    # Enum numbers as literals: SQLite uses a partial index only when the query's own terms show that its
    # WHERE holds (`outcome = 3` for records_failures, `join_status != 1` for records_join_unmatched).
    if f.outcome:
        clauses.append(f"outcome = {int(f.outcome)}")
    if f.join_status:
        clauses.append(f"join_status = {int(f.join_status)}")
        if f.join_status != record_pb2.JOIN_STATUS_EXACT:
            clauses.append(f"join_status != {record_pb2.JOIN_STATUS_EXACT}")
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


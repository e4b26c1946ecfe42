"""The store of EnrichedRecords: time-ordered SQLite segments, written only by the pipeline.

Layout (STORE_FORMAT 2). `--db PATH` names a small catalog file (its `meta` table says the format); the
records live in segment files beside it, `PATH.seg-<first record id>` (each a SQLite database in WAL mode):

- `records`: one row per record, every AuthEvent field and the per-request join figures (columns.py), the
  connection as a row id into the segment's own `connections` table, repeated strings as ids into its
  `strings` table. Record ids are global and increase with arrival, so a segment holds one id range.
- `connections`: the facts of each connection that records of this segment joined, once per connection,
  written at its first join in the segment and updated when the kernel reports it closed.
- `strings`: interned text (hosts, paths, user agents, consumers, ...).

The newest segment is open: it has only its rowid and a time index, so appends never touch a random-key
B-tree. When it reaches SEGMENT_ROWS (65,536) records or SEGMENT_SECONDS of age a new one is opened and a background
thread builds the closed one's secondary indexes (request id, client IP, consumer, credential, connection,
failures, unmatched joins) in one sorted pass each, in its own file, so the writer is never blocked by it.
Queries run on every segment (the open one is small and scanned) and merge. Retention deletes whole
segments, and rows (with the connections no remaining row refers to) inside the oldest one.

Read API (QueryService, `authwire query --db`, the HTTP API), safe beside a live writer, from any thread:
- `Store(path, read_only=True)`; `.query(filters, limit, page_token, group_by, after_id, through_id)` ->
  QueryResult (records newest first with a next_page_token, or groups; with through_id the tail window
  after_id < id <= through_id, oldest first);
- `.get(request_id)` -> the newest record with that request id or None; `.scan(filters)` -> all, by id;
- `.connection(uid)` -> the stored Connection facts or None; `.connections(limit)` -> newest stored ones;
- `.stats()` -> StoreStats(records, connections, segments, bytes); `.count()`, `.size_bytes()`, `.max_id()`.
Write API (the pipeline's store thread only): `.write_rows(plain_rows)` (columns.plain_row tuples),
`.write(records)` (whole EnrichedRecords: migration, tests, bench builds), `.update_connections(conns)`,
`.apply_retention(max_age_s, max_bytes)`.

Durability: a batch is acknowledged only after its commit (WAL, synchronous=NORMAL: survives kill -9).
After each commit the writer checks that its files are still the ones at their paths (inode); a store
removed or replaced under it raises StoreLost from then on (nothing more is acknowledged), counted by the
pipeline as store.lost. Files are created 0600, or 0640 with `group` (then chgrp'd to it).

A store of authwire 0.1 (one `records` table of whole serialized records) is converted when opened for
writing (the old file is kept as PATH.v0.1) and refused with what to do when opened read-only.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import os
import sqlite3
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from authwire.records import short_enum, to_dict
from authwire.store import columns as C
from authwire.v1 import auth_event_pb2, connection_pb2, query_pb2, record_pb2

log = logging.getLogger(__name__)

STORE_FORMAT = 2
SEGMENT_ROWS = 65_536  # the open segment is scanned by queries its time index cannot serve: keep it small
SEGMENT_SECONDS = 3600.0
FACTS_KEPT = 262_144  # connections whose first-join facts the writer remembers (shared by later segments)

CATALOG_SCHEMA = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;"

_RECORD_COLS = ", ".join(f"{n} {'BLOB' if n == 'client_ip' else ''}".strip() for n in C.NAMES)
SEGMENT_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS strings (id INTEGER PRIMARY KEY, s TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS strings_s ON strings (s);
CREATE TABLE IF NOT EXISTS connections (
    id INTEGER PRIMARY KEY, uid TEXT NOT NULL, community_id TEXT, syn_ns INTEGER, close_ns INTEGER,
    rtt_us INTEGER, os_hint TEXT, syn_signature TEXT, hop_distance INTEGER, retransmits INTEGER,
    facts BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS connections_uid ON connections (uid);
CREATE TABLE IF NOT EXISTS records (id INTEGER PRIMARY KEY, {_RECORD_COLS});
-- Both grow at their right edge (time ~ arrival order, connection ids are handed out in order): no churn.
CREATE INDEX IF NOT EXISTS records_time ON records (time_ns);
CREATE INDEX IF NOT EXISTS records_conn ON records (conn) WHERE conn IS NOT NULL;
"""
# Built when the segment closes (sorted bulk builds, off the write path). The summary holds the counts of
# the triage dimensions, so a --group-by over them reads a few thousand rows per closed segment.
SUMMARY_DIMS = ["outcome", "auth_method", "reason", "join_status", "gateway_kind", "os_hint", "syn_signature",
                "hop_distance"]
_SUMMARY_SELECT = ", ".join(f"c.{d}" if d in ("os_hint", "syn_signature", "hop_distance") else f"r.{d}"
                            for d in SUMMARY_DIMS)
SUMMARY_SQL = f"""
DROP TABLE IF EXISTS summary;
CREATE TABLE summary AS SELECT {_SUMMARY_SELECT}, COUNT(*) AS n FROM records r
    LEFT JOIN connections c ON c.id = r.conn GROUP BY {", ".join(str(i + 1) for i in range(len(SUMMARY_DIMS)))};
"""
CLOSED_INDEXES = """
CREATE INDEX IF NOT EXISTS records_request_id ON records (request_id);
CREATE INDEX IF NOT EXISTS records_client_ip ON records (client_ip);
CREATE INDEX IF NOT EXISTS records_consumer ON records (consumer, time_ns) WHERE consumer IS NOT NULL;
CREATE INDEX IF NOT EXISTS records_credential ON records (credential_id, time_ns) WHERE credential_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS records_failures ON records (time_ns) WHERE outcome = 3;
CREATE INDEX IF NOT EXISTS records_unmatched ON records (join_status, time_ns) WHERE join_status != 1;
CREATE INDEX IF NOT EXISTS connections_community_id ON connections (community_id);
CREATE INDEX IF NOT EXISTS connections_syn ON connections (os_hint, syn_signature);
"""

# --group-by names (proto-ish paths users see) -> SQL expression and how to print it.
GROUP_FIELDS: dict[str, tuple[str, str]] = {
    "client_ip": ("records.client_ip", "ip"),
    "server_ip": ("records.server_ip", "istr"),
    "consumer": ("records.consumer", "istr"),
    "credential_id": ("records.credential_id", "istr"),
    "auth.method": ("records.auth_method", "enum:AuthMethod"),
    "auth.outcome": ("records.outcome", "enum:AuthOutcome"),
    "auth.reason": ("records.reason", "enum:FailureReason"),
    "route_id": ("records.route_id", "istr"),
    "http.status": ("records.status", "int"),
    "http.host": ("records.host", "istr"),
    "http.path": ("records.path", "istr"),
    "join.status": ("records.join_status", "enum:JoinStatus"),
    "community_id": ("c.community_id", "text"),
    "syn.os_hint": ("c.os_hint", "text"),
    "syn.signature": ("c.syn_signature", "text"),
    "syn.hop_distance": ("c.hop_distance", "int"),
    "gateway.kind": ("records.gateway_kind", "enum:GatewayKind"),
}
GROUP_ALIASES = {"outcome": "auth.outcome", "method": "auth.method", "reason": "auth.reason",
                 "status": "http.status", "os": "syn.os_hint", "os_hint": "syn.os_hint",
                 "syn_signature": "syn.signature", "signature": "syn.signature",
                 "hop_distance": "syn.hop_distance", "join_status": "join.status", "route": "route_id",
                 "credential": "credential_id", "host": "http.host", "path": "http.path"}
_ENUM_TYPES = {"AuthMethod": auth_event_pb2.AuthMethod, "AuthOutcome": auth_event_pb2.AuthOutcome,
               "FailureReason": auth_event_pb2.FailureReason, "JoinStatus": record_pb2.JoinStatus,
               "GatewayKind": auth_event_pb2.GatewayKind}

DEFAULT_LIMIT = 100
MAX_LIMIT = 10000
_ISTR = [i for i, (_, _, kind) in enumerate(C.COLUMNS) if kind == "istr"]
_SELECT = "id, " + ", ".join(C.NAMES)
_INSERT = f"INSERT INTO records (id, {', '.join(C.NAMES)}) VALUES ({', '.join('?' * (len(C.NAMES) + 1))})"
_CLOSED_STATES = {connection_pb2.CONNECTION_STATE_CLOSED, connection_pb2.CONNECTION_STATE_RESET,
                  connection_pb2.CONNECTION_STATE_EVICTED}


class QueryError(ValueError):
    """A filter, group or page token that cannot be used; the message names it."""


class StoreLost(OSError):
    """The store's files were removed or replaced under the running writer: nothing more is acknowledged."""


class StoreFormatError(RuntimeError):
    """The file is not a store this version can read; the message says what to do."""


@dataclass
class QueryResult:
    records: list[record_pb2.EnrichedRecord]
    next_page_token: str
    groups: list[query_pb2.Group]
    last_id: int = 0
    ids: list[int] = field(default_factory=list)  # store record ids of records, same order


@dataclass
class StoreStats:
    records: int
    connections: int
    segments: int
    bytes: int


def is_closed(conn: connection_pb2.Connection) -> bool:
    return conn.state in _CLOSED_STATES


def create_private(path: Path, group: str | int | None = None) -> None:
    """Create path (if absent) readable by its owner only, or by `group` too (0640)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    try:
        if group not in (None, ""):
            import grp
            gid = group if isinstance(group, int) else grp.getgrnam(group).gr_gid
            os.fchown(fd, -1, gid)
            os.fchmod(fd, 0o640)
        else:
            os.fchmod(fd, 0o600)  # the umask may have taken bits away, never added: make it exact
    finally:
        os.close(fd)


def remove_files(path: str | os.PathLike) -> None:
    """Delete a store (catalog, segments, their WAL/SHM files): for demos and tests that start afresh."""
    path = Path(path)
    for p in [path, *path.parent.glob(path.name + ".seg-*")]:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(str(p) + suffix).unlink(missing_ok=True)


class _Interner(dict):
    """text -> id of the open segment's strings table; new strings are queued for the same transaction."""

    def __init__(self, next_id: int) -> None:
        super().__init__({"": None})
        self.next_id = next_id
        self.pending: list[tuple[int, str]] = []

    def __missing__(self, text: str) -> int:
        i = self.next_id
        self.next_id += 1
        self[text] = i
        self.pending.append((i, text))
        return i


# Kept in their own columns, so left out of the `facts` blob (about 65 bytes per connection).
_FACTS_SELECT = "facts, uid, community_id, os_hint, syn_signature"


def _facts_blob(conn: connection_pb2.Connection) -> bytes:
    slim = connection_pb2.Connection()
    slim.CopyFrom(conn)
    slim.ClearField("uid")
    slim.ClearField("community_id")
    if slim.HasField("syn"):
        slim.syn.ClearField("os_hint")
        slim.syn.ClearField("signature")
    return slim.SerializeToString()


def _facts(blob: bytes, uid: str, community_id: str | None, os_hint: str | None,
           signature: str | None) -> connection_pb2.Connection:
    """The Connection of a `connections` row (its _FACTS_SELECT columns)."""
    conn = connection_pb2.Connection.FromString(blob)
    conn.uid = uid
    if community_id:
        conn.community_id = community_id
    if os_hint:
        conn.syn.os_hint = os_hint
    if signature:
        conn.syn.signature = signature
    return conn


def _conn_columns(conn: connection_pb2.Connection) -> tuple:
    has = conn.HasField
    syn = conn.syn
    return (conn.community_id or None,
            conn.syn_time.seconds * 1_000_000_000 + conn.syn_time.nanos if has("syn_time") else None,
            conn.close_time.seconds * 1_000_000_000 + conn.close_time.nanos if has("close_time") else None,
            (conn.handshake_rtt.seconds * 1_000_000 + conn.handshake_rtt.nanos // 1000)
            if has("handshake_rtt") else None,
            syn.os_hint or None, syn.signature or None, syn.hop_distance if syn.initial_ttl else None,
            conn.to_server.retransmits + conn.to_client.retransmits, _facts_blob(conn))


class _Segment:
    """The open segment, as the writer sees it."""

    def __init__(self, path: Path, first_id: int, group) -> None:
        self.path = path
        self.first_id = first_id
        fresh = not path.exists()
        if fresh:
            create_private(path, group)
        self.db = _open(path, write=True, create=True)
        # No checkpoint while a segment is open: one in the writer stalled commits (and acks) by 20-80 ms.
        # Its WAL is bounded by the segment's size (SEGMENT_ROWS); the indexer thread checkpoints it once
        # the segment is closed.
        self.db.execute("PRAGMA wal_autocheckpoint=0")
        self.db.executescript(SEGMENT_SCHEMA)
        if fresh:
            with self.db:
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('state', 'open')")
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('created_ns', ?)", (time.time_ns(),))
        self.created_ns = self.db.execute("SELECT value FROM meta WHERE key = 'created_ns'").fetchone()[0]
        self.rows = self.db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        self.next_id = (self.db.execute("SELECT MAX(id) FROM records").fetchone()[0] or first_id - 1) + 1
        self.strings = _Interner((self.db.execute("SELECT MAX(id) FROM strings").fetchone()[0] or 0) + 1)
        self.strings.update(dict(self.db.execute("SELECT s, id FROM strings")))
        self.next_conn = (self.db.execute("SELECT MAX(id) FROM connections").fetchone()[0] or 0) + 1
        self.conn_ids: dict[str, int] = dict(self.db.execute("SELECT uid, id FROM connections"))
        self.inodes = self._inodes()

    def _inodes(self) -> dict[str, int]:
        out = {}
        for suffix in ("", "-wal"):
            try:
                out[suffix] = os.stat(str(self.path) + suffix).st_ino
            except FileNotFoundError:
                pass
        return out

    def check(self) -> str | None:
        """What happened to our files, if they are no longer the ones at their paths."""
        for suffix, ino in self.inodes.items():
            try:
                now = os.stat(str(self.path) + suffix).st_ino
            except FileNotFoundError:
                return f"{self.path}{suffix} was removed"
            if now != ino:
                return f"{self.path}{suffix} was replaced by another file"
        if "-wal" not in self.inodes:  # the WAL appears with the first commit
            try:
                self.inodes["-wal"] = os.stat(str(self.path) + "-wal").st_ino
            except FileNotFoundError:
                pass
        return None

    def close(self) -> None:
        self.db.close()


def _open(path: Path, write: bool, create: bool = False) -> sqlite3.Connection:
    if write:
        # Only the writer creates segments: anybody else opening one that retention just removed must fail
        # rather than bring back an empty file at its path.
        db = sqlite3.connect(f"file:{path}?mode={'rwc' if create else 'rw'}", uri=True, check_same_thread=False,
                             isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a process crash (kill -9); only an OS crash or power loss
        # may lose the last transactions.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA wal_autocheckpoint=10000")  # fewer, larger checkpoints under load
        db.isolation_level = "DEFERRED"
    else:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    db.execute("PRAGMA cache_size=-16384")
    db.execute("PRAGMA busy_timeout=5000")
    return db


def _segment_first_id(path: Path) -> int:
    return int(path.name.rsplit(".seg-", 1)[1])


class Store:
    """A catalog file plus its segments. A Store opened read_only never writes (`authwire query --db`)."""

    def __init__(self, path: str | os.PathLike, read_only: bool = False, group: str | int | None = None) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.group = group
        self._local = threading.local()
        self._lock = threading.Lock()           # writer state (segment roll, retention) vs. close
        self._segment: _Segment | None = None
        self._lost: str | None = None
        self._facts: OrderedDict[str, tuple[connection_pb2.Connection, orjson.Fragment | None]] = OrderedDict()
        self._indexer: threading.Thread | None = None
        self._to_index: list[Path] = []
        self._to_close: list[_Segment] = []  # rolled segments whose connection the indexer closes
        self._index_cv = threading.Condition()
        self._closing = False
        if read_only:
            if not self.path.exists():
                raise FileNotFoundError(f"no authwire store at {self.path}")
            self._check_format(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True), writable=False)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        old = self.path.exists() and self._is_v01()
        if old:
            backup = self.path.with_name(self.path.name + ".v0.1")
            for suffix in ("", "-wal", "-shm"):
                if Path(str(self.path) + suffix).exists():
                    os.replace(str(self.path) + suffix, str(backup) + suffix)
        create_private(self.path, group)
        catalog = sqlite3.connect(self.path)
        catalog.executescript(CATALOG_SCHEMA)
        self._check_format(catalog, writable=True)
        with catalog:
            catalog.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (STORE_FORMAT,))
        catalog.close()
        self._catalog_ino = os.stat(self.path).st_ino
        segments = self._segment_paths()
        if segments:
            newest = segments[-1]
            for p in segments[:-1]:
                if self._segment_state(p) != "closed":
                    self._to_index.append(p)
            self._segment = _Segment(newest, _segment_first_id(newest), group)
        else:
            self._segment = _Segment(self._segment_path(1), 1, group)
        self._indexer = threading.Thread(target=self._index_loop, name="authwire-indexer", daemon=True)
        self._indexer.start()
        if old:
            self._migrate(backup)

    # -- format ---------------------------------------------------------------------------------------

    def _is_v01(self) -> bool:
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            cols = [r[1] for r in db.execute("PRAGMA table_info(records)")]
        except sqlite3.DatabaseError as exc:
            raise StoreFormatError(f"{self.path} is not an authwire store ({exc}); move it aside or pass "
                                   "another --db") from None
        finally:
            db.close()
        return "record" in cols

    def _check_format(self, db: sqlite3.Connection, writable: bool) -> None:
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "records" in tables and not writable:
                raise StoreFormatError(
                    f"{self.path} is an authwire 0.1 store (one table of whole records). `authwire serve --db "
                    f"{self.path}` converts it to the current format (keeping the old file as "
                    f"{self.path.name}.v0.1); then query it again.")
            fmt = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone() if "meta" in tables else None
        except sqlite3.DatabaseError as exc:
            raise StoreFormatError(f"{self.path} is not an authwire store ({exc})") from None
        finally:
            if not writable:
                db.close()
        if fmt is not None and int(fmt[0]) > STORE_FORMAT:
            raise StoreFormatError(f"{self.path} was written by a newer authwire (store format {fmt[0]}, this "
                                   f"version reads {STORE_FORMAT}); upgrade authwire or pass another --db")

    def _migrate(self, backup: Path) -> None:
        log.warning("converting the authwire 0.1 store %s to store format %d (old file kept)", backup,
                    STORE_FORMAT)
        old = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
        n = 0
        try:
            cursor = old.execute("SELECT record FROM records ORDER BY id")
            while True:
                rows = cursor.fetchmany(5000)
                if not rows:
                    break
                self.write([record_pb2.EnrichedRecord.FromString(blob) for (blob,) in rows])
                n += len(rows)
        finally:
            old.close()
        log.warning("converted %d records from %s", n, backup)

    # -- files ----------------------------------------------------------------------------------------

    def _segment_path(self, first_id: int) -> Path:
        return self.path.with_name(f"{self.path.name}.seg-{first_id:012d}")

    def _segment_paths(self) -> list[Path]:
        out = [p for p in self.path.parent.glob(self.path.name + ".seg-*") if p.name.rsplit(".seg-", 1)[1].isdigit()]
        return sorted(out, key=_segment_first_id)

    def _segment_state(self, path: Path) -> str:
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                row = db.execute("SELECT value FROM meta WHERE key = 'state'").fetchone()
            finally:
                db.close()
        except sqlite3.DatabaseError:
            return "unknown"
        return row[0] if row else "unknown"

    def _reader(self, path: Path) -> sqlite3.Connection | None:
        cache = getattr(self._local, "dbs", None)
        if cache is None:
            cache = self._local.dbs = {}
        try:
            ino = os.stat(path).st_ino
        except FileNotFoundError:
            return None
        hit = cache.get(path)
        if hit is not None and hit[1] == ino:
            return hit[0]
        if hit is not None:  # another file at that path now: forget what we knew of the old one
            hit[0].close()
            getattr(self._local, "bounds", {}).pop(path, None)
        try:
            db = _open(path, write=False)
            db.execute("SELECT 1 FROM records LIMIT 0")
        except sqlite3.DatabaseError:  # being created right now, or removed by retention
            cache.pop(path, None)
            return None
        cache[path] = (db, ino)
        return db

    def _segments(self) -> list[tuple[Path, sqlite3.Connection, int]]:
        """(path, reader connection, first id) of every segment, oldest first."""
        paths = self._segment_paths()
        cache = getattr(self._local, "dbs", {})
        for gone in set(cache) - set(paths):
            cache.pop(gone)[0].close()
            getattr(self._local, "bounds", {}).pop(gone, None)
        out = []
        for p in paths:
            db = self._reader(p)
            if db is not None:
                out.append((p, db, _segment_first_id(p)))
        return out

    def _bounds(self, path: Path, db: sqlite3.Connection) -> tuple[int | None, int | None, bool]:
        """(oldest time, newest time, has a summary) of a segment; cached once the segment is closed
        (immutable then, but for retention, which only narrows it: the cached span stays conservative)."""
        cache = getattr(self._local, "bounds", None)
        if cache is None:
            cache = self._local.bounds = {}
        hit = cache.get(path)
        if hit is not None:
            return hit
        lo = db.execute("SELECT MIN(time_ns) FROM records").fetchone()[0]  # one aggregate per statement:
        hi = db.execute("SELECT MAX(time_ns) FROM records").fetchone()[0]  # each is then one index seek
        state = db.execute("SELECT value FROM meta WHERE key = 'state'").fetchone()
        closed = state is not None and state[0] == "closed"
        bounds = (lo, hi, closed and _has_summary(db))
        if closed:
            cache[path] = bounds
        return bounds

    def close(self) -> None:
        self._closing = True
        with self._index_cv:
            self._index_cv.notify_all()
        if self._indexer is not None:
            self._indexer.join(timeout=1)
        with self._index_cv:
            closing, self._to_close = self._to_close, []
        for seg in closing:
            seg.close()
        with self._lock:
            if self._segment is not None:
                self._segment.close()
                self._segment = None
        for db, _ in getattr(self._local, "dbs", {}).values():
            db.close()
        self._local.dbs = {}

    # -- writing (the pipeline's store thread only) -----------------------------------------------------

    def facts_of(self, uid: str) -> connection_pb2.Connection | None:
        """Any thread: the facts kept for this connection (first join, or close), if recently stored."""
        kept = self._facts.get(uid)
        return kept[0] if kept is not None else None

    def knows(self, uid: str) -> bool:
        """Any thread: are this connection's facts stored (recently enough to be updated at close)?"""
        return uid in self._facts

    def canonical(self, conn: connection_pb2.Connection) -> connection_pb2.Connection:
        """The facts kept for this connection: the first-join snapshot (or the close update)."""
        kept = self._facts.get(conn.uid)
        if kept is None:
            self._facts[conn.uid] = (conn, None)
            if len(self._facts) > FACTS_KEPT:
                self._facts.popitem(last=False)
            return conn
        return kept[0]

    def connection_json(self, conn: connection_pb2.Connection) -> orjson.Fragment:
        """records.to_dict of the kept facts of conn, encoded once per connection (orjson embeds the
        fragment in every JSON line of that connection's records)."""
        kept = self._facts.get(conn.uid)
        if kept is None or kept[0] is not conn:
            return orjson.Fragment(orjson.dumps(to_dict(conn)))
        if kept[1] is None:
            kept = self._facts[conn.uid] = (conn, orjson.Fragment(orjson.dumps(to_dict(conn))))
        return kept[1]

    def write(self, records: Sequence[record_pb2.EnrichedRecord]) -> None:
        """Insert whole records and commit (migration, tests, bench builds)."""
        self.write_rows([C.plain_row_of(r) for r in records])

    def write_rows(self, rows: Sequence[tuple]) -> None:
        """Insert plain rows (columns.plain_row) and commit; when this returns they survive a crash.

        Raises StoreLost when the store's files are no longer ours (the batch is then not acknowledged)."""
        if self._lost:
            raise StoreLost(self._lost)
        with self._lock:
            seg = self._segment
            if seg is None:
                raise StoreLost("the store is closed")
            if seg.rows >= SEGMENT_ROWS or (seg.rows and time.time_ns() - seg.created_ns > SEGMENT_SECONDS * 1e9):
                seg = self._roll()
            strings = seg.strings
            new_conns = []
            conn_ids = seg.conn_ids

            def connection_id(conn: connection_pb2.Connection) -> int:
                cid = conn_ids.get(conn.uid)
                if cid is None:
                    cid = conn_ids[conn.uid] = seg.next_conn
                    seg.next_conn += 1
                    facts = self.canonical(conn)
                    new_conns.append((cid, facts.uid, *_conn_columns(facts)))
                return cid

            stored = C.stored_rows(list(rows), strings, connection_id, seg.next_id)
            next_id = seg.next_id + len(stored)
            db = seg.db
            try:
                with db:
                    if strings.pending:
                        db.executemany("INSERT INTO strings (id, s) VALUES (?, ?)", strings.pending)
                    if new_conns:
                        db.executemany("INSERT INTO connections (id, uid, community_id, syn_ns, close_ns, rtt_us, "
                                       "os_hint, syn_signature, hop_distance, retransmits, facts) VALUES "
                                       "(?,?,?,?,?,?,?,?,?,?,?)", new_conns)
                    db.executemany(_INSERT, stored)
            except BaseException:
                # Roll back the writer's view too: the same strings / connections go in with the retry.
                for _i, text in strings.pending:
                    strings.pop(text, None)
                strings.next_id -= len(strings.pending)
                for c in new_conns:
                    conn_ids.pop(c[1], None)
                seg.next_conn -= len(new_conns)
                strings.pending = []
                raise
            strings.pending = []
            seg.next_id = next_id
            seg.rows += len(stored)
            problem = seg.check() or self._check_catalog()
            if problem:
                self._lost = (f"the store was lost: {problem}; records are no longer acknowledged. Restart "
                              f"authwire to start a new store at {self.path}")
                raise StoreLost(self._lost)

    def _check_catalog(self) -> str | None:
        try:
            if os.stat(self.path).st_ino != self._catalog_ino:
                return f"{self.path} was replaced by another file"
        except FileNotFoundError:
            return f"{self.path} was removed"
        return None

    def _roll(self) -> _Segment:
        old = self._segment
        with old.db:
            old.db.execute("UPDATE meta SET value = 'closing' WHERE key = 'state'")
        self._segment = _Segment(self._segment_path(old.next_id), old.next_id, self.group)
        with self._index_cv:  # closed (and so checkpointed) by the indexer, off the write path
            self._to_close.append(old)
            self._to_index.append(old.path)
            self._index_cv.notify_all()
        return self._segment

    def _index_loop(self) -> None:
        while not self._closing:
            with self._index_cv:
                while not self._to_index and not self._closing:
                    self._index_cv.wait()
                if self._closing:
                    return
                path = self._to_index.pop(0)
                closing, self._to_close = self._to_close, []
            for seg in closing:
                seg.close()
            try:
                self.build_indexes(path)
            except sqlite3.Error as exc:
                if path.exists():  # else retention removed it meanwhile
                    log.error("building the indexes of %s failed (queries there scan it): %s", path, exc)

    @staticmethod
    def build_indexes(path: Path) -> None:
        """The closed segment's secondary indexes, each built in one sorted pass."""
        db = _open(path, write=True)
        try:
            db.executescript(CLOSED_INDEXES)
            db.executescript(SUMMARY_SQL)
            db.execute("PRAGMA analysis_limit=1000")  # sampled statistics: enough to choose between indexes
            db.execute("ANALYZE")
            with db:
                db.execute("UPDATE meta SET value = 'closed' WHERE key = 'state'")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.close()

    def update_connections(self, conns: Iterable[connection_pb2.Connection]) -> int:
        """Store the final facts of connections the kernel reported closed, in every segment that has them
        (one transaction per segment for the whole lot)."""
        updated = 0
        with self._lock:
            rows = []
            for conn in conns:
                if conn.uid not in self._facts:
                    continue
                self._facts[conn.uid] = (conn, None)
                rows.append((*_conn_columns(conn), conn.uid))
            if not rows:
                return 0
            for _path, db, _ in self._writable_segments():
                with db:
                    before = db.total_changes
                    db.executemany(
                        "UPDATE connections SET community_id=?, syn_ns=?, close_ns=?, rtt_us=?, os_hint=?, "
                        "syn_signature=?, hop_distance=?, retransmits=?, facts=? WHERE uid = ?", rows)
                    updated += db.total_changes - before
        return updated

    def _writable_segments(self):
        # The open segment, and the one before it (a connection rarely spans more than one roll).
        if self._segment is None:
            return []
        out = [(self._segment.path, self._segment.db, self._segment.first_id)]
        paths = self._segment_paths()
        if len(paths) >= 2:
            prev = paths[-2]
            db = getattr(self, "_prev_db", None)
            if db is None or getattr(self, "_prev_path", None) != prev:
                if db is not None:
                    db.close()
                db = self._prev_db = _open(prev, write=True)
                self._prev_path = prev
            out.append((prev, db, _segment_first_id(prev)))
        return out

    def apply_retention(self, max_age_s: float, max_bytes: int) -> int:
        """Delete records older than max_age_s and, while the store is bigger than max_bytes, the oldest;
        then the connections no remaining record refers to. Returns the number of records deleted."""
        deleted = 0
        if max_age_s > 0:
            cutoff = time.time_ns() - int(max_age_s * 1e9)
            for path, db, _ in self._segments():
                newest = db.execute("SELECT MAX(time_ns) FROM records").fetchone()[0]
                oldest = db.execute("SELECT MIN(time_ns) FROM records").fetchone()[0]
                if oldest is None or oldest >= cutoff:
                    continue
                if newest < cutoff and not self._is_open(path):
                    deleted += db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
                    self._drop_segment(path)
                else:
                    deleted += self._delete_rows(path, "time_ns < ?", (cutoff,))
        while max_bytes > 0 and self.size_bytes() > max_bytes:
            segments = self._segments()
            if not segments:
                break
            path, db, _ = segments[0]
            if len(segments) > 1 and not self._is_open(path):
                deleted += db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
                self._drop_segment(path)
                continue
            n = self._delete_rows(path, "id IN (SELECT id FROM records ORDER BY id LIMIT "
                                        "(SELECT MAX(1000, COUNT(*) / 10) FROM records))", (), vacuum=True)
            if n == 0:
                break
            deleted += n
        return deleted

    def _is_open(self, path: Path) -> bool:
        seg = self._segment
        return seg is not None and seg.path == path

    def _drop_segment(self, path: Path) -> None:
        with self._lock:
            if self._is_open(path):
                return
            with self._index_cv:
                if path in self._to_index:
                    self._to_index.remove(path)
            if getattr(self, "_prev_path", None) == path:
                self._prev_db.close()
                self._prev_db = self._prev_path = None
            remove = [Path(str(path) + s) for s in ("", "-wal", "-shm")]
            for p in remove:
                p.unlink(missing_ok=True)

    def _delete_rows(self, path: Path, where: str, params: tuple, vacuum: bool = False) -> int:
        with self._lock:
            db = self._segment.db if self._is_open(path) else _open(path, write=True)
            try:
                with db:
                    n = db.execute(f"DELETE FROM records WHERE {where}", params).rowcount
                    db.execute("DELETE FROM connections WHERE id NOT IN "
                               "(SELECT conn FROM records WHERE conn IS NOT NULL)")
                if n and db.execute("SELECT 1 FROM sqlite_master WHERE name = 'summary'").fetchone():
                    db.executescript(SUMMARY_SQL)
                if vacuum and n:
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    db.execute("VACUUM")
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                if not self._is_open(path):
                    db.close()
            if self._is_open(path) and vacuum and n:
                self._segment.inodes = self._segment._inodes()
        return n

    # -- reading ----------------------------------------------------------------------------------------

    def size_bytes(self) -> int:
        total = 0
        for p in [self.path, *self._segment_paths()]:
            for suffix in ("", "-wal"):
                try:
                    total += os.stat(str(p) + suffix).st_size
                except FileNotFoundError:
                    pass
        return total

    def count(self) -> int:
        return sum(db.execute("SELECT COUNT(*) FROM records").fetchone()[0] for _, db, _ in self._segments())

    def stats(self) -> StoreStats:
        segments = self._segments()
        return StoreStats(
            records=sum(db.execute("SELECT COUNT(*) FROM records").fetchone()[0] for _, db, _ in segments),
            connections=sum(db.execute("SELECT COUNT(*) FROM connections").fetchone()[0] for _, db, _ in segments),
            segments=len(segments), bytes=self.size_bytes())

    def max_id(self) -> int:
        for _, db, _ in reversed(self._segments()):
            top = db.execute("SELECT MAX(id) FROM records").fetchone()[0]
            if top is not None:
                return top
        return 0

    def scan(self, filters: query_pb2.Filters | None = None, batch: int = MAX_LIMIT):
        """Every record (matching filters), oldest first by id: for exports and benches."""
        filters = filters or query_pb2.Filters()
        after, top = 0, self.max_id()
        while after < top:
            result = self.query(filters, batch, "", (), after, top)
            yield from result.records
            after = result.last_id

    def get(self, request_id: str) -> record_pb2.EnrichedRecord | None:
        records = self.query(query_pb2.Filters(request_id=request_id), limit=1).records
        return records[0] if records else None

    def connection(self, uid: str) -> connection_pb2.Connection | None:
        for _, db, _ in reversed(self._segments()):
            row = db.execute(f"SELECT {_FACTS_SELECT} FROM connections WHERE uid = ? ORDER BY id DESC LIMIT 1",
                             (uid,)).fetchone()
            if row is not None:
                return _facts(*row)
        return None

    def connections(self, limit: int = 100) -> list[connection_pb2.Connection]:
        out: list[connection_pb2.Connection] = []
        seen: set[str] = set()
        for _, db, _ in reversed(self._segments()):
            for row in db.execute(f"SELECT {_FACTS_SELECT} FROM connections ORDER BY id DESC"):
                if row[1] not in seen:
                    seen.add(row[1])
                    out.append(_facts(*row))
                    if len(out) >= limit:
                        return out
        return out

    def query(self, filters: query_pb2.Filters, limit: int = 0, page_token: str = "",
              group_by: Iterable[str] = (), after_id: int = 0, through_id: int = 0) -> QueryResult:
        """Records newest first, or groups; with through_id (tail), records with after_id < id <= through_id
        oldest first, and last_id = the id to continue after."""
        where, params = _where(filters)
        conn_filter = _conn_where(filters)
        limit = min(limit or DEFAULT_LIMIT, MAX_LIMIT)
        group_by = [GROUP_ALIASES.get(g, g) for g in group_by]
        segments = self._segments()
        if group_by:
            return self._group(segments, group_by, filters, where, params, conn_filter, limit)
        if through_id:
            return self._tail(segments, where, params, conn_filter, limit, after_id, through_id)
        if page_token:
            t, i = _decode_token(page_token)
            where.append("(time_ns, id) < (?, ?)")
            params += [t, i]
        found: list[tuple[int, int, Path, tuple]] = []  # (time_ns, id, segment, row)
        spans = []
        for path, db, _ in segments:
            top = self._bounds(path, db)[1]
            if top is not None:
                spans.append((top, path, db))
        spans.sort(key=lambda s: s[0], reverse=True)
        for top, path, db in spans:
            if len(found) > limit and top < found[limit][0]:
                break  # nothing in this segment (or older ones) is newer than what we have
            segment_where = _segment_where(db, where, params, conn_filter)
            if segment_where is None:
                continue
            sql_where, values = segment_where
            rows = db.execute(f"SELECT {_SELECT} FROM records {sql_where} ORDER BY time_ns DESC, id DESC "
                              f"LIMIT ?", (*values, limit + 1)).fetchall()
            found.extend((r[1], r[0], path, r) for r in rows)
            found.sort(key=lambda f: (f[0], f[1]), reverse=True)
            del found[limit + 1:]
        token = ""
        if len(found) > limit:
            found = found[:limit]
            token = _encode_token(found[-1][0], found[-1][1])
        records = self._assemble([(p, r) for _, _, p, r in found])
        return QueryResult(records, token, [], 0, [f[1] for f in found])

    def _tail(self, segments, where, params, conn_filter, limit, after_id, through_id) -> QueryResult:
        picked: list[tuple[Path, tuple]] = []
        bounds = [s[2] for s in segments[1:]] + [None]
        for (path, db, first), next_first in zip(segments, bounds, strict=True):
            if next_first is not None and next_first <= after_id + 1:
                continue
            if first > through_id:
                break
            segment_where = _segment_where(db, [*where, "id > ?", "id <= ?"], [*params, after_id, through_id],
                                           conn_filter)
            if segment_where is None:
                continue
            sql_where, values = segment_where
            rows = db.execute(f"SELECT {_SELECT} FROM records {sql_where} ORDER BY id LIMIT ?",
                              (*values, limit - len(picked))).fetchall()
            picked.extend((path, r) for r in rows)
            if len(picked) >= limit:
                break
        last = picked[-1][1][0] if len(picked) >= limit else through_id
        return QueryResult(self._assemble(picked), "", [], last, [r[0] for _, r in picked])

    def _assemble(self, picked: list[tuple[Path, tuple]]) -> list[record_pb2.EnrichedRecord]:
        by_segment: dict[Path, list[tuple]] = {}
        for path, row in picked:
            by_segment.setdefault(path, []).append(row)
        strings: dict[Path, dict[int, str]] = {}
        conns: dict[Path, dict[int, connection_pb2.Connection]] = {}
        for path, rows in by_segment.items():
            db = self._reader(path)
            ids = {r[1 + i] for r in rows for i in _ISTR if r[1 + i] is not None}
            strings[path] = _fetch(db, "SELECT id, s FROM strings WHERE id IN ({})", ids)
            cids = {r[1 + C.CONN] for r in rows if r[1 + C.CONN] is not None}
            conns[path] = {row[0]: _facts(*row[1:]) for row in _fetch_rows(
                db, f"SELECT id, {_FACTS_SELECT} FROM connections WHERE id IN ({{}})", cids)}
        return [C.assemble(row[1:], strings[path], conns[path].get(row[1 + C.CONN])) for path, row in picked]

    def _group(self, segments, group_by: list[str], filters: query_pb2.Filters, where: list[str], params: list,
               conn_filter, limit: int) -> QueryResult:
        unknown = [g for g in group_by if g not in GROUP_FIELDS]
        if unknown:
            raise QueryError(f"group_by: unknown field {unknown[0]!r} (known: {', '.join(GROUP_FIELDS)})")
        exprs = [GROUP_FIELDS[g][0] for g in group_by]
        kinds = [GROUP_FIELDS[g][1] for g in group_by]
        join = " LEFT JOIN connections c ON c.id = records.conn" if any(e.startswith("c.") for e in exprs) else ""
        dims = [e.split(".", 1)[1] for e in exprs]
        summary = _summary_where(filters) if all(d in SUMMARY_DIMS for d in dims) else None
        since = filters.since.seconds * 1_000_000_000 + filters.since.nanos if filters.HasField("since") else None
        until = filters.until.seconds * 1_000_000_000 + filters.until.nanos if filters.HasField("until") else None
        totals: Counter[tuple[str, ...]] = Counter()
        for path, db, _ in segments:
            rows = None
            lo, hi, has_summary = self._bounds(path, db)
            if lo is None or (since is not None and hi < since) or (until is not None and lo >= until):
                continue
            if summary is not None and has_summary:
                if (since is None or lo >= since) and (until is None or hi < until):
                    rows = db.execute(f"SELECT {', '.join(dims)}, SUM(n) FROM summary {summary[0]} "
                                      f"GROUP BY {', '.join(dims)}", summary[1]).fetchall()
            if rows is None:
                segment_where = _segment_where(db, where, params, conn_filter)
                if segment_where is None:
                    continue
                sql_where, values = segment_where
                rows = db.execute(f"SELECT {', '.join(exprs)}, COUNT(*) FROM records{join} {sql_where} "
                                  f"GROUP BY {', '.join(exprs)}", values).fetchall()
            ids = {r[i] for r in rows for i, k in enumerate(kinds) if k == "istr" and r[i] is not None}
            names = _fetch(db, "SELECT id, s FROM strings WHERE id IN ({})", ids)
            for r in rows:
                totals[tuple(_group_value(k, v, names) for k, v in zip(kinds, r, strict=False))] += r[-1]
        top = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
        return QueryResult([], "", [query_pb2.Group(values=list(k), count=n) for k, n in top])


def _has_summary(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'summary'").fetchone() is not None


def _fetch_rows(db: sqlite3.Connection, sql: str, ids: set) -> list[tuple]:
    out: list[tuple] = []
    ids = list(ids)
    for i in range(0, len(ids), 900):
        chunk = ids[i:i + 900]
        out += db.execute(sql.format(",".join("?" * len(chunk))), chunk).fetchall()
    return out


def _fetch(db: sqlite3.Connection, sql: str, ids: set) -> dict:
    out: dict = {}
    ids = list(ids)
    for i in range(0, len(ids), 900):
        chunk = ids[i:i + 900]
        out.update(db.execute(sql.format(",".join("?" * len(chunk))), chunk).fetchall())
    return out


def _group_value(kind: str, value, names: dict[int, str]) -> str:
    if value is None:
        return ""
    if kind == "istr":
        return names.get(value, "")
    if kind == "ip":
        return C.ip_text(value)
    if kind.startswith("enum:"):
        return short_enum(_ENUM_TYPES[kind[5:]], value)
    return str(value)


def _encode_token(time_ns: int, row_id: int) -> str:
    return base64.urlsafe_b64encode(f"{time_ns}:{row_id}".encode()).decode()


def _decode_token(token: str) -> tuple[int, int]:
    try:
        t, i = base64.urlsafe_b64decode(token.encode()).decode().split(":")
        return int(t), int(i)
    except (ValueError, UnicodeDecodeError):
        raise QueryError(f"page_token: not a token this server issued: {token[:40]!r}") from None


def cidr_clause(text: str) -> tuple[str, list]:
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise QueryError(f"client_ip: not an IP or CIDR: {text!r}") from None
    if net.version == 6 and net.network_address.ipv4_mapped is not None and net.prefixlen >= 96:
        net = ipaddress.ip_network(f"{net.network_address.ipv4_mapped}/{net.prefixlen - 96}")
    lo, hi = net.network_address.packed, net.broadcast_address.packed
    if lo == hi:
        return "client_ip = ?", [lo]
    return f"client_ip BETWEEN ? AND ? AND length(client_ip) = {len(lo)}", [lo, hi]


# Filters field -> SQL comparison on its column; applied when the field is set (non-zero, or present for
# proto3 `optional` fields, where 0 is a real value). Interned columns compare with the string's id.
# An interned column's comparison is written `column = ~` and its text resolved per segment (_segment_where)
# into that segment's string id, as a literal: SQLite then picks the column's index.
_STRING_ID = "~"
_COMPARISONS: list[tuple[str, str]] = [
    ("consumer", f"consumer = {_STRING_ID}"), ("credential_id", f"credential_id = {_STRING_ID}"),
    ("method", "auth_method = ?"), ("reason", "reason = ?"), ("route_id", f"route_id = {_STRING_ID}"),
    ("status", "status = ?"), ("request_id", "request_id = ?"),
]
_CONN_COMPARISONS: list[tuple[str, str]] = [
    ("community_id", "community_id = ?"), ("os_hint", "os_hint = ?"), ("syn_signature", "syn_signature = ?"),
    ("min_rtt_us", "rtt_us >= ?"), ("max_rtt_us", "rtt_us <= ?"), ("retransmits_gt", "retransmits > ?"),
    ("hop_distance", "hop_distance = ?"),
]
_OPTIONAL = {fd.name for fd in query_pb2.Filters.DESCRIPTOR.fields if fd.has_presence}


def _is_set(f: query_pb2.Filters, name: str) -> bool:
    return f.HasField(name) if name in _OPTIONAL else bool(getattr(f, name))


def _conn_where(f: query_pb2.Filters) -> tuple[str, list] | None:
    """The filters on connection facts, as a WHERE over `connections`, or None."""
    clauses, params = [], []
    for name, comparison in _CONN_COMPARISONS:
        if _is_set(f, name):
            clauses.append(comparison)
            params.append(getattr(f, name))
    return (" AND ".join(clauses), params) if clauses else None


FEW_CONNECTIONS = 500  # matching connections up to which their records are fetched through records_conn


def _segment_where(db: sqlite3.Connection, where: list[str], params: list, conn_filter
                   ) -> tuple[str, list] | None:
    """WHERE for one segment: connection filters resolved to that segment's connection ids first; None
    when no connection there matches. Few ids -> `conn IN (ids)` (the records_conn index); many -> the
    rows are read in time order and tested against the set (`+conn`: not through the index)."""
    clauses, values = [], []
    values_in = iter(params)
    for clause in where:
        n = clause.count("?")
        if clause.endswith(_STRING_ID):
            row = db.execute("SELECT id FROM strings WHERE s = ?", (next(values_in),)).fetchone()
            if row is None:
                return None  # that text never occurs in this segment
            clauses.append(f"{clause[:-1]}{int(row[0])}")
            continue
        clauses.append(clause)
        values += [next(values_in) for _ in range(n)]
    if conn_filter is not None:
        sql, conn_params = conn_filter
        ids = [r[0] for r in db.execute(f"SELECT id FROM connections WHERE {sql} LIMIT {FEW_CONNECTIONS + 1}",
                                        conn_params)]
        if not ids:
            return None
        if len(ids) <= FEW_CONNECTIONS:
            clauses.append(f"conn IN ({','.join(str(int(i)) for i in ids)})")
        else:
            clauses.append(f"+conn IN (SELECT id FROM connections WHERE {sql})")
            values += conn_params
    return (("WHERE " + " AND ".join(clauses)) if clauses else ""), values


def _summary_where(f: query_pb2.Filters) -> tuple[str, list] | None:
    """The filters as a WHERE over a segment's summary, or None when some filter is not a summary dimension."""
    if (f.client_ip or any(_is_set(f, n) for n, _ in _COMPARISONS if n not in ("method", "reason"))
            or any(_is_set(f, n) for n in ("community_id", "min_rtt_us", "max_rtt_us", "retransmits_gt"))):
        return None
    clauses, params = [], []
    for name, column in (("method", "auth_method"), ("reason", "reason"), ("os_hint", "os_hint"),
                         ("syn_signature", "syn_signature"), ("hop_distance", "hop_distance"),
                         ("outcome", "outcome"), ("join_status", "join_status")):
        if _is_set(f, name):
            clauses.append(f"{column} = ?")
            params.append(getattr(f, name))
    return (("WHERE " + " AND ".join(clauses)) if clauses else ""), params


def _where(f: query_pb2.Filters) -> tuple[list[str], list]:
    clauses: list[str] = []
    params: list = []
    if f.HasField("since"):
        clauses.append("time_ns >= ?")
        params.append(f.since.seconds * 1_000_000_000 + f.since.nanos)
    if f.HasField("until"):
        clauses.append("time_ns < ?")
        params.append(f.until.seconds * 1_000_000_000 + f.until.nanos)
    if f.client_ip:
        clause, values = cidr_clause(f.client_ip)
        clauses.append(clause)
        params += values
    for name, comparison in _COMPARISONS:
        if _is_set(f, name):
            clauses.append(comparison)
            params.append(getattr(f, name))
    # Enum numbers as literals: SQLite uses a partial index only when the query's own terms show that its
    # WHERE holds (`join_status != 1` for records_unmatched).
    if f.outcome:
        clauses.append(f"outcome = {int(f.outcome)}")
    if f.join_status:
        clauses.append(f"join_status = {int(f.join_status)}")
        if f.join_status != record_pb2.JOIN_STATUS_EXACT:
            clauses.append(f"join_status != {record_pb2.JOIN_STATUS_EXACT}")
    return clauses, params

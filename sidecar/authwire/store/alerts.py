"""The SQLite store of Alerts, in its own file beside the record store (`<db stem>.alerts.db`).

Written only by the detection engine (authwire.detect.engine), read by `authwire alerts`, Query.Alerts /
TailAlerts and the HTTP API. An alert is one row, rewritten on each update: `seq` grows with every write,
so a reader that remembers the highest seq it saw gets exactly the new and updated alerts after it
(TailAlerts). Each write commits before the engine tells anybody about the alert, so an alert a client has
seen survives kill -9 (WAL, synchronous=NORMAL, like the record store). The file is created 0600: alerts
name clients and credentials. Retention: same age as records, by the alert's last_time.
"""

from __future__ import annotations

import base64
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from authwire.addresses import normalize_ip
from authwire.store.record_store import QueryError
from authwire.v1 import query_pb2, record_pb2

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id         TEXT PRIMARY KEY,
    seq        INTEGER NOT NULL,   -- grows with every insert or update (tail cursor)
    detection  TEXT NOT NULL,
    severity   INTEGER NOT NULL,
    first_ns   INTEGER NOT NULL,
    last_ns    INTEGER NOT NULL,
    key        TEXT NOT NULL,
    clients    TEXT NOT NULL,      -- ",ip,ip," for the client_ip filter
    alert      BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_seq ON alerts (seq);
CREATE INDEX IF NOT EXISTS alerts_last ON alerts (last_ns, seq);
"""


def alerts_path(db: str | os.PathLike) -> Path:
    """Where the alerts of the record store at db live: authwire.db -> authwire.alerts.db, same directory."""
    db = Path(db)
    return db.with_name(f"{db.stem}.alerts.db")


@dataclass
class AlertQueryResult:
    alerts: list[record_pb2.Alert]
    next_page_token: str


def _ns(ts) -> int:
    return ts.seconds * 1_000_000_000 + ts.nanos


class AlertStore:
    """One SQLite file. read_only never writes (CLI `alerts --db`, the HTTP API)."""

    def __init__(self, path: str | os.PathLike, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._local = threading.local()
        self._seq = 0
        if read_only:
            if not self.path.exists():
                raise FileNotFoundError(f"no authwire alert store at {self.path}")
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        os.chmod(self.path, 0o600)  # also when an older run left it wider; SQLite gives -wal/-shm the same mode
        db = self._connect()
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA)
        db.commit()
        self._seq = self.max_seq()

    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            if self.read_only:
                db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            else:
                db = sqlite3.connect(self.path)
                db.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit survives kill -9
            db.execute("PRAGMA busy_timeout=5000")
            self._local.db = db
        return db

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # -- writing (detection engine only) ----------------------------------------------------------------

    def upsert(self, alerts: Sequence[record_pb2.Alert]) -> None:
        """Insert or replace each alert (by id) and commit; returns once they survive a crash."""
        if not alerts:
            return
        rows = []
        for alert in alerts:
            self._seq += 1
            rows.append((alert.id, self._seq, alert.detection, alert.severity, _ns(alert.first_time),
                         _ns(alert.last_time), alert.key, "," + ",".join(alert.clients) + ",",
                         alert.SerializeToString()))
        db = self._connect()
        with db:
            db.executemany("INSERT OR REPLACE INTO alerts (id, seq, detection, severity, first_ns, last_ns, key, "
                           "clients, alert) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def apply_retention(self, max_age_s: float) -> int:
        if max_age_s <= 0:
            return 0
        cutoff = time.time_ns() - int(max_age_s * 1e9)
        db = self._connect()
        with db:
            return db.execute("DELETE FROM alerts WHERE last_ns < ?", (cutoff,)).rowcount

    # -- reading ----------------------------------------------------------------------------------------

    def count(self) -> int:
        return self._connect().execute("SELECT COUNT(*) FROM alerts").fetchone()[0]

    def max_seq(self) -> int:
        return self._connect().execute("SELECT COALESCE(MAX(seq), 0) FROM alerts").fetchone()[0]

    def query(self, filters: query_pb2.AlertFilters, limit: int = 0, page_token: str = "") -> AlertQueryResult:
        """Alerts newest (last_time) first; raises QueryError for a bad filter or page token."""
        where, params = _where(filters)
        limit = min(limit or DEFAULT_LIMIT, MAX_LIMIT)
        if page_token:
            t, s = _decode_token(page_token)
            where.append("(last_ns, seq) < (?, ?)")
            params += [t, s]
        sql = (f"SELECT last_ns, seq, alert FROM alerts {_clause(where)} ORDER BY last_ns DESC, seq DESC "
               "LIMIT ?")
        rows = self._connect().execute(sql, (*params, limit + 1)).fetchall()
        token = ""
        if len(rows) > limit:
            rows = rows[:limit]
            token = _encode_token(rows[-1][0], rows[-1][1])
        return AlertQueryResult([_parse(r[2]) for r in rows], token)

    def after(self, seq: int, filters: query_pb2.AlertFilters, limit: int = 1000
              ) -> tuple[list[record_pb2.Alert], int]:
        """Alerts written after seq (new or updated), oldest write first; and the seq to continue after."""
        where, params = _where(filters)
        top = self.max_seq()
        where.append("seq > ? AND seq <= ?")
        params += [seq, top]
        rows = self._connect().execute(f"SELECT seq, alert FROM alerts {_clause(where)} ORDER BY seq LIMIT ?",
                                       (*params, limit)).fetchall()
        last = rows[-1][0] if len(rows) == limit else top
        return [_parse(r[1]) for r in rows], max(last, seq)


def _parse(blob: bytes) -> record_pb2.Alert:
    alert = record_pb2.Alert()
    alert.ParseFromString(blob)
    return alert


def _clause(where: list[str]) -> str:
    return f"WHERE {' AND '.join(where)}" if where else ""


def _where(f: query_pb2.AlertFilters) -> tuple[list[str], list]:
    where: list[str] = []
    params: list = []
    if f.HasField("since"):
        where.append("last_ns >= ?")
        params.append(_ns(f.since))
    if f.HasField("until"):
        where.append("first_ns <= ?")
        params.append(_ns(f.until))
    if f.detections:
        where.append(f"detection IN ({', '.join('?' for _ in f.detections)})")
        params += list(f.detections)
    if f.min_severity:
        where.append("severity >= ?")
        params.append(f.min_severity)
    if f.key:
        where.append("key = ?")
        params.append(f.key)
    if f.id:
        where.append("id = ?")
        params.append(f.id)
    if f.client_ip:
        try:
            ip = normalize_ip(f.client_ip)
        except ValueError:
            raise QueryError(f"client_ip: {f.client_ip[:60]!r} is not an IP address") from None
        where.append("instr(clients, ?) > 0")
        params.append(f",{ip},")
    return where, params


def _encode_token(last_ns: int, seq: int) -> str:
    return base64.urlsafe_b64encode(f"a{last_ns}:{seq}".encode()).decode()


def _decode_token(token: str) -> tuple[int, int]:
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
        if not text.startswith("a"):
            raise ValueError(text)
        t, s = text[1:].split(":")
        return int(t), int(s)
    except (ValueError, UnicodeDecodeError):
        raise QueryError(f"page_token: not an alert token this server issued: {token[:40]!r}") from None

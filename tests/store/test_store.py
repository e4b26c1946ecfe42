"""The segmented store on real SQLite: records assembled at read time, connections stored once, segments
rolling and indexed, retention of connections, 0.1 stores converted or refused, file modes."""

from __future__ import annotations

import grp
import os
import sqlite3
import stat
import time

import pytest

from authwire.store import record_store
from authwire.store.record_store import Store, StoreFormatError
from authwire.v1 import connection_pb2, query_pb2, record_pb2
from support import auth_event, require, wait_until

# Final once the handshake is done: what a record keeps exactly as its join saw it. The counters, state,
# history, close time and last_seen are as of the connection's first join, then final after its close.
FINAL_AT_JOIN = ["uid", "community_id", "client", "server", "syn_time", "established_time", "synack_time",
                 "handshake_rtt", "syn", "mid_stream", "interface"]


SYN_NS = time.time_ns() - 10**9


def _conn(uid: str, packets: int, state=connection_pb2.CONNECTION_STATE_ESTABLISHED) -> connection_pb2.Connection:
    conn = connection_pb2.Connection(uid=uid, community_id=f"1:{uid}", state=state, history="ShAD")
    conn.client.ip, conn.client.port = "192.0.2.10", 40000
    conn.server.ip, conn.server.port = "192.0.2.1", 443
    conn.syn_time.FromNanoseconds(SYN_NS)
    conn.handshake_rtt.FromMicroseconds(900)
    conn.syn.ttl, conn.syn.initial_ttl, conn.syn.hop_distance, conn.syn.os_hint = 61, 64, 3, "linux"
    conn.syn.signature = "4:64:1460:m*44:7:MSTNW:df"
    conn.to_server.packets = packets
    return conn


def _joined(request_id: str, conn: connection_pb2.Connection | None, index: int = 1,
            start: float | None = None) -> record_pb2.EnrichedRecord:
    join = record_pb2.Join(status=record_pb2.JOIN_STATUS_EXACT if conn else record_pb2.JOIN_STATUS_INSPECTOR_OFF,
                           kernel_request_index=index if conn else 0)
    if conn:
        join.connection_age.FromMilliseconds(5 * index)
    record = record_pb2.EnrichedRecord(event=auth_event(request_id, start=start), join=join)
    if conn:
        record.connection.CopyFrom(conn)
    record.received_time.FromNanoseconds(time.time_ns())
    return record


def test_records_assembled_at_read_time_equal_the_join_and_connections_are_stored_once(tmp_path):
    store = Store(tmp_path / "a.db")
    first = _conn("C1", packets=4)
    later = _conn("C1", packets=9)        # the same connection, as the join saw it 3 requests later
    sent = [_joined("r1", first, 1), _joined("r2", later, 2), _joined("r3", None)]
    store.write(sent)
    got = {r.event.request_id: r for r in store.query(query_pb2.Filters()).records}
    assert got["r1"] == sent[0]           # the first join: exactly what the join saw
    assert got["r3"] == sent[2]
    r2 = got["r2"]
    assert r2.event == sent[1].event and r2.join == sent[1].join and r2.received_time == sent[1].received_time
    for name in FINAL_AT_JOIN:
        assert getattr(r2.connection, name) == getattr(later, name), name
    assert r2.connection.to_server.packets == 4   # counters as of the first join, until the close
    assert store.stats().connections == 1 and store.stats().records == 3

    closed = _conn("C1", packets=20, state=connection_pb2.CONNECTION_STATE_CLOSED)
    closed.close_time.FromNanoseconds(time.time_ns())
    assert store.update_connections([closed]) == 1
    for record in store.query(query_pb2.Filters(community_id="1:C1")).records:
        assert record.connection == closed        # final facts after the close
    assert store.connection("C1") == closed
    assert store.get("r2").connection == closed


def test_queries_and_tail_span_rolled_segments_and_their_built_indexes(tmp_path, monkeypatch):
    monkeypatch.setattr(record_store, "SEGMENT_ROWS", 50)
    store = Store(tmp_path / "a.db")
    now = time.time()
    conns = [_conn(f"C{i}", packets=i) for i in range(10)]
    for batch in range(6):
        store.write([_joined(f"b{batch}-{i}", conns[i % 10], start=now - 600 + batch * 60 + i * 0.01)
                     for i in range(40)])
    segments = sorted(tmp_path.glob("a.db.seg-*[0-9]"))
    assert len(segments) == 3  # a segment rolls before the batch that finds it full
    wait_until(lambda: all(store._segment_state(p) == "closed" for p in segments[:-1]), 20, "indexes built")
    indexes = {r[0] for r in sqlite3.connect(segments[0]).execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"records_request_id", "records_client_ip", "records_consumer"} <= indexes
    ids = [r.event.request_id for r in store.query(query_pb2.Filters(), limit=1000).records]
    assert ids == [f"b{b}-{i}" for b in reversed(range(6)) for i in reversed(range(40))]  # newest first
    page, seen = "", []
    while True:
        result = store.query(query_pb2.Filters(), limit=33, page_token=page)
        seen += [r.event.request_id for r in result.records]
        page = result.next_page_token
        if not page:
            break
    assert seen == ids
    assert store.get("b0-3").event.request_id == "b0-3"
    assert [r.event.request_id for r in store.query(query_pb2.Filters(community_id="1:C3"), 1000).records] == \
        [f"b{b}-{i}" for b in reversed(range(6)) for i in reversed(range(40)) if i % 10 == 3]
    tail = store.query(query_pb2.Filters(), 1000, "", (), 30, 130)
    assert [r.event.request_id for r in tail.records] == [f"b{(n - 1) // 40}-{(n - 1) % 40}" for n in range(31, 131)]
    groups = store.query(query_pb2.Filters(), 10, "", ["syn.os_hint", "auth.outcome"]).groups
    assert [(list(g.values), g.count) for g in groups] == [(["linux", "success"], 240)]
    assert store.count() == 240


def test_retention_drops_old_segments_and_connections_no_record_refers_to(tmp_path, monkeypatch):
    monkeypatch.setattr(record_store, "SEGMENT_ROWS", 20)
    store = Store(tmp_path / "a.db")
    now = time.time()
    store.write([_joined(f"old-{i}", _conn(f"O{i}", 1), start=now - 3 * 86400) for i in range(30)])
    store.write([_joined(f"mix-old-{i}", _conn(f"M{i}", 1), start=now - 3 * 86400) for i in range(5)]
                + [_joined(f"new-{i}", _conn(f"N{i}", 1), start=now - 60) for i in range(5)])
    assert store.apply_retention(max_age_s=86400, max_bytes=0) == 35
    assert sorted(r.event.request_id for r in store.query(query_pb2.Filters(), 100).records) == \
        sorted(f"new-{i}" for i in range(5))
    assert store.stats().connections == 5
    assert store.connection("M0") is None and store.connection("O0") is None and store.connection("N0") is not None


def test_a_0_1_store_is_converted_when_served_and_refused_clearly_when_read(tmp_path):
    old = tmp_path / "old.db"
    db = sqlite3.connect(old)
    db.execute("CREATE TABLE records (id INTEGER PRIMARY KEY, time_ns INTEGER, request_id TEXT, record BLOB)")
    sent = [_joined(f"v01-{i}", _conn("C9", 3) if i % 2 else None) for i in range(7)]
    db.executemany("INSERT INTO records (time_ns, request_id, record) VALUES (?, ?, ?)",
                   [(r.event.start_time.ToNanoseconds(), r.event.request_id, r.SerializeToString()) for r in sent])
    db.commit()
    db.close()
    with pytest.raises(StoreFormatError, match=r"0\.1 store.*authwire serve --db"):
        Store(old, read_only=True)
    store = Store(old)
    assert (tmp_path / "old.db.v0.1").exists()
    got = sorted(store.query(query_pb2.Filters(), 100).records, key=lambda r: r.event.request_id)
    assert got == sorted(sent, key=lambda r: r.event.request_id)
    store.close()
    assert Store(old, read_only=True).count() == 7


def test_files_are_created_owner_only_or_for_the_configured_group(tmp_path):
    store = Store(tmp_path / "a.db")
    store.write([_joined("m1", None)])
    files = [tmp_path / "a.db", *tmp_path.glob("a.db.seg-*")]
    assert len(files) >= 3  # catalog, segment, its WAL
    for f in files:
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600, f
    store.close()
    # A group other than our own, which we may give files to (root: any; others: a supplementary one).
    groups = [g.gr_gid for g in grp.getgrall() if g.gr_gid != os.getgid()
              and (os.geteuid() == 0 or g.gr_gid in os.getgroups())]
    require(bool(groups), "needs a second group to hand files to")
    group = groups[0]
    grouped = Store(tmp_path / "g" / "b.db", group=group)
    grouped.write([_joined("m2", None)])
    for f in [tmp_path / "g" / "b.db", *(tmp_path / "g").glob("b.db.seg-*")]:
        st = os.stat(f)
        assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_gid == group, f

"""Retention on a real SQLite store: by age, and by size (oldest first)."""

from __future__ import annotations

import time

from authwire.store.record_store import Store
from authwire.v1 import query_pb2, record_pb2
from support import auth_event


def _records(prefix: str, n: int, start: float) -> list[record_pb2.EnrichedRecord]:
    return [record_pb2.EnrichedRecord(event=auth_event(f"{prefix}-{i}", start=start + i * 1e-3)) for i in range(n)]


def _ids(store: Store) -> set[str]:
    return {r.event.request_id for r in store.query(query_pb2.Filters(), limit=10000).records}


def test_records_older_than_the_age_limit_are_deleted(tmp_path):
    store = Store(tmp_path / "a.db")
    now = time.time()
    store.write(_records("old", 5, now - 3 * 86400))
    store.write(_records("new", 5, now - 60))
    assert store.apply_retention(max_age_s=86400, max_bytes=0) == 5
    assert _ids(store) == {f"new-{i}" for i in range(5)}


def test_the_oldest_records_go_first_when_the_store_is_too_big(tmp_path):
    store = Store(tmp_path / "a.db")
    now = time.time()
    for batch in range(20):
        store.write(_records(f"b{batch:02d}", 500, now - 1000 + batch))
    limit = store.size_bytes() // 2
    deleted = store.apply_retention(max_age_s=0, max_bytes=limit)
    assert deleted > 0 and store.size_bytes() <= limit
    kept = _ids(store)
    in_time_order = [f"b{batch:02d}-{i}" for batch in range(20) for i in range(500)]
    assert len(kept) == len(in_time_order) - deleted
    assert kept == set(in_time_order[deleted:])  # exactly the oldest went

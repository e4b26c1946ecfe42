"""p95 latency of common `authwire query` filters and group-bys on a 10M-record store. Goal: <= 50 ms.

Building the store: 4,096 varied, realistic EnrichedRecords go in through Store.write (the pipeline's own
write path and schema); SQLite then replicates them to --records rows inside one INSERT ... SELECT, each
copy with its own time (spread over the last 7 days), request id, client IP (65,536 addresses), port and
Community ID (one connection per ~8 requests). The store's indexes are dropped for the bulk load and
rebuilt from store.SCHEMA. The file is kept (--db) and reused when it already holds --records rows.

Each query runs --runs times with varying parameters through Store.query (what the gRPC Query service and
`authwire query --db` call), on a warm page cache. Prints one line per query and one result line.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sidecar"))

from authwire.join import fingerprint  # noqa: E402
from authwire.store.record_store import SCHEMA, Store  # noqa: E402
from authwire.v1 import auth_event_pb2 as ae  # noqa: E402
from authwire.v1 import connection_pb2 as cp  # noqa: E402
from authwire.v1 import query_pb2, record_pb2  # noqa: E402

TEMPLATES = 4096
IPS = 65536
DAY_NS = 86_400 * 1_000_000_000
SPAN_NS = 7 * DAY_NS
GOAL_MS = 50.0

# (os family weight, SYN fields) — the stacks of fingerprint's own test table.
MSS, NOP, WS, SACK, TS, EOL = 2, 1, 3, 4, 8, 0
STACKS = [
    (70, dict(ttl=64, window_scale=7, option_kinds=[MSS, SACK, TS, NOP, WS], sack_permitted=True,
              timestamps=True, ts_val=1)),
    (15, dict(ttl=128, window=65535, window_scale=8, option_kinds=[MSS, NOP, WS, NOP, NOP, SACK],
              sack_permitted=True)),
    (8, dict(ttl=64, window=65535, window_scale=6, option_kinds=[MSS, NOP, WS, NOP, NOP, TS, SACK, EOL],
             sack_permitted=True, timestamps=True, ts_val=1)),
    (2, dict(ttl=64, window=65535, window_scale=6, option_kinds=[MSS, NOP, WS, SACK, TS],
             sack_permitted=True, timestamps=True, ts_val=1)),
    (2, dict(ttl=255, window=4128, window_scale=-1, option_kinds=[MSS])),
    (3, dict(ttl=64, window=1024, window_scale=-1, option_kinds=[])),
]
FAILURES = [ae.FAILURE_REASON_EXPIRED, ae.FAILURE_REASON_BAD_SIGNATURE, ae.FAILURE_REASON_UNKNOWN_KEY,
            ae.FAILURE_REASON_MISSING_CREDENTIALS, ae.FAILURE_REASON_INVALID_CREDENTIALS]
METHODS = [ae.AUTH_METHOD_JWT, ae.AUTH_METHOD_BASIC, ae.AUTH_METHOD_HMAC, ae.AUTH_METHOD_KEY_AUTH]


def template(rng: random.Random, i: int, now_ns: int) -> record_pb2.EnrichedRecord:
    failed = rng.random() < 0.15
    method = rng.choice(METHODS)
    consumer = f"consumer-{rng.randrange(500)}"
    event = ae.AuthEvent(
        request_id=f"t{i}", gateway=ae.Gateway(kind=ae.GATEWAY_KIND_APISIX, node="gw-1"),
        client=ae.Endpoint(ip="10.0.0.1", port=40000), server=ae.Endpoint(ip="10.255.0.1", port=443),
        gateway_connection_id=i, connection_requests=1 + i % 8,
        http=ae.HttpRequest(method="GET", host="api.example", path=f"/v1/orders/{i % 50}",
                            status=401 if failed else 200, user_agent="client/1.0"),
        route_id=f"route-{i % 20}",
        auth=ae.Auth(method=method, outcome=ae.AUTH_OUTCOME_FAILURE if failed else ae.AUTH_OUTCOME_SUCCESS,
                     plugin="jwt-auth", consumer="" if failed else consumer, credential_id=f"key-{consumer}",
                     reason=rng.choice(FAILURES) if failed else ae.FAILURE_REASON_UNSPECIFIED))
    event.start_time.FromNanoseconds(now_ns)
    roll = rng.random()
    status = (record_pb2.JOIN_STATUS_EXACT if roll < 0.98 else
              record_pb2.JOIN_STATUS_NO_CONNECTION if roll < 0.995 else record_pb2.JOIN_STATUS_INSPECTOR_OFF)
    record = record_pb2.EnrichedRecord(event=event, join=record_pb2.Join(status=status))
    if status == record_pb2.JOIN_STATUS_EXACT:
        _, stack = rng.choices(STACKS, weights=[w for w, _ in STACKS])[0]
        mss = rng.choice([1460, 1460, 1440, 1380, 1200])
        fields = {"window": mss * 44, **stack}
        syn = cp.SynFingerprint(ip_version=4, df=True, mss=mss if MSS in stack["option_kinds"] else 0, **fields)
        syn.ttl = max(syn.ttl - rng.choice([0, 0, 1, 3, 7, 12, 18]), 1)
        fingerprint.annotate(syn)
        conn = record.connection
        conn.uid = f"c{i}"
        conn.community_id = f"1:tmpl{i}"
        conn.syn.CopyFrom(syn)
        conn.handshake_rtt.FromMicroseconds(int(rng.lognormvariate(9.5, 1.0)))  # median ~13 ms
        conn.to_server.retransmits = 0 if rng.random() < 0.95 else rng.randrange(1, 10)
        record.join.connection_age.FromMilliseconds(rng.randrange(0, 60_000))
    record.received_time.FromNanoseconds(now_ns)
    return record


def build(path: Path, n: int) -> None:
    t0 = time.monotonic()
    path.unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    store = Store(path)
    rng = random.Random(4)
    now_ns = time.time_ns()
    store.write([template(rng, i, now_ns) for i in range(TEMPLATES)])
    store.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=DELETE")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-1000000")
    indexes = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index' AND sql IS NOT NULL")]
    for name in indexes:
        db.execute(f"DROP INDEX {name}")
    db.execute("CREATE TEMP TABLE tmpl AS SELECT * FROM records")
    db.execute("CREATE UNIQUE INDEX temp.tmpl_id ON tmpl (id)")
    db.execute("DELETE FROM records")
    db.execute("CREATE TEMP TABLE ips (n INTEGER PRIMARY KEY, ip TEXT, key BLOB)")
    db.executemany("INSERT INTO ips VALUES (?, ?, ?)",
                   [(k, f"10.{k >> 8}.{k & 255}.{1 + k % 250}",
                     bytes(10) + b"\xff\xff" + bytes([10, k >> 8, k & 255, 1 + k % 250])) for k in range(IPS)])
    cols = [r[1] for r in db.execute("PRAGMA table_info(records)") if r[1] != "id"]
    override = {
        "time_ns": f"{now_ns - SPAN_NS} + c.x * {SPAN_NS // n}",
        "received_ns": f"{now_ns - SPAN_NS} + c.x * {SPAN_NS // n} + 5000000",
        "request_id": "printf('r%d', c.x)",
        "client_ip": "ips.ip", "client_ip_key": "ips.key",
        "client_port": "1024 + (c.x / 8) % 60000",
        "community_id": "CASE WHEN t.community_id IS NULL THEN NULL ELSE printf('1:%012x', c.x / 8) END",
        "connection_uid": "CASE WHEN t.connection_uid IS NULL THEN NULL ELSE printf('c%d', c.x / 8) END",
    }
    select = ", ".join(override.get(col, f"t.{col}") for col in cols)
    chunk = 1_000_000
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        db.execute(
            f"WITH RECURSIVE c(x) AS (SELECT {lo} UNION ALL SELECT x + 1 FROM c WHERE x + 1 < {hi}) "
            f"INSERT INTO records ({', '.join(cols)}) SELECT {select} FROM c "
            f"JOIN tmpl t ON t.id = 1 + (c.x * 2654435761) % {TEMPLATES} "
            f"JOIN ips ON ips.n = ((c.x / 8) * 40503) % {IPS}")
        db.commit()
        print(f"  built {hi:,} rows ({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)
    db.executescript(SCHEMA)  # the store's own indexes
    db.execute("PRAGMA journal_mode=WAL")
    db.commit()
    db.close()
    print(f"  store of {n:,} records built in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)


def sync_indexes(path: Path) -> None:
    """A kept store gets exactly the indexes of the current store.SCHEMA (it may have changed since)."""
    db = sqlite3.connect(path)
    probe = sqlite3.connect(":memory:")
    probe.executescript(SCHEMA)
    want = dict(probe.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"))
    have = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"))
    stale = [name for name, sql in have.items() if want.get(name) != sql]
    for name in stale:
        db.execute(f"DROP INDEX {name}")
    if stale or want.keys() - have.keys():
        print(f"  rebuilding indexes {sorted(stale) or sorted(want.keys() - have.keys())}", file=sys.stderr)
        db.executescript(SCHEMA)
    db.commit()
    db.close()


def queries(rng: random.Random, newest_ns: int, n: int) -> dict[str, callable]:
    def ts(f: query_pb2.Filters, ago_s: int) -> query_pb2.Filters:
        f.since.FromNanoseconds(newest_ns - ago_s * 1_000_000_000)
        return f

    def ip() -> str:
        k = rng.randrange(IPS)
        return f"10.{k >> 8}.{k & 255}.{1 + k % 250}"

    sigs = ["4:64:1460:m*44:7:MSTNW:df", "4:128:1460:m*44:8:MNWNNS:df", "4:64:1200:m*44:7:MSTNW:df"]
    return {
        "client-ip": lambda: (query_pb2.Filters(client_ip=ip()), ()),
        "client-ip /16": lambda: (query_pb2.Filters(client_ip=f"10.{rng.randrange(256)}.0.0/16"), ()),
        "consumer": lambda: (query_pb2.Filters(consumer=f"consumer-{rng.randrange(500)}"), ()),
        "request-id": lambda: (query_pb2.Filters(request_id=f"r{rng.randrange(n)}"), ()),
        "community-id": lambda: (query_pb2.Filters(community_id=f"1:{rng.randrange(n // 8):012x}"), ()),
        "outcome=failure --since 1h": lambda: (ts(query_pb2.Filters(outcome=ae.AUTH_OUTCOME_FAILURE), 3600), ()),
        "os=windows": lambda: (query_pb2.Filters(os_hint=rng.choice(["windows", "macos", "bsd"])), ()),
        "syn-signature": lambda: (query_pb2.Filters(syn_signature=rng.choice(sigs)), ()),
        "join-status=no_connection": lambda: (
            query_pb2.Filters(join_status=record_pb2.JOIN_STATUS_NO_CONNECTION), ()),
        "min-rtt 100ms": lambda: (query_pb2.Filters(min_rtt_us=100_000), ()),
        "retransmits-gt 3": lambda: (query_pb2.Filters(retransmits_gt=3), ()),
        "hop-distance": lambda: (query_pb2.Filters(hop_distance=rng.choice([1, 7, 12])), ()),
        "group-by syn.signature,auth.outcome --since 15m": lambda: (
            ts(query_pb2.Filters(), 900), ("syn.signature", "auth.outcome")),
        "group-by syn.os_hint --outcome failure --since 1h": lambda: (
            ts(query_pb2.Filters(outcome=ae.AUTH_OUTCOME_FAILURE), 3600), ("syn.os_hint",)),
        "group-by syn.os_hint --since 1h": lambda: (ts(query_pb2.Filters(), 3600), ("syn.os_hint",)),
        "group-by client_ip --outcome failure --since 15m": lambda: (
            ts(query_pb2.Filters(outcome=ae.AUTH_OUTCOME_FAILURE), 900), ("client_ip",)),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=10_000_000)
    p.add_argument("--db", type=Path, default=Path("/var/tmp/authwire-bench-query.db"))
    p.add_argument("--runs", type=int, default=40)
    p.add_argument("--rebuild", action="store_true")
    args = p.parse_args()
    store = None
    if args.db.exists() and not args.rebuild:
        store = Store(args.db, read_only=True)
        if store.count() != args.records:
            store.close()
            store = None
        else:
            store.close()
            sync_indexes(args.db)
            store = Store(args.db, read_only=True)
    if store is None:
        build(args.db, args.records)
        store = Store(args.db, read_only=True)
    db = store._connect()
    newest_ns = db.execute("SELECT MAX(time_ns) FROM records").fetchone()[0]
    db.execute("SELECT COUNT(*) FROM records INDEXED BY records_time").fetchone()  # warm the cache
    rng = random.Random(7)
    worst = 0.0
    failed = []
    for name, make in queries(rng, newest_ns, args.records).items():
        times = []
        rows = 0
        for _ in range(args.runs):
            filters, group_by = make()
            t = time.perf_counter()
            result = store.query(filters, 100, "", group_by)
            times.append((time.perf_counter() - t) * 1000)
            rows += len(result.records) + len(result.groups)
        p95 = statistics.quantiles(times, n=20)[-1]
        worst = max(worst, p95)
        if p95 > GOAL_MS:
            failed.append(name)
        print(f"  {name:<52} p50 {statistics.median(times):7.2f} ms  p95 {p95:7.2f} ms  "
              f"({rows / args.runs:.0f} rows/answer)", file=sys.stderr)
    verdict = "ok" if not failed else "over goal: " + "; ".join(failed)
    print(f"bench/query.py: {args.records:,} records, {len(queries(rng, newest_ns, args.records))} common "
          f"queries x {args.runs} runs, worst p95 {worst:.1f} ms (goal <= {GOAL_MS:.0f} ms): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

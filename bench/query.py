"""p95 latency of common `authwire query` filters and group-bys on a 10M-record store. Goal: <= 50 ms.

Building the store: 4,096 varied, realistic EnrichedRecords are made into plain rows, and --records rows go
in through Store.write_rows (the pipeline's own write path: segments roll every 262,144 records and the
indexer builds each closed segment's indexes), each with its own time (spread over the last 7 days, in
arrival order), request id, client IP (65,536 addresses), port and connection (one per ~8 requests, with its
own uid and Community ID). The store is kept (--db) and reused when it already holds --records rows;
open_store() builds or opens it for other benches (bench/query_http.py).

Each query runs --runs times with varying parameters through Store.query (what the gRPC Query service and
`authwire query --db` call), on a warm page cache; the group-bys over the whole store run --group-runs times
(goal <= 1 s). Prints one line per query and result lines: latency, group-by over all, bytes per record.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sidecar"))

from authwire.join import fingerprint  # noqa: E402
from authwire.store import columns as C  # noqa: E402
from authwire.store.record_store import Store, remove_files  # noqa: E402
from authwire.v1 import auth_event_pb2 as ae  # noqa: E402
from authwire.v1 import connection_pb2 as cp  # noqa: E402
from authwire.v1 import query_pb2, record_pb2  # noqa: E402

TEMPLATES = 4096
IPS = 65536
DAY_NS = 86_400 * 1_000_000_000
SPAN_NS = 7 * DAY_NS
GOAL_MS = 50.0
GROUP_ALL_GOAL_MS = 1000.0
BYTES_GOAL = 250

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
    """The store through its own write path (Store.write_rows: segments rolling, indexes built on close)."""
    t0 = time.monotonic()
    remove_files(path)
    store = Store(path)
    rng = random.Random(4)
    now_ns = time.time_ns()
    templates = [C.plain_row_of(template(rng, i, now_ns)) for i in range(TEMPLATES)]
    ips = [f"10.{k >> 8}.{k & 255}.{1 + k % 250}" for k in range(IPS)]
    step = SPAN_NS // n
    base = now_ns - SPAN_NS
    conn = None
    batch: list[tuple] = []
    for x in range(n):
        t = templates[(x * 2654435761) % TEMPLATES]
        if x % 8 == 0:  # one connection per ~8 requests (keep-alive), from one of 65,536 clients
            ip = ips[((x // 8) * 40503) % IPS]
            port = 1024 + (x // 8) % 60000
            tc = t[C.CONN]
            if tc is not None:
                conn = cp.Connection()
                conn.CopyFrom(tc)
                conn.uid = f"c{x // 8}"
                conn.community_id = f"1:{x // 8:012x}"
                conn.client.ip, conn.client.port = ip, port
            else:
                conn = None
        time_ns = base + x * step
        batch.append((time_ns, time_ns + 5_000_000, f"r{x}", *t[3:7], ip, port, *t[9:C.CONN],
                      conn if t[C.CONN] is not None else None))
        if len(batch) == 5000:
            store.write_rows(batch)
            batch = []
            if x % 1_000_000 < 5000:
                print(f"  built {x + 1:,} rows ({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)
    if batch:
        store.write_rows(batch)
    wait_indexed(store)
    store.close()
    print(f"  store of {n:,} records built in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)


def wait_indexed(store: Store) -> None:
    """Until the background indexer has built every closed segment's indexes."""
    segments = store._segment_paths()[:-1]
    while any(store._segment_state(p) != "closed" for p in segments):
        time.sleep(0.5)


def open_store(path: Path, records: int, rebuild: bool = False) -> Path:
    """The bench store at path with `records` records (kept between runs, rebuilt when it differs);
    returns its path (for bench/query_http.py too)."""
    if path.exists() and not rebuild:
        try:
            store = Store(path, read_only=True)
            if store.count() == records:
                store.close()
                return path
            store.close()
        except Exception as exc:  # an older layout: build anew
            print(f"  rebuilding {path}: {exc}", file=sys.stderr)
    build(path, records)
    return path


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
    p.add_argument("--group-runs", type=int, default=5)
    p.add_argument("--rebuild", action="store_true")
    args = p.parse_args()
    open_store(args.db, args.records, args.rebuild)
    store = Store(args.db, read_only=True)
    newest_ns = store.query(query_pb2.Filters(), 1).records[0].event.start_time.ToNanoseconds()
    store.count()  # open every segment
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
    group_worst = 0.0
    for fields in (("auth.outcome",), ("syn.os_hint",), ("auth.method", "join.status")):
        times = []
        for _ in range(args.group_runs):
            t = time.perf_counter()
            groups = store.query(query_pb2.Filters(), 100, "", fields).groups
            times.append((time.perf_counter() - t) * 1000)
        assert sum(g.count for g in groups) == args.records, "a group-by over all must count every record"
        group_worst = max(group_worst, max(times))
        print(f"  group-by {','.join(fields):<43} over all: median {statistics.median(times):7.1f} ms  "
              f"max {max(times):7.1f} ms", file=sys.stderr)
    print(f"query_group_by_all: --group-by over all {args.records:,} records, worst {group_worst:.0f} ms "
          f"(goal <= {GROUP_ALL_GOAL_MS:.0f} ms)")
    stats = store.stats()
    print(f"store_bytes_per_record: {stats.bytes / max(stats.records, 1):.0f} bytes on disk per record "
          f"({stats.bytes / 2**20:,.0f} MiB for {stats.records:,} records, {stats.connections:,} connections, "
          f"{stats.segments} segments; goal <= {BYTES_GOAL})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

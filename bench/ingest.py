"""Sustained ingest: records/s from gRPC clients through validation, store commit and JSONL, ack after commit.

Starts a real `authwire serve` (no inspector; detections on, as by default), runs CONCURRENCY async clients
for DURATION seconds, each sending batches of BATCH events and waiting for the ack (which comes after the
commit). Measures the sidecar's own CPU (utime + stime of every thread, /proc) per record and its RSS at the
end. Then a paced run offers PACED_RATE records/s in PACED_BATCH-event batches and reports the ack latency.
Finally an in-process profile of the same stages on the same batches gives the per-stage us/record
breakdown (the rest of the measured CPU is gRPC request handling, the event loop and SQLite
checkpoints). Prints one result line per figure:

  ingest (SQLite + JSONL): <r> records/s ...; sidecar CPU <us> us/record; RSS <MB> MB     (goal >= 50,000/s)
  ingest_paced: <r> records/s offered ...; ack p50 / p99                                    (goal p99 <= 50 ms)
  ingest_stages: decode <us> validate <us> join <us> row <us> store <us> jsonl <us> detect <us> ...
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from proc_stats import cpu_seconds, rss_mb  # noqa: E402  (bench/proc_stats.py)

from authwire.counters import Counters  # noqa: E402
from authwire.detect.engine import DetectionEngine  # noqa: E402
from authwire.detect.settings import DetectSettings  # noqa: E402
from authwire.ingest.decode import decode_report  # noqa: E402
from authwire.ingest.event_rows import admit  # noqa: E402
from authwire.join.joiner import Joiner  # noqa: E402
from authwire.pipeline import make_rows  # noqa: E402
from authwire.store.jsonl import JsonlSink  # noqa: E402
from authwire.store.record_store import Store  # noqa: E402
from authwire.v1 import ingest_pb2, ingest_pb2_grpc  # noqa: E402
from support import auth_event, start_sidecar  # noqa: E402

DURATION = 10.0
CONCURRENCY = 4
BATCH = 500
PACED_RATE = 20_000   # records/s offered in the paced run: a busy gateway's steady load, below saturation
PACED_BATCH = 100
GOAL_RATE = 50_000
GOAL_CPU_US = 20.0
GOAL_P99_MS = 50.0
GOAL_RSS_MB = 300


def events(prefix: str, n: int) -> list:
    """Realistic events: distinct request ids, clients and ports; a mix of outcomes."""
    out = []
    for i in range(n):
        e = auth_event(f"{prefix}-{i:06d}-7f3a9c2e-41d8-4b6e-9a51", client=(f"10.{i % 200}.{i % 97}.{1 + i % 250}",
                                                                             1024 + i))
        e.http.user_agent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0"
        e.http.path = f"/v1/orders/{i % 50}"
        if i % 7 == 0:
            e.auth.outcome, e.auth.reason, e.http.status = 3, 3, 401
        out.append(e)
    return out


async def client(address: str, batch: ingest_pb2.ReportRequest, deadline: float, latencies: list[float]) -> int:
    sent = 0
    async with grpc.aio.insecure_channel(address) as channel:
        stub = ingest_pb2_grpc.IngestStub(channel)
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            response = await stub.Report(batch)
            latencies.append(time.perf_counter() - t0)
            assert response.accepted == len(batch.events), response.rejections[:3]
            sent += response.accepted
    return sent


async def paced(address: str, rate: int, batch_size: int) -> tuple[float, float, float]:
    """Offer `rate` records/s in batches of batch_size for DURATION s; ack latency percentiles (ms)."""
    batch = ingest_pb2.ReportRequest(events=events("paced", batch_size))
    interval = batch_size / rate
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = ingest_pb2_grpc.IngestStub(channel)

        in_flight = asyncio.Semaphore(16)  # well below the server's streams per connection: a slow server is
        # offered less (the achieved rate is printed), never refused

        async def one() -> None:
            async with in_flight:
                t0 = time.perf_counter()
                await stub.Report(batch)
                latencies.append(time.perf_counter() - t0)

        tasks = []
        start = time.monotonic()
        for n in range(int(DURATION / interval)):
            await asyncio.sleep(max(0.0, start + n * interval - time.monotonic()))
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    done = len(latencies) * batch_size / (time.monotonic() - start)
    return done, statistics.median(latencies) * 1000, statistics.quantiles(latencies, n=100)[98] * 1000


async def run(address: str) -> tuple[float, float, float]:
    """Saturating clients for DURATION s: (records/s, ack p50 ms, ack p99 ms) (bench/ingest_export.py too)."""
    rate, p50, p99, _, _ = await run_counted(address)
    return rate, p50, p99


async def run_counted(address: str) -> tuple[float, float, float, int, float]:
    batch = ingest_pb2.ReportRequest(events=events("bench", BATCH))
    latencies: list[float] = []
    start = time.monotonic()
    deadline = start + DURATION
    totals = await asyncio.gather(*(client(address, batch, deadline, latencies) for _ in range(CONCURRENCY)))
    elapsed = time.monotonic() - start
    p50 = statistics.median(latencies) * 1000
    p99 = statistics.quantiles(latencies, n=100)[98] * 1000
    return sum(totals) / elapsed, p50, p99, sum(totals), elapsed


def stages(tmp: Path, rounds: int = 40) -> dict[str, float]:
    """CPU us/record of each stage of Pipeline.report + the store thread, in this process, same batches."""
    request = ingest_pb2.ReportRequest(events=events("stage", BATCH)).SerializeToString()
    counters = Counters()
    store = Store(tmp / "stages.db")
    jsonl = JsonlSink(tmp / "stages.jsonl", 0, 0, counters)
    joiner = Joiner(None, 0, counters)
    detector = DetectionEngine(DetectSettings(), None, counters)  # serve's default row subscriber
    spent = dict.fromkeys(["decode+validate", "admit", "join", "row", "store", "jsonl", "detect"], 0.0)
    for _ in range(rounds):
        marks = [time.process_time()]
        batch = decode_report(request)  # the native pass: event rows for the plainly valid events
        marks.append(time.process_time())
        good, _ = admit(batch.events, time.time(), counters, "bench")  # the Python path for the others
        marks.append(time.process_time())
        joined = [joiner._inspector_off(e) for e in good]
        marks.append(time.process_time())
        now = time.time_ns()
        rows = make_rows(good, now, joined)
        marks.append(time.process_time())
        store.write_rows(rows)
        marks.append(time.process_time())
        jsonl.write(rows, store.connection_json)
        marks.append(time.process_time())
        detector.process(rows)  # the rows as Pipeline.subscribe_rows hands them over: no message built
        marks.append(time.process_time())
        for name, a, b in zip(spent, marks, marks[1:], strict=False):
            spent[name] += b - a
    store.close()
    jsonl.close()
    return {name: 1e6 * s / (rounds * BATCH) for name, s in spent.items()}


def main() -> int:
    cpu_per_record = 0.0
    for sinks in ("SQLite + JSONL", "SQLite only"):
        with tempfile.TemporaryDirectory() as tmp:
            extra = ["--jsonl", f"{tmp}/records.jsonl"] if "JSONL" in sinks else []
            sidecar = start_sidecar(Path(tmp), *extra)
            try:
                cpu0 = cpu_seconds(sidecar.process.pid)
                rate, p50, p99, total, _ = asyncio.run(run_counted(sidecar.address))
                cpu = cpu_seconds(sidecar.process.pid) - cpu0
                rss, peak = rss_mb(sidecar.process.pid)
            finally:
                sidecar.stop()
        us = 1e6 * cpu / max(total, 1)
        if "JSONL" in sinks:
            cpu_per_record = us
        print(f"ingest ({sinks}): {rate:,.0f} records/s sustained over {DURATION:.0f}s ({CONCURRENCY} clients x "
              f"{BATCH}-event batches, ack after commit); batch ack p50 {p50:.1f} ms, p99 {p99:.1f} ms; sidecar CPU "
              f"{us:.1f} us/record ({cpu / DURATION:.2f} cores); RSS at the end {rss:.0f} MB (peak {peak:.0f}) "
              f"(goal >= {GOAL_RATE:,}/s, <= {GOAL_CPU_US:.0f} us/record, RSS <= {GOAL_RSS_MB} MB)")
    with tempfile.TemporaryDirectory() as tmp:
        sidecar = start_sidecar(Path(tmp), "--jsonl", f"{tmp}/records.jsonl")
        try:
            cpu0 = cpu_seconds(sidecar.process.pid)
            done, p50, p99 = asyncio.run(paced(sidecar.address, PACED_RATE, PACED_BATCH))
            cpu = cpu_seconds(sidecar.process.pid) - cpu0
        finally:
            sidecar.stop()
    print(f"ingest_paced (SQLite + JSONL): {done:,.0f} records/s offered as {PACED_BATCH}-event batches every "
          f"{PACED_BATCH / PACED_RATE * 1000:.0f} ms; batch ack p50 {p50:.1f} ms, p99 {p99:.1f} ms; sidecar "
          f"{cpu / DURATION:.2f} cores (goal p99 <= {GOAL_P99_MS:.0f} ms at {PACED_RATE:,}/s)")
    with tempfile.TemporaryDirectory() as tmp:
        per = stages(Path(tmp))
    listed = sum(per.values())
    rest = max(cpu_per_record - listed, 0.0)
    print("ingest_stages (CPU us/record, in-process profile of the same batches): "
          + " ".join(f"{k} {v:.1f}" for k, v in per.items())
          + f"; sum {listed:.1f}; the rest of the sidecar's {cpu_per_record:.1f} (gRPC handling, event loop, "
            f"SQLite checkpoints) {rest:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

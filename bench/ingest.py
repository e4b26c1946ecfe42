"""Sustained ingest: records/s from gRPC clients sending batches through validation to SQLite + JSONL.

Starts a real `authwire serve` (no inspector), runs CONCURRENCY async clients for DURATION seconds, each
sending batches of BATCH events and waiting for the ack (which comes after the SQLite commit). Prints one
result line. Goal (issue 2): >= 50,000 records/s with p99 batch ack < 50 ms.
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
from authwire.v1 import ingest_pb2, ingest_pb2_grpc  # noqa: E402
from support import auth_event, start_sidecar  # noqa: E402

DURATION = 10.0
CONCURRENCY = 4
BATCH = 500
PACED_RATE = 5000   # records/s offered in the paced run: a busy gateway's steady load, below saturation
PACED_BATCH = 100


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
    batch = ingest_pb2.ReportRequest(events=[auth_event(f"paced-{i}") for i in range(batch_size)])
    interval = batch_size / rate
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = ingest_pb2_grpc.IngestStub(channel)

        async def one() -> None:
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
    batch = ingest_pb2.ReportRequest(events=[auth_event(f"bench-{i}", client=("10.0.0.1", 1024 + i))
                                             for i in range(BATCH)])
    latencies: list[float] = []
    start = time.monotonic()
    deadline = start + DURATION
    totals = await asyncio.gather(*(client(address, batch, deadline, latencies) for _ in range(CONCURRENCY)))
    elapsed = time.monotonic() - start
    p50 = statistics.median(latencies) * 1000
    p99 = statistics.quantiles(latencies, n=100)[98] * 1000
    return sum(totals) / elapsed, p50, p99


def main() -> int:
    for sinks in ("SQLite + JSONL", "SQLite only"):
        with tempfile.TemporaryDirectory() as tmp:
            extra = ["--jsonl", f"{tmp}/records.jsonl"] if "JSONL" in sinks else []
            sidecar = start_sidecar(Path(tmp), *extra)
            try:
                rate, p50, p99 = asyncio.run(run(sidecar.address))
            finally:
                sidecar.stop()
        print(f"ingest ({sinks}): {rate:,.0f} records/s sustained over {DURATION:.0f}s ({CONCURRENCY} clients x "
              f"{BATCH}-event batches); batch ack p50 {p50:.1f} ms, p99 {p99:.1f} ms "
              f"(goal >= 50,000/s, p99 < 50 ms)")
    with tempfile.TemporaryDirectory() as tmp:
        sidecar = start_sidecar(Path(tmp), "--jsonl", f"{tmp}/records.jsonl")
        try:
            done, p50, p99 = asyncio.run(paced(sidecar.address, PACED_RATE, PACED_BATCH))
        finally:
            sidecar.stop()
    print(f"ingest_paced (SQLite + JSONL): {done:,.0f} records/s offered as {PACED_BATCH}-event batches every "
          f"{PACED_BATCH / PACED_RATE * 1000:.0f} ms; batch ack p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

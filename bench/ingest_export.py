"""What operations cost: ingest with /metrics scraped every second by a real Prometheus and OTLP export on.

Reuses bench/ingest.py's drivers (its paced and saturating gRPC clients). The sidecar runs without the JSONL
sink, so all of its CPU is in one process, read from /proc/<pid>/stat around each run:

- paced (5,000 records/s offered, 100-event batches, 10 s): sidecar CPU per record with nothing, with
  Prometheus scraping /metrics every 1 s, and with that plus OTLP export to a gRPC LogsService receiver;
  the differences are the added CPU per record (goal <= 3 us for both together);
- saturated (4 clients x 500-event batches, 10 s): ingest records/s without and with export, and what the
  exporter delivered (records/s to the receiver, drops by reason) while ingest ran flat out.

The receiver is a null LogsService (it counts calls and bytes, decodes nothing) so that it takes as little
of the machine's CPU as possible; the record count comes from the sidecar's own otlp.exported counter.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path

import grpc

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent / "tests"), str(BENCH.parent / "tests" / "export")]
import ingest  # noqa: E402  (bench/ingest.py: the drivers)
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2  # noqa: E402
from proc_stats import cpu_seconds  # noqa: E402  (bench/proc_stats.py)
from prometheus_server import prometheus_missing, start_prometheus  # noqa: E402

from authwire.export.otlp import EXPORT_METHOD  # noqa: E402
from authwire.v1 import query_pb2  # noqa: E402
from support import free_port, start_sidecar, wait_until  # noqa: E402

REPEATS = 2


class NullLogsReceiver:
    """LogsService/Export that answers success without decoding the request."""

    def __init__(self) -> None:
        self.calls = 0
        self.bytes = 0
        empty = logs_service_pb2.ExportLogsServiceResponse().SerializeToString()

        def export(request: bytes, context) -> bytes:
            self.calls += 1
            self.bytes += len(request)
            return empty

        service, method = EXPORT_METHOD.strip("/").split("/")
        handler = grpc.method_handlers_generic_handler(service, {method: grpc.unary_unary_rpc_method_handler(
            export, request_deserializer=None, response_serializer=None)})
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self) -> None:
        self.server.stop(grace=None).wait()


def counter(sidecar, name: str, label: str | None = None) -> int:
    stats = sidecar.query().Stats(query_pb2.StatsRequest(), timeout=10)
    return sum(c.value for c in stats.counters if c.name == name and (label is None or c.label == label))


def scenario(scrape: bool, export: bool, saturate: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        receiver = NullLogsReceiver() if export else None
        args = ["--http-listen", f"127.0.0.1:{port}"]
        if receiver is not None:
            args += ["--otlp-endpoint", f"127.0.0.1:{receiver.port}"]
        sidecar = start_sidecar(Path(tmp), *args)
        prometheus = start_prometheus(Path(tmp) / "prometheus", [f"127.0.0.1:{port}"]) if scrape else None
        try:
            if prometheus is not None:
                wait_until(lambda: prometheus.value('up{job="authwire"}') == 1, 30, "the first scrape")
            pid = sidecar.process.pid
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            if saturate:
                rate, _, p99 = asyncio.run(ingest.run(sidecar.address))
            else:
                rate, _, p99 = asyncio.run(ingest.paced(sidecar.address, ingest.PACED_RATE, ingest.PACED_BATCH))
            ingest_seconds = time.monotonic() - t0
            accepted = counter(sidecar, "ingest.accepted")
            out = {"rate": rate, "p99": p99, "records": accepted}
            if receiver is not None:
                # Until every record is exported or dropped (bounded): the export's own throughput.
                def settled() -> bool:
                    return counter(sidecar, "otlp.exported") + counter(sidecar, "otlp.dropped") >= accepted

                wait_until(settled, 120, "the exporter to deliver or drop every record", interval=0.2)
                export_seconds = time.monotonic() - t0
                out |= {"exported": counter(sidecar, "otlp.exported"), "dropped": counter(sidecar, "otlp.dropped"),
                        "export_rate": counter(sidecar, "otlp.exported") / export_seconds,
                        "export_seconds": export_seconds, "bytes_per_record":
                        receiver.bytes / max(counter(sidecar, "otlp.exported"), 1)}
            out["cpu_us"] = (cpu_seconds(pid) - cpu0) / accepted * 1e6
            out["ingest_seconds"] = ingest_seconds
            return out
        finally:
            if prometheus is not None:
                prometheus.stop()
            sidecar.stop()
            if receiver is not None:
                receiver.stop()


def main() -> int:
    missing = prometheus_missing()
    if missing:
        print(f"ingest_export: {missing}", file=sys.stderr)
        return 1
    # Twice each, interleaved, keeping each one's lowest CPU per record: the machine is shared and the
    # difference sought (a few us) is smaller than what other load adds to one run.
    runs: dict[str, list[dict]] = {"base": [], "metrics": [], "both": []}
    for _ in range(REPEATS):
        runs["base"].append(scenario(scrape=False, export=False, saturate=False))
        runs["metrics"].append(scenario(scrape=True, export=False, saturate=False))
        runs["both"].append(scenario(scrape=True, export=True, saturate=False))
    base, metrics, both = (min(runs[k], key=lambda r: r["cpu_us"]) for k in ("base", "metrics", "both"))
    print(f"ingest_export (paced {ingest.PACED_RATE:,}/s x {ingest.DURATION:.0f}s, SQLite only): sidecar CPU per "
          f"record {base['cpu_us']:.1f} us; with /metrics scraped every 1 s {metrics['cpu_us']:.1f} us "
          f"({metrics['cpu_us'] - base['cpu_us']:+.1f}); with scrape + OTLP export {both['cpu_us']:.1f} us "
          f"({both['cpu_us'] - base['cpu_us']:+.1f} us/record, goal <= 3); exported {both['exported']:,} of "
          f"{both['records']:,}, dropped {both['dropped']}, {both['bytes_per_record']:.0f} bytes/record on the wire")
    flat = scenario(scrape=False, export=False, saturate=True)
    flat_export = scenario(scrape=True, export=True, saturate=True)
    print(f"ingest_export (saturated, {ingest.CONCURRENCY} clients x {ingest.BATCH}-event batches, "
          f"{ingest.DURATION:.0f}s): ingest {flat['rate']:,.0f} records/s without export, "
          f"{flat_export['rate']:,.0f} with scrape + OTLP (CPU/record {flat['cpu_us']:.0f} -> "
          f"{flat_export['cpu_us']:.0f} us); export delivered {flat_export['exported']:,} records in "
          f"{flat_export['export_seconds']:.1f} s ({flat_export['export_rate']:,.0f} records/s), dropped "
          f"{flat_export['dropped']:,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

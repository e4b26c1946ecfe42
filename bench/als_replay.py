"""The sidecar's CPU per Envoy access-log entry, by ALS message size: real Envoy entries replayed at full speed.

bench/overhead.py measures the ALS path beside a real Envoy and wrk on the same 2 cores, where the sidecar
gets what the others leave; this one isolates the sidecar's side. Entries captured from Envoy 1.40
(tests/envoy/data/als_capture.json: JWT and Basic successes and failures, a public route), each made distinct
(request id, client port, start time), are framed into StreamAccessLogsMessages the way Envoy batches them
(entries added until buffer_size_bytes is reached) and streamed to `authwire serve` (no inspector) over its
unix socket by one StreamAccessLogs call, as fast as it reads them; the bench waits until every entry is
stored. Prints, per message size:

  als_replay: <bytes> bytes/message (<n> entries): <entries/s> stored; sidecar CPU <us> us/entry (event loop <us>,
              other threads <us>), mapping alone <us> us/entry

The sidecar's CPU is /proc (every thread); "mapping alone" is what the stream does per entry (entry_to_item:
the mapping and the native pass's row) in this process on the same entries. The client runs on the same
cores: entries/s is what was left for the sidecar.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import sys
import tempfile
import time
from pathlib import Path

# bench/validate.py would shadow the `validate` package Envoy's protos import: bench/ goes last.
_BENCH = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p != _BENCH] + [_BENCH]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import grpc  # noqa: E402
from envoy.service.accesslog.v3 import als_pb2  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from proc_stats import cpu_seconds, thread_cpu_seconds  # noqa: E402  (bench/proc_stats.py)

from authwire.ingest import envoy_als  # noqa: E402
from authwire.v1 import query_pb2  # noqa: E402
from support import start_sidecar, wait_until  # noqa: E402

CAPTURE = Path(__file__).resolve().parent.parent / "tests" / "envoy" / "data" / "als_capture.json"
SIZES = (16_384, 65_536, 262_144)  # Envoy's default buffer_size_bytes, the example config's, and a larger one
ENTRIES = 40_000
METHOD = f"/{envoy_als.SERVICE_NAME}/StreamAccessLogs"


def entries(n: int, now_s: int) -> list:
    capture = json_format.Parse(CAPTURE.read_text(), als_pb2.StreamAccessLogsMessage())
    base = list(capture.http_logs.log_entry)
    out = []
    for i in range(n):
        entry = copy.deepcopy(base[i % len(base)])
        entry.request.request_id = f"{i:08x}-83cb-4d69-90a3-ab0d24ff50d4"
        entry.common_properties.downstream_direct_remote_address.socket_address.port_value = 1024 + i % 60000
        entry.common_properties.start_time.FromNanoseconds(now_s * 10**9 + i * 1000)
        out.append(entry)
    return out, capture.identifier


def messages(batch: list, identifier, size: int) -> list[bytes]:
    """StreamAccessLogsMessages as Envoy frames them: entries added until their size reaches `size`."""
    out, message, approx = [], als_pb2.StreamAccessLogsMessage(identifier=identifier), 0
    for entry in batch:
        message.http_logs.log_entry.append(entry)
        approx += entry.ByteSize()
        if approx >= size:
            out.append(message.SerializeToString())
            message, approx = als_pb2.StreamAccessLogsMessage(), 0
    if approx:
        out.append(message.SerializeToString())
    return out


async def stream(address: str, frames: list[bytes]) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.stream_unary(METHOD, request_serializer=None, response_deserializer=None)

        async def requests():
            for frame in frames:
                yield frame
        await call(requests(), timeout=120)


def stored(sidecar) -> int:
    return sidecar.query().Stats(query_pb2.StatsRequest(), timeout=10).store_records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=ENTRIES, help="entries replayed per message size")
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES, help="ALS message sizes (bytes)")
    args = parser.parse_args()
    node = envoy_als.EnvoyNode("authwire-envoy", "1.40.0")
    with tempfile.TemporaryDirectory() as tmp_name:
        sidecar = start_sidecar(Path(tmp_name), "--retention-age", "0")
        try:
            for size in args.sizes:
                batch, identifier = entries(args.entries, int(time.time()))
                frames = messages(batch, identifier, size)
                now = time.time()
                t0 = time.thread_time()
                for entry in batch:
                    envoy_als.entry_to_item(entry, node, "x-consumer", now)
                mapping_us = 1e6 * (time.thread_time() - t0) / len(batch)
                before, cpu0, threads0 = stored(sidecar), cpu_seconds(sidecar.process.pid), \
                    thread_cpu_seconds(sidecar.process.pid)
                t0 = time.monotonic()
                asyncio.run(stream(sidecar.address, frames))
                wait_until(lambda: stored(sidecar) >= before + len(batch), 60,  # noqa: B023
                           f"{len(batch)} replayed entries stored")
                elapsed = time.monotonic() - t0
                cpu = cpu_seconds(sidecar.process.pid) - cpu0
                threads = thread_cpu_seconds(sidecar.process.pid)
                main_thread = threads.get("main", 0.0) - threads0.get("main", 0.0)
                n = stored(sidecar) - before
                print(f"als_replay: {size} bytes/message ({len(batch) // len(frames)} entries): {n / elapsed:.0f} "
                      f"entries/s stored; sidecar CPU {1e6 * cpu / n:.1f} us/entry (event loop "
                      f"{1e6 * main_thread / n:.1f}, other threads {1e6 * (cpu - main_thread) / n:.1f}), "
                      f"mapping alone {mapping_us:.1f} us/entry")
        finally:
            sidecar.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

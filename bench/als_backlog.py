"""How far behind the sidecar may fall before Envoy drops access-log entries: a receiver that stops reading.

Envoy's gRPC access logger drops an entry (access_logs.grpc_access_log.logs_dropped) when its stream is above
its write-buffer high watermark and its own batch is full (source/extensions/access_loggers/common/
grpc_access_logger.h, canLogMore/flush). This bench measures where that is: a real Envoy (the demo config,
jwt_authn on every request) streams its access log to an ALS receiver that reads the first message and then
stops reading, while wrk sends requests for a few seconds; Envoy's counters then say how many entries it took
(sent + queued) before it dropped. Prints:

  als_backlog: Envoy held <n> entries (<MB> MB queued on the stream) for a receiver that stopped reading,
               then dropped <d> of <r> requests' entries
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import tempfile
from pathlib import Path

# bench/validate.py would shadow the `validate` package Envoy's protos import: bench/ goes last.
_BENCH = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p != _BENCH] + [_BENCH]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import grpc  # noqa: E402
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc  # noqa: E402

from authwire.demo.credentials import DemoCredentials  # noqa: E402
from authwire.demo.envoy_runner import EnvoyProcess, GatewaySpec  # noqa: E402
from support import free_port  # noqa: E402

SECONDS = 4


class StopsReading(als_pb2_grpc.AccessLogServiceServicer):
    """Reads one message, then never again (a sidecar stuck for longer than the whole run)."""

    def __init__(self) -> None:
        self.read = 0
        self.stuck = asyncio.Event()

    async def StreamAccessLogs(self, request_iterator, context):  # noqa: N802
        async for message in request_iterator:
            self.read += len(message.http_logs.log_entry)
            self.stuck.set()
            await asyncio.Event().wait()  # until the server stops
        return als_pb2.StreamAccessLogsResponse()


async def run() -> str:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = grpc.aio.server()
        receiver = StopsReading()
        als_pb2_grpc.add_AccessLogServiceServicer_to_server(receiver, server)
        server.add_insecure_port(f"unix:{tmp}/als.sock")
        await server.start()
        creds = DemoCredentials()
        port = free_port()
        envoy = EnvoyProcess(GatewaySpec(listen=f"127.0.0.1:{port}", als_target=f"unix:{tmp}/als.sock",
                                         admin_socket=str(tmp / "admin.sock")), creds, tmp / "envoy")
        try:
            await asyncio.to_thread(envoy.wait_ready)
            result = await asyncio.to_thread(
                subprocess.run, ["wrk", "-t1", "-c16", f"-d{SECONDS}s", "-H",
                                 f"Authorization: Bearer {creds.token('bench')}", f"http://127.0.0.1:{port}/jwt/bench"],
                capture_output=True, text=True, timeout=SECONDS + 30)
            total = re.search(r"(\d+) requests in", result.stdout)
            if result.returncode != 0 or not total:
                raise RuntimeError(f"wrk failed: {result.stdout}{result.stderr}")
            stats = envoy.stats()
        finally:
            envoy.stop()
            await server.stop(0)
    written = stats.get("access_logs.grpc_access_log.logs_written", 0)
    dropped = stats.get("access_logs.grpc_access_log.logs_dropped", 0)
    pending = stats.get("cluster.authwire.http2.pending_send_bytes", 0)
    return (f"als_backlog: Envoy held {written} entries ({pending / 1e6:.1f} MB queued on the stream, "
            f"{stats.get('cluster.authwire.upstream_cx_tx_bytes_total', 0) / 1e6:.1f} MB sent) for a receiver "
            f"that stopped reading after {receiver.read}, then dropped {dropped} of {total.group(1)} requests' "
            f"entries (buffer_size_bytes={GatewaySpec.als_buffer_bytes})")


def main() -> int:
    print(asyncio.run(run()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

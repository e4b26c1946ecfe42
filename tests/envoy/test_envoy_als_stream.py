"""The ALS stream handler's flow control: it keeps reading Envoy's stream while earlier batches wait for their
commit, up to MAX_IN_FLIGHT_ENTRIES entries (Envoy drops entries while we do not read: its gRPC stream is
above its write-buffer high watermark, source/extensions/access_loggers/common/grpc_access_logger.h), then
waits, counted as envoy_als.read_paused; nothing read is lost.

The pipeline here is a stand-in whose report waits until the test opens it, so "a commit is slow" is
deterministic; the real pipeline behind a real Envoy is tests/envoy/test_envoy_live.py.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from envoy.service.accesslog.v3 import als_pb2
from google.protobuf import json_format

from authwire.config import Config
from authwire.counters import Counters
from authwire.ingest import envoy_als
from authwire.v1 import ingest_pb2

CAPTURE = json.loads((Path(__file__).parent / "data" / "als_capture.json").read_text())


class HeldPipeline:
    """report() takes the events and returns when `release` is set, like a commit that takes its time."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.taken: list[int] = []
        self.reported = 0

    async def report(self, events, source):
        self.taken.append(len(events))
        await self.release.wait()
        self.reported += len(events)
        return ingest_pb2.ReportResponse(accepted=len(events))


def messages(n_messages: int, per_message: int) -> list[als_pb2.StreamAccessLogsMessage]:
    capture = json_format.Parse(json.dumps(CAPTURE), als_pb2.StreamAccessLogsMessage())
    entry = capture.http_logs.log_entry[0]
    out = []
    for m in range(n_messages):
        msg = als_pb2.StreamAccessLogsMessage()
        if m == 0:
            msg.identifier.CopyFrom(capture.identifier)
        for i in range(per_message):
            msg.http_logs.log_entry.append(entry)
            msg.http_logs.log_entry[-1].request.request_id = f"r-{m}-{i}"
        out.append(msg)
    return out


def test_reading_goes_on_while_commits_wait_then_pauses_at_the_bound_and_loses_nothing():
    async def scenario() -> None:
        pipeline, counters = HeldPipeline(), Counters()
        service = envoy_als.AccessLogService(pipeline, Config(), counters)
        per_message = 500
        below = envoy_als.MAX_IN_FLIGHT_ENTRIES // per_message  # messages that fit under the bound
        stream = messages(below + 4, per_message)
        read = 0

        async def envoy():
            nonlocal read
            for msg in stream:
                read += 1
                yield msg

        handler = asyncio.create_task(service.StreamAccessLogs(envoy(), None))
        # All the messages below the bound are read although none of their commits has finished.
        for _ in range(2000):
            if sum(pipeline.taken) >= (below + 1) * per_message:
                break
            await asyncio.sleep(0)
        assert read == below + 1 and sum(pipeline.taken) == (below + 1) * per_message
        assert counters.get("envoy_als.read_paused") == 1 and pipeline.reported == 0
        for _ in range(50):
            await asyncio.sleep(0)
        assert read == below + 1  # paused: more in flight than the bound
        pipeline.release.set()
        await asyncio.wait_for(handler, 10)
        assert pipeline.reported == len(stream) * per_message
        assert counters.get("envoy_als.entries") == len(stream) * per_message
        assert counters.get("envoy_als.lost", "store_unavailable") == 0

    asyncio.run(scenario())

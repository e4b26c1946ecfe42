"""gRPC Ingest service: gateways and `authwire ingest` report AuthEvents here.

Registered with authwire.ingest.decode as the request deserializer instead of the generated one, so a body
that does not parse is counted (`ingest.malformed{source}`) and answered INVALID_ARGUMENT (Report) or with
a response naming it (ReportStream, which keeps reading), never a traceback and INTERNAL; events that do
not parse on their own are rejections of their index, and their neighbours are stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from authwire.counters import Counters
from authwire.ingest.decode import DecodedReport, Malformed, decode_report
from authwire.ingest.problem_log import RateLimitedLog
from authwire.pipeline import Pipeline, StoreUnavailable
from authwire.v1 import ingest_pb2

SERVICE = "authwire.v1.Ingest"


class IngestService:
    def __init__(self, pipeline: Pipeline, counters: Counters) -> None:
        self.pipeline = pipeline
        self.counters = counters
        self.problems = RateLimitedLog("ingest")

    def _malformed(self, bad: Malformed, source: str) -> str:
        self.counters.inc("ingest.malformed", source)
        self.problems.log("malformed", f"{source}: {bad.why}")
        return bad.why

    async def _report(self, decoded: DecodedReport, source: str) -> ingest_pb2.ReportResponse:
        if decoded.undecodable:
            self.counters.inc("ingest.malformed", source, len(decoded.undecodable))
            self.counters.inc("ingest.rejected", "event", len(decoded.undecodable))
            self.counters.inc("ingest.rejected_events", source, len(decoded.undecodable))
            self.problems.log("malformed_event", f"{source}: {len(decoded.undecodable)} events did not parse")
        return decoded.remap(await self.pipeline.report(decoded.events, source, decoded.drops))

    async def Report(self, request: DecodedReport | Malformed, context: grpc.aio.ServicerContext  # noqa: N802
                     ) -> ingest_pb2.ReportResponse:
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, self._malformed(request, "grpc"))
        try:
            return await self._report(request, "grpc")
        except StoreUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))

    async def ReportStream(self, request_iterator: AsyncIterator[DecodedReport | Malformed],  # noqa: N802
                           context: grpc.aio.ServicerContext) -> AsyncIterator[ingest_pb2.ReportResponse]:
        async for request in request_iterator:
            if isinstance(request, Malformed):
                # one response per request message, as the proto promises: this one names the problem
                why = self._malformed(request, "grpc-stream")
                yield ingest_pb2.ReportResponse(rejections=[ingest_pb2.Rejection(field="request", reason=why)])
                continue
            try:
                yield await self._report(request, "grpc-stream")
            except StoreUnavailable as exc:
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))


def add_to_server(server: grpc.aio.Server, pipeline: Pipeline, counters: Counters) -> IngestService:
    service = IngestService(pipeline, counters)
    serialize = ingest_pb2.ReportResponse.SerializeToString
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
        "Report": grpc.unary_unary_rpc_method_handler(service.Report, decode_report, serialize),
        "ReportStream": grpc.stream_stream_rpc_method_handler(service.ReportStream, decode_report, serialize),
    })])
    return service

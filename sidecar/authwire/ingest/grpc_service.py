"""gRPC Ingest service: gateways and `authwire ingest` report AuthEvents here."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from authwire.pipeline import Pipeline, StoreUnavailable
from authwire.v1 import ingest_pb2, ingest_pb2_grpc


class IngestService(ingest_pb2_grpc.IngestServicer):
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    async def Report(self, request: ingest_pb2.ReportRequest, context: grpc.aio.ServicerContext
                     ) -> ingest_pb2.ReportResponse:
        try:
            return await self.pipeline.report(request.events, "grpc", _drops(request))
        except StoreUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))

    async def ReportStream(self, request_iterator: AsyncIterator[ingest_pb2.ReportRequest],
                           context: grpc.aio.ServicerContext) -> AsyncIterator[ingest_pb2.ReportResponse]:
        async for request in request_iterator:
            try:
                yield await self.pipeline.report(request.events, "grpc-stream", _drops(request))
            except StoreUnavailable as exc:
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))


def _drops(request: ingest_pb2.ReportRequest) -> ingest_pb2.ReporterDrops | None:
    return request.drops if request.HasField("drops") else None

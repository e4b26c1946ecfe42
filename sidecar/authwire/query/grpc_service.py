"""gRPC Query service: records, live tail, counters and the kernel's live connections."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc

from authwire.counters import Counters
from authwire.pipeline import Pipeline
from authwire.store.record_store import QueryError, Store
from authwire.v1 import query_pb2, query_pb2_grpc, record_pb2

TAIL_POLL_SECONDS = 1.0  # upper bound between store checks when no commit wakes the tail


class QueryService(query_pb2_grpc.QueryServicer):
    def __init__(self, store: Store, pipeline: Pipeline, counters: Counters, inspector=None,
                 inspector_status: str = "", alerts=None) -> None:
        self.store = store
        self.alerts = alerts  # authwire.detect.query_service.AlertQueries (Alerts, TailAlerts), or None
        self.pipeline = pipeline
        self.counters = counters
        self.inspector = inspector
        self.inspector_status = inspector_status
        self.started = time.time()

    async def Query(self, request: query_pb2.QueryRequest, context: grpc.aio.ServicerContext
                    ) -> query_pb2.QueryResponse:
        try:
            result = await asyncio.to_thread(self.store.query, request.filters, request.limit,
                                             request.page_token, list(request.group_by))
        except QueryError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return query_pb2.QueryResponse(records=result.records, next_page_token=result.next_page_token,
                                       groups=result.groups)

    async def Tail(self, request: query_pb2.TailRequest, context: grpc.aio.ServicerContext
                   ) -> AsyncIterator[record_pb2.EnrichedRecord]:
        try:
            last_id = await asyncio.to_thread(self.store.max_id)
            if request.backlog:
                recent = await asyncio.to_thread(self.store.query, request.filters, request.backlog)
                for row_id, record in reversed(list(zip(recent.ids, recent.records, strict=True))):
                    if row_id <= last_id:  # newer ones come from the follow loop below, exactly once
                        yield record
            while not context.done():
                # Tail re-reads the store by id rather than filtering what the writer hands over, so there
                # is one implementation of the filters (SQL).
                top = await asyncio.to_thread(self.store.max_id)
                while last_id < top:
                    result = await asyncio.to_thread(self.store.query, request.filters, 1000, "", (),
                                                     last_id, top)
                    for record in result.records:
                        yield record
                    last_id = result.last_id
                await self.pipeline.wait_for_commit(TAIL_POLL_SECONDS)
        except QueryError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    async def Stats(self, request: query_pb2.StatsRequest, context: grpc.aio.ServicerContext
                    ) -> query_pb2.StatsResponse:
        counters = [query_pb2.Counter(name=n, label=label, value=v)
                    for (n, label), v in sorted(self.counters.snapshot().items())]
        if self.inspector is not None:
            counters += [query_pb2.Counter(name=f"kernel.{n}", value=v)
                         for n, v in sorted(self.inspector.counters().items())]
        response = query_pb2.StatsResponse(
            counters=counters, store_records=await asyncio.to_thread(self.store.count),
            store_bytes=self.store.size_bytes(), inspector_running=self.inspector is not None,
            inspector_status=self.inspector_status,
            store_alerts=await asyncio.to_thread(self.alerts.count) if self.alerts is not None else 0)
        response.started.FromNanoseconds(int(self.started * 1e9))
        return response

    async def Connections(self, request: query_pb2.ConnectionsRequest, context: grpc.aio.ServicerContext
                          ) -> query_pb2.ConnectionsResponse:
        if self.inspector is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"the kernel inspector is not running: {self.inspector_status}")
        connections = self.inspector.table.all(request.include_closed)
        if request.client_ip:
            connections = [c for c in connections if c.client.ip == request.client_ip]
        return query_pb2.ConnectionsResponse(connections=connections)

    # --- alerts (detect helper): implemented in authwire.detect.query_service ---------------------------
    async def Alerts(self, request: query_pb2.AlertsRequest, context: grpc.aio.ServicerContext
                     ) -> query_pb2.AlertsResponse:
        if self.alerts is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this sidecar keeps no alert store")
        return await self.alerts.alerts(request, context)

    async def TailAlerts(self, request: query_pb2.TailAlertsRequest, context: grpc.aio.ServicerContext
                         ) -> AsyncIterator[record_pb2.Alert]:
        if self.alerts is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this sidecar keeps no alert store")
        async for alert in self.alerts.tail(request, context):
            yield alert

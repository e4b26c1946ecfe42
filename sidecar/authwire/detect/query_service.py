"""Query.Alerts and Query.TailAlerts: the alert RPCs, delegated to from authwire.query.grpc_service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from authwire.store.alerts import AlertStore
from authwire.store.record_store import QueryError
from authwire.v1 import query_pb2, record_pb2

TAIL_POLL_SECONDS = 1.0  # upper bound between store checks when no alert write wakes the tail


class AlertQueries:
    def __init__(self, store: AlertStore, engine=None) -> None:
        self.store = store
        self.engine = engine  # DetectionEngine or None (every detection off): the tail then polls

    async def alerts(self, request: query_pb2.AlertsRequest, context: grpc.aio.ServicerContext
                     ) -> query_pb2.AlertsResponse:
        try:
            result = await asyncio.to_thread(self.store.query, request.filters, request.limit, request.page_token)
        except QueryError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return query_pb2.AlertsResponse(alerts=result.alerts, next_page_token=result.next_page_token)

    async def tail(self, request: query_pb2.TailAlertsRequest, context: grpc.aio.ServicerContext
                   ) -> AsyncIterator[record_pb2.Alert]:
        try:
            seq = await asyncio.to_thread(self.store.max_seq)
            if request.backlog:
                recent = await asyncio.to_thread(self.store.query, request.filters, request.backlog)
                for alert in reversed(recent.alerts):
                    yield alert
            while not context.done():
                alerts, seq = await asyncio.to_thread(self.store.after, seq, request.filters)
                for alert in alerts:
                    yield alert
                if len(alerts) < 1000:
                    if self.engine is not None:
                        await self.engine.wait_for_alerts(TAIL_POLL_SECONDS)
                    else:
                        await asyncio.sleep(TAIL_POLL_SECONDS)
        except QueryError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    def count(self) -> int:
        return self.store.count()

"""gRPC `authwire.v1.Block`: list, add and remove kernel block-list entries of the running sidecar.

`authwire block list|add|remove` talks to it. The input is a client's: the IP is parsed and refused like
the detections' calls (blocklist.check), the reason bounded, and nothing the client sent is echoed raw.
"""

from __future__ import annotations

from typing import Any

import grpc

from authwire.kernel.blocklist import MAX_TTL_SECONDS, BlockEntry
from authwire.v1 import block_pb2, block_pb2_grpc

SERVICE_NAME = block_pb2.DESCRIPTOR.services_by_name["Block"].full_name


def _entry(e: BlockEntry) -> block_pb2.BlockedAddress:
    out = block_pb2.BlockedAddress(ip=e.ip, reason=e.reason, dropped=e.drops, would_drop=e.would_drops)
    out.expires.FromNanoseconds(int(e.expires_at * 1e9))
    return out


class BlockService(block_pb2_grpc.BlockServicer):
    def __init__(self, inspector: Any, inspector_status: str, counters: Any) -> None:
        self._inspector = inspector
        self._status = inspector_status
        self._counters = counters

    async def _require_inspector(self, context: grpc.aio.ServicerContext) -> Any:
        if self._inspector is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"no block list: the kernel inspector is off ({self._status})")
        return self._inspector

    async def List(self, request: block_pb2.ListBlockedRequest,
                   context: grpc.aio.ServicerContext) -> block_pb2.ListBlockedResponse:
        inspector = await self._require_inspector(context)
        return block_pb2.ListBlockedResponse(entries=[_entry(e) for e in inspector.blocked()],
                                             enforce=inspector.enforce)

    async def Add(self, request: block_pb2.AddBlockRequest,
                  context: grpc.aio.ServicerContext) -> block_pb2.AddBlockResponse:
        inspector = await self._require_inspector(context)
        ttl = request.ttl.ToNanoseconds() / 1e9 if request.HasField("ttl") else 600.0
        if not 0 < ttl <= MAX_TTL_SECONDS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"ttl: must be more than 0 and at most {MAX_TTL_SECONDS // 86400} days")
        ok, detail = inspector.blocklist.add(request.ip, ttl, request.reason or "added with authwire block")
        self._counters.inc("block.api_add", "added" if ok else detail)
        if not ok:
            return block_pb2.AddBlockResponse(added=False, refused=detail, enforce=inspector.enforce)
        entry = next((e for e in inspector.blocked() if e.ip == detail), None)
        response = block_pb2.AddBlockResponse(added=True, enforce=inspector.enforce)
        if entry is not None:
            response.entry.CopyFrom(_entry(entry))
        return response

    async def Remove(self, request: block_pb2.RemoveBlockRequest,
                     context: grpc.aio.ServicerContext) -> block_pb2.RemoveBlockResponse:
        inspector = await self._require_inspector(context)
        return block_pb2.RemoveBlockResponse(removed=inspector.unblock(request.ip))


def add_to_server(server: grpc.aio.Server, inspector: Any, inspector_status: str, counters: Any) -> None:
    block_pb2_grpc.add_BlockServicer_to_server(BlockService(inspector, inspector_status, counters), server)

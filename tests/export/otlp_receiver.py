"""A real OTLP/gRPC LogsService receiver (opentelemetry-proto's logs_service_pb2_grpc) for export tests."""

from __future__ import annotations

import threading
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2


def value_of(v: common_pb2.AnyValue):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value_of(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def attributes(kvs) -> dict:
    return {kv.key: value_of(kv.value) for kv in kvs}


@dataclass
class Received:
    resource: dict
    scope: str
    record: object          # logs_pb2.LogRecord
    attributes: dict
    metadata: dict


@dataclass
class LogsReceiver(logs_service_pb2_grpc.LogsServiceServicer):
    port: int = 0
    credentials: grpc.ServerCredentials | None = None
    received: list[Received] = field(default_factory=list)
    requests: list[logs_service_pb2.ExportLogsServiceRequest] = field(default_factory=list)
    calls: int = 0
    # (request, context) -> response, or abort the call: to play a collector that refuses or rejects
    respond: object = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: grpc.Server | None = None

    def Export(self, request: logs_service_pb2.ExportLogsServiceRequest, context):  # noqa: N802
        metadata = dict(context.invocation_metadata())
        with self._lock:
            self.calls += 1
        if self.respond is not None:
            return self.respond(request, context)
        with self._lock:
            self.requests.append(request)
            for rl in request.resource_logs:
                resource = attributes(rl.resource.attributes)
                for sl in rl.scope_logs:
                    for record in sl.log_records:
                        self.received.append(Received(resource, sl.scope.name, record,
                                                      attributes(record.attributes), metadata))
        return logs_service_pb2.ExportLogsServiceResponse()

    def start(self) -> LogsReceiver:
        """Listen on 127.0.0.1:port (port 0: pick one, kept for restarts)."""
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(self, server)
        address = f"127.0.0.1:{self.port}"
        port = (server.add_secure_port(address, self.credentials) if self.credentials
                else server.add_insecure_port(address))
        assert port, f"cannot listen on {address}"
        self.port = port
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None

    def count(self) -> int:
        with self._lock:
            return len(self.received)

    def by_request_id(self) -> dict[str, Received]:
        with self._lock:
            return {r.attributes.get("authwire.request.id"): r for r in self.received}

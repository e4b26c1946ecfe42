"""EnrichedRecord (and Alert) -> OTLP LogRecord: which attributes, and how they are encoded fast.

Attributes follow the OpenTelemetry semantic conventions where one exists (client.*, server.*, network.*,
http.*, url.path, user_agent.original) and `authwire.*` for the rest. The mapping is written once, as
(key, value) pairs per block of related fields (`*_attributes` below).

Speed: building every KeyValue as a protobuf message costs ~1 us per attribute in Python (~20 us a record),
so the export would cost more CPU than the whole ingest path. Instead each block is encoded once with the
opentelemetry-proto messages (LogRecord(attributes=...).SerializeToString()) and cached by the fields it
comes from: records of one connection, one route, one consumer share them. A record is then the
concatenation of its blocks' bytes plus the few per-record fields, which is a valid LogRecord encoding
because protobuf parses concatenated encodings of a message as their merge (repeated fields append).
`log_record()` builds the same LogRecord from messages only: the reference the tests compare against.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from authwire import __version__
from authwire.records import short_enum
from authwire.v1 import auth_event_pb2 as ae
from authwire.v1 import connection_pb2, record_pb2

Value = str | int | float | bool
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

SCOPE = common_pb2.InstrumentationScope(name="authwire", version=__version__)
RECORD_EVENT = "authwire.auth"
ALERT_EVENT = "authwire.alert"
SEVERITY_INFO = (logs_pb2.SEVERITY_NUMBER_INFO, "INFO")
SEVERITY_WARN = (logs_pb2.SEVERITY_NUMBER_WARN, "WARN")
CACHE_ENTRIES = 8192  # per block kind; cleared when full (a cheap bound: the next records refill it)


def _check_descriptors() -> None:
    """xds-protos ships a stale copy of opentelemetry/proto over opentelemetry-proto's (grpc/grpc#42926)."""
    fields = logs_pb2.LogRecord.DESCRIPTOR.fields_by_name
    if "observed_time_unix_nano" not in fields or "scope_logs" not in logs_pb2.ResourceLogs.DESCRIPTOR.fields_by_name:
        raise ImportError("opentelemetry-proto's generated files were overwritten by an old copy (xds-protos "
                          "installs one: grpc/grpc#42926); fix: pip install --force-reinstall --no-deps "
                          "opentelemetry-proto")


_check_descriptors()


# --- the mapping ----------------------------------------------------------------------------------------

def peer_attributes(event: ae.AuthEvent) -> list[tuple[str, Value]]:
    """Who talked to whom. client.* is the client as the gateway understood it (X-Forwarded-For when set);
    network.peer.* is always the TCP peer, network.local.* the gateway's socket."""
    out: list[tuple[str, Value]] = []
    if event.forwarded_for:
        out.append(("client.address", event.forwarded_for))
    elif event.client.ip:
        out += [("client.address", event.client.ip), ("client.port", event.client.port)]
    if event.client.ip:
        out += [("network.peer.address", event.client.ip), ("network.peer.port", event.client.port),
                ("network.type", "ipv6" if ":" in event.client.ip else "ipv4")]
    if event.server.ip:
        out += [("network.local.address", event.server.ip), ("network.local.port", event.server.port)]
    if event.server.port:
        out.append(("server.port", event.server.port))
    out.append(("network.transport", "tcp"))
    return out


def request_attributes(event: ae.AuthEvent) -> list[tuple[str, Value]]:
    """The HTTP request and its authentication (everything but the per-request ids, sizes and times)."""
    http, auth = event.http, event.auth
    out: list[tuple[str, Value]] = []
    server = http.host or event.server.ip
    if server:
        out.append(("server.address", server))
    for key, value in (("http.request.method", http.method), ("url.path", http.path),
                       ("user_agent.original", http.user_agent), ("authwire.route.id", event.route_id),
                       ("authwire.service.id", event.service_id), ("authwire.auth.plugin", auth.plugin),
                       ("authwire.auth.consumer", auth.consumer),
                       ("authwire.auth.credential_id", auth.credential_id),
                       ("authwire.auth.message", auth.message)):
        if value:
            out.append((key, value))
    if http.status:
        out.append(("http.response.status_code", http.status))
    out += [("authwire.auth.method", short_enum(ae.AuthMethod, auth.method)),
            ("authwire.auth.outcome", short_enum(ae.AuthOutcome, auth.outcome))]
    if auth.reason:
        out.append(("authwire.auth.reason", short_enum(ae.FailureReason, auth.reason)))
    if auth.HasField("jwt"):
        jwt = auth.jwt
        for key, value in (("iss", jwt.iss), ("sub", jwt.sub), ("aud", jwt.aud), ("kid", jwt.kid),
                           ("alg", jwt.alg), ("jti_hash", jwt.jti_hash), ("exp", jwt.exp), ("iat", jwt.iat)):
            if value:
                out.append((f"authwire.auth.jwt.{key}", value))
    gateway = event.gateway
    if gateway.kind:
        out.append(("authwire.gateway.kind", short_enum(ae.GatewayKind, gateway.kind)))
    return out


def connection_attributes(conn: connection_pb2.Connection) -> list[tuple[str, Value]]:
    """What the kernel saw of the connection that does not change after its handshake."""
    out: list[tuple[str, Value]] = [("authwire.connection.uid", conn.uid)]
    if conn.community_id:
        out.append(("authwire.connection.community_id", conn.community_id))
    if conn.interface:
        out.append(("authwire.connection.interface", conn.interface))
    if conn.mid_stream:
        out.append(("authwire.connection.mid_stream", True))
    if conn.HasField("handshake_rtt"):
        out.append(("authwire.connection.handshake_rtt", conn.handshake_rtt.ToNanoseconds() / 1e9))
    if conn.HasField("syn"):
        syn = conn.syn
        out += [("authwire.syn.signature", syn.signature), ("authwire.syn.os_hint", syn.os_hint),
                ("authwire.syn.ttl", syn.ttl), ("authwire.syn.initial_ttl", syn.initial_ttl),
                ("authwire.syn.hop_distance", syn.hop_distance), ("authwire.syn.window", syn.window),
                ("authwire.syn.mss", syn.mss), ("authwire.syn.window_scale", syn.window_scale)]
    return out


def join_attributes(record: record_pb2.EnrichedRecord) -> list[tuple[str, Value]]:
    """How the record was joined, and the connection's facts that change while it lives."""
    join = record.join
    out: list[tuple[str, Value]] = [("authwire.join.status", _JOIN_STATUS[join.status])]
    if join.behind_proxy:
        out.append(("authwire.join.behind_proxy", True))
    if record.HasField("connection"):
        conn = record.connection
        out.append(("authwire.connection.state", _CONN_STATE[conn.state]))
        retransmits = conn.to_server.retransmits + conn.to_client.retransmits
        if retransmits:
            out.append(("authwire.connection.retransmits", retransmits))
    return out


def per_record_attributes(record: record_pb2.EnrichedRecord) -> list[tuple[str, Value]]:
    """Fields that differ from one record to the next (never cached)."""
    event = record.event
    out: list[tuple[str, Value]] = [("authwire.request.id", event.request_id)]
    if event.HasField("latency"):
        out.append(("authwire.request.duration", event.latency.ToNanoseconds() / 1e9))
    http = event.http
    if http.request_bytes:
        out.append(("http.request.body.size", http.request_bytes))
    if http.response_bytes:
        out.append(("http.response.body.size", http.response_bytes))
    if event.gateway_connection_id:
        out.append(("authwire.gateway.connection_id", event.gateway_connection_id))
    if event.connection_requests:
        out.append(("authwire.gateway.connection_requests", event.connection_requests))
    if record.join.kernel_events_lost:
        out.append(("authwire.join.kernel_events_lost", record.join.kernel_events_lost))
    return out


_JOIN_STATUS = {v: short_enum(record_pb2.JoinStatus, v) for v in record_pb2.JoinStatus.values()}
_CONN_STATE = {v: short_enum(connection_pb2.ConnectionState, v) for v in connection_pb2.ConnectionState.values()}


def resource_attributes(kind: int, node: str, version: str) -> list[tuple[str, Value]]:
    out: list[tuple[str, Value]] = [("service.name", "authwire"), ("service.version", __version__),
                                    ("host.name", socket.gethostname())]
    if kind:
        out.append(("authwire.gateway.kind", short_enum(ae.GatewayKind, kind)))
    if node:
        out.append(("authwire.gateway.node", node))
    if version:
        out.append(("authwire.gateway.version", version))
    return out


def record_severity(event: ae.AuthEvent) -> tuple[int, str]:
    return SEVERITY_WARN if event.auth.outcome == ae.AUTH_OUTCOME_FAILURE else SEVERITY_INFO


def record_body(event: ae.AuthEvent) -> str:
    """One human line, e.g. 'GET /orders 401 jwt failure expired'."""
    auth = event.auth
    words = [event.http.method or "-", event.http.path or "-", str(event.http.status or "-"),
             short_enum(ae.AuthMethod, auth.method), short_enum(ae.AuthOutcome, auth.outcome)]
    if auth.reason:
        words.append(short_enum(ae.FailureReason, auth.reason))
    return " ".join(words)


def link_attributes(record: record_pb2.EnrichedRecord) -> list[tuple[str, Value]]:
    """Peer, join and connection: the same for the records of one connection (one cache entry)."""
    out = peer_attributes(record.event) + join_attributes(record)
    if record.HasField("connection"):
        out += connection_attributes(record.connection)
    return out


# --- messages (reference and cache fill) -----------------------------------------------------------------

def any_value(value: Value) -> common_pb2.AnyValue:
    if isinstance(value, bool):
        return common_pb2.AnyValue(bool_value=value)
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:  # uint64 fields past int64: the decimal text (AnyValue has no uint)
            return common_pb2.AnyValue(string_value=str(value))
        return common_pb2.AnyValue(int_value=value)
    if isinstance(value, float):
        return common_pb2.AnyValue(double_value=value)
    return common_pb2.AnyValue(string_value=value)


def key_values(pairs: Iterable[tuple[str, Value]]) -> list[common_pb2.KeyValue]:
    return [common_pb2.KeyValue(key=k, value=any_value(v)) for k, v in pairs]


def log_record(record: record_pb2.EnrichedRecord) -> logs_pb2.LogRecord:
    """The LogRecord for one record, from messages only (the reference; encode_record is the fast path)."""
    event = record.event
    severity, text = record_severity(event)
    pairs = [*request_attributes(event), *link_attributes(record), *per_record_attributes(record)]
    return logs_pb2.LogRecord(
        time_unix_nano=event.start_time.ToNanoseconds(),
        observed_time_unix_nano=record.received_time.ToNanoseconds(),
        severity_number=severity, severity_text=text, event_name=RECORD_EVENT,
        body=common_pb2.AnyValue(string_value=record_body(event)), attributes=key_values(pairs))


def _strings(key: str, values: Iterable[str]) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(array_value=common_pb2.ArrayValue(
        values=[common_pb2.AnyValue(string_value=v) for v in values])))


def alert_log_record(alert: record_pb2.Alert, new: bool) -> logs_pb2.LogRecord:
    """An alert as a LogRecord (event authwire.alert); an update of the same alert id comes again (new=False).

    Alerts are rare next to records, so this path builds messages directly.
    """
    severity = {record_pb2.ALERT_SEVERITY_CRITICAL: (logs_pb2.SEVERITY_NUMBER_ERROR, "ERROR"),
                record_pb2.ALERT_SEVERITY_WARNING: SEVERITY_WARN}.get(alert.severity, SEVERITY_INFO)
    pairs: list[tuple[str, Value]] = [
        ("authwire.alert.id", alert.id), ("authwire.alert.detection", alert.detection),
        ("authwire.alert.severity", short_enum(record_pb2.AlertSeverity, alert.severity)),
        ("authwire.alert.new", new)]
    if alert.client.ip:
        pairs.append(("client.address", alert.client.ip))
        if alert.client.port:
            pairs.append(("client.port", alert.client.port))
    for key, value in (("authwire.alert.key", alert.key), ("authwire.alert.stack", alert.stack)):
        if value:
            pairs.append((key, value))
    for key, ts in (("authwire.alert.first_time", alert.first_time), ("authwire.alert.last_time", alert.last_time)):
        if alert.HasField(key.rsplit(".", 1)[1]):
            pairs.append((key, ts.ToJsonString()))
    pairs += [(f"authwire.alert.evidence.{name}", float(v)) for name, v in sorted(alert.evidence.items())]
    attrs = key_values(pairs)
    for key, values in (("authwire.alert.request_ids", alert.request_ids), ("authwire.alert.clients", alert.clients),
                        ("authwire.alert.connection_uids", alert.connection_uids),
                        ("authwire.alert.credentials", alert.credentials), ("authwire.alert.blocked", alert.blocked)):
        if values:
            attrs.append(_strings(key, values))
    when = alert.updated_time if alert.HasField("updated_time") else alert.time
    return logs_pb2.LogRecord(time_unix_nano=alert.time.ToNanoseconds(), observed_time_unix_nano=when.ToNanoseconds(),
                              severity_number=severity[0], severity_text=severity[1], event_name=ALERT_EVENT,
                              body=common_pb2.AnyValue(string_value=alert.summary), attributes=attrs)


# --- wire encoding (the fast path) -----------------------------------------------------------------------

_SMALL_VARINTS = [bytes((n,)) for n in range(128)]


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL_VARINTS[n]
    if n < 0x4000:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


_LR = logs_pb2.LogRecord.DESCRIPTOR.fields_by_name
_KV = common_pb2.KeyValue.DESCRIPTOR.fields_by_name
_AV = common_pb2.AnyValue.DESCRIPTOR.fields_by_name
_ATTR_TAG = _varint(_LR["attributes"].number << 3 | 2)
_KEY_TAG = _varint(_KV["key"].number << 3 | 2)
_VALUE_TAG = _varint(_KV["value"].number << 3 | 2)
_STRING_TAG = _varint(_AV["string_value"].number << 3 | 2)
_INT_TAG = _varint(_AV["int_value"].number << 3 | 0)
_DOUBLE_TAG = _varint(_AV["double_value"].number << 3 | 1)
_BOOL_TAG = _varint(_AV["bool_value"].number << 3 | 0)
_TIME_TAG = _varint(_LR["time_unix_nano"].number << 3 | 1)            # fixed64
_OBSERVED_TAG = _varint(_LR["observed_time_unix_nano"].number << 3 | 1)
_KEYS: dict[str, bytes] = {}
_U64 = 0xFFFFFFFFFFFFFFFF


def _attribute(key: str, value: Value) -> bytes:
    """One LogRecord.attributes entry, encoded (per-record fields only; blocks go through messages)."""
    k = _KEYS.get(key)
    if k is None:
        raw = key.encode()
        k = _KEYS[key] = _KEY_TAG + _varint(len(raw)) + raw + _VALUE_TAG
    if value.__class__ is str:
        raw = value.encode()  # type: ignore[union-attr]
        v = _STRING_TAG + _varint(len(raw)) + raw
    elif value.__class__ is int:
        if not _INT64_MIN <= value <= _INT64_MAX:  # type: ignore[operator]
            return _attribute(key, str(value))   # as any_value() does
        v = _INT_TAG + _varint(value & _U64)  # type: ignore[operator]  # int64: negatives as two's complement
    elif value.__class__ is float:
        v = _DOUBLE_TAG + struct.pack("<d", value)
    else:
        v = _BOOL_TAG + (b"\x01" if value else b"\x00")
    kv = k + _varint(len(v)) + v
    return _ATTR_TAG + _varint(len(kv)) + kv


class _BlockCache:
    """key -> encoded attributes of a block, bounded."""

    __slots__ = ("build", "entries")

    def __init__(self, build: Callable[[Any], list[tuple[str, Value]]]) -> None:
        self.build = build
        self.entries: dict[Any, bytes] = {}

    def get(self, key: Any, source: Any) -> bytes:
        encoded = self.entries.get(key)
        if encoded is None:
            if len(self.entries) >= CACHE_ENTRIES:
                self.entries.clear()
            encoded = self.entries[key] = logs_pb2.LogRecord(
                attributes=key_values(self.build(source))).SerializeToString()
        return encoded


class RecordEncoder:
    """EnrichedRecord -> encoded LogRecord bytes, with per-block caches; one per exporter (not thread-safe).

    The link block is keyed by the connection's uid (plus its state and retransmits, which change): a uid
    names one connection per sidecar run, and what it saw at its handshake (SYN, RTT) never changes.
    """

    def __init__(self) -> None:
        self._link = _BlockCache(link_attributes)
        self._head: dict[tuple, bytes] = {}

    def _request_head(self, event: ae.AuthEvent) -> bytes:
        """Severity, event name, body and the request block: all decided by the same fields."""
        http = event.http  # not its sizes: they go with each record
        key = (http.method, http.host, http.path, http.status, http.user_agent, event.auth.SerializeToString(),
               event.route_id, event.service_id, event.gateway.kind, event.server.ip)
        encoded = self._head.get(key)
        if encoded is None:
            severity, text = record_severity(event)
            head = logs_pb2.LogRecord(severity_number=severity, severity_text=text, event_name=RECORD_EVENT,
                                      body=common_pb2.AnyValue(string_value=record_body(event)),
                                      attributes=key_values(request_attributes(event)))
            if len(self._head) >= CACHE_ENTRIES:
                self._head.clear()
            encoded = self._head[key] = head.SerializeToString()
        return encoded

    def encode(self, record: record_pb2.EnrichedRecord) -> bytes:
        event, join = record.event, record.join
        client, server = event.client, event.server
        if record.HasField("connection"):
            conn = record.connection
            key: tuple = (client.ip, client.port, server.ip, server.port, event.forwarded_for, join.status,
                          join.behind_proxy, conn.uid, conn.state,
                          conn.to_server.retransmits + conn.to_client.retransmits)
        else:
            key = (client.ip, client.port, server.ip, server.port, event.forwarded_for, join.status,
                   join.behind_proxy)
        link = self._link.entries.get(key)
        if link is None:
            link = self._link.get(key, record)
        start, received = event.start_time, record.received_time
        # Below: the fields of per_record_attributes(), encoded inline (the tests compare the two).
        rid = event.request_id.encode()
        kv = _REQUEST_ID_KEY + _varint(len(rid) + 1 + len(_varint(len(rid)))) + _STRING_TAG + _varint(len(rid)) + rid
        parts = [_TIMES.pack(_TIME_TAG[0], (start.seconds * 1_000_000_000 + start.nanos) & _U64,
                             _OBSERVED_TAG[0], (received.seconds * 1_000_000_000 + received.nanos) & _U64),
                 self._request_head(event), link, _ATTR_TAG, _varint(len(kv)), kv]
        if event.HasField("latency"):
            latency = event.latency
            parts.append(_DURATION_PREFIX + _DOUBLE.pack((latency.seconds * 1_000_000_000 + latency.nanos) / 1e9))
        http = event.http
        for key_, value in ((_REQ_SIZE, http.request_bytes), (_RESP_SIZE, http.response_bytes),
                            (_CONN_ID, event.gateway_connection_id), (_CONN_REQS, event.connection_requests),
                            (_LOST, join.kernel_events_lost)):
            if value:
                parts.append(_attribute(key_, value))
        return b"".join(parts)


_REQ_SIZE, _RESP_SIZE = "http.request.body.size", "http.response.body.size"
_CONN_ID, _CONN_REQS = "authwire.gateway.connection_id", "authwire.gateway.connection_requests"
_LOST = "authwire.join.kernel_events_lost"


def _key_prefix(key: str) -> bytes:
    """KeyValue.key plus the value's tag: what precedes the AnyValue's length."""
    raw = key.encode()
    return _KEY_TAG + _varint(len(raw)) + raw + _VALUE_TAG


_REQUEST_ID_KEY = _key_prefix("authwire.request.id")
_DURATION_KV_HEAD = _key_prefix("authwire.request.duration") + _varint(9) + _DOUBLE_TAG  # AnyValue: tag + 8 bytes
_DURATION_PREFIX = _ATTR_TAG + _varint(len(_DURATION_KV_HEAD) + 8) + _DURATION_KV_HEAD
_DOUBLE = struct.Struct("<d")
_TIMES = struct.Struct("<BQBQ")  # time_unix_nano, observed_time_unix_nano: one-byte tags, fixed64
assert len(_TIME_TAG) == len(_OBSERVED_TAG) == len(_STRING_TAG) == 1


# --- the request envelope --------------------------------------------------------------------------------

_RL = logs_pb2.ResourceLogs.DESCRIPTOR.fields_by_name
_SL = logs_pb2.ScopeLogs.DESCRIPTOR.fields_by_name
_REQ = logs_service_pb2.ExportLogsServiceRequest.DESCRIPTOR.fields_by_name
_SCOPE_HEAD = logs_pb2.ScopeLogs(scope=SCOPE).SerializeToString()


def resource_head(kind: int, node: str, version: str) -> bytes:
    return logs_pb2.ResourceLogs(resource=resource_pb2.Resource(
        attributes=key_values(resource_attributes(kind, node, version)))).SerializeToString()


def export_request(groups: Iterable[tuple[bytes, list[bytes]]]) -> bytes:
    """ExportLogsServiceRequest bytes: one ResourceLogs per (resource head, encoded LogRecords) group."""
    records_field = _SL["log_records"].number
    resource_logs = []
    for head, records in groups:
        scope_logs = _SCOPE_HEAD + b"".join(_len_field(records_field, r) for r in records)
        resource_logs.append(_len_field(_REQ["resource_logs"].number,
                                        head + _len_field(_RL["scope_logs"].number, scope_logs)))
    return b"".join(resource_logs)

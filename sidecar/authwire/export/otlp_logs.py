"""A committed record (and an Alert) -> OTLP LogRecord: which attributes, and how they are encoded fast.

Attributes follow the OpenTelemetry semantic conventions where one exists (client.*, server.*, network.*,
http.*, url.path, user_agent.original) and `authwire.*` for the rest. The mapping is written once, as
(key, value) pairs per block of related fields (`*_attributes` below), each block mapped from a tuple of
plain values.

Speed: building every KeyValue as a protobuf message costs ~1 us per attribute in Python (~20 us a record),
so the export would cost more CPU than the whole ingest path. The exporter gets the pipeline's plain rows
(Pipeline.subscribe_rows: no EnrichedRecord is built, no protobuf field read per record), and each block's
values are a slice of the row. Each block is encoded once (hand-framed attributes) and cached by those
values: records of one connection, one route, one consumer share them. A record is then the concatenation
of its blocks' bytes plus the few per-record fields, which is a valid LogRecord encoding because protobuf
parses concatenated encodings of a message as their merge (repeated fields append).
`log_record()` builds the same LogRecord from an EnrichedRecord's messages only, with opentelemetry-proto's
messages: the reference the tests compare the fast path against.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Sequence

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from authwire import __version__
from authwire.protowire import uvarint
from authwire.records import short_enum
from authwire.store.columns import CONN, CONTAINERS, INDEX, PRESENT
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
ATTRIBUTES_CACHED = 16384  # single encoded attributes kept for building blocks (cleared when full)


def _check_descriptors() -> None:
    """xds-protos ships a stale copy of opentelemetry/proto over opentelemetry-proto's (grpc/grpc#42926)."""
    fields = logs_pb2.LogRecord.DESCRIPTOR.fields_by_name
    if "observed_time_unix_nano" not in fields or "scope_logs" not in logs_pb2.ResourceLogs.DESCRIPTOR.fields_by_name:
        raise ImportError("opentelemetry-proto's generated files were overwritten by an old copy (xds-protos "
                          "installs one: grpc/grpc#42926); fix: pip install --force-reinstall --no-deps "
                          "opentelemetry-proto")


_check_descriptors()


# --- the mapping ----------------------------------------------------------------------------------------
# Each block is mapped from a tuple of plain values. The fast path takes those tuples straight out of the
# pipeline's plain rows (slices of authwire.store.columns NAMES order, also the blocks' cache keys); the
# reference (log_record) reads the same values out of an EnrichedRecord's messages.

# The request block's values, in plain-row order (two slices of it) + the gateway kind, the server address
# and whether the JWT claims are present.
REQUEST_FIELDS = ("http_method", "host", "path", "status", "user_agent", "route_id", "service_id", "auth_method",
                  "outcome", "plugin", "consumer", "credential_id", "reason", "message", "jwt_iss", "jwt_sub",
                  "jwt_aud", "jwt_kid", "jwt_exp", "jwt_iat", "jwt_jti_hash", "jwt_alg", "gateway_kind",
                  "server_ip", "has_jwt")
# The peer block's values, in plain-row order (one slice of it).
PEER_FIELDS = ("client_ip", "client_port", "server_ip", "server_port", "forwarded_for")


def request_values(event: ae.AuthEvent) -> tuple:
    """REQUEST_FIELDS of an AuthEvent, from its messages (the reference)."""
    http, auth, jwt = event.http, event.auth, event.auth.jwt
    return (http.method, http.host, http.path, http.status, http.user_agent, event.route_id, event.service_id,
            auth.method, auth.outcome, auth.plugin, auth.consumer, auth.credential_id, auth.reason, auth.message,
            jwt.iss, jwt.sub, jwt.aud, jwt.kid, jwt.exp, jwt.iat, jwt.jti_hash, jwt.alg, event.gateway.kind,
            event.server.ip, auth.HasField("jwt"))


def peer_values(event: ae.AuthEvent) -> tuple:
    """PEER_FIELDS of an AuthEvent, from its messages (the reference)."""
    return event.client.ip, event.client.port, event.server.ip, event.server.port, event.forwarded_for


def peer_attributes(peer: tuple) -> list[tuple[str, Value]]:
    """Who talked to whom (PEER_FIELDS). client.* is the client as the gateway understood it (X-Forwarded-For
    when set); network.peer.* is always the TCP peer, network.local.* the gateway's socket."""
    client_ip, client_port, server_ip, server_port, forwarded_for = peer
    out: list[tuple[str, Value]] = []
    if forwarded_for:
        out.append(("client.address", forwarded_for))
    elif client_ip:
        out += [("client.address", client_ip), ("client.port", client_port)]
    if client_ip:
        out += [("network.peer.address", client_ip), ("network.peer.port", client_port),
                ("network.type", "ipv6" if ":" in client_ip else "ipv4")]
    if server_ip:
        out += [("network.local.address", server_ip), ("network.local.port", server_port)]
    if server_port:
        out.append(("server.port", server_port))
    out.append(("network.transport", "tcp"))
    return out


def request_attributes(request: tuple) -> list[tuple[str, Value]]:
    """The HTTP request and its authentication (REQUEST_FIELDS: everything but the per-request ids, sizes
    and times)."""
    (method, host, path, status, user_agent, route_id, service_id, auth_method, outcome, plugin, consumer,
     credential_id, reason, message, iss, sub, aud, kid, exp, iat, jti_hash, alg, gateway_kind, server_ip,
     has_jwt) = request
    out: list[tuple[str, Value]] = []
    server = host or server_ip
    if server:
        out.append(("server.address", server))
    for key, value in (("http.request.method", method), ("url.path", path),
                       ("user_agent.original", user_agent), ("authwire.route.id", route_id),
                       ("authwire.service.id", service_id), ("authwire.auth.plugin", plugin),
                       ("authwire.auth.consumer", consumer),
                       ("authwire.auth.credential_id", credential_id),
                       ("authwire.auth.message", message)):
        if value:
            out.append((key, value))
    if status:
        out.append(("http.response.status_code", status))
    out += [("authwire.auth.method", short_enum(ae.AuthMethod, auth_method)),
            ("authwire.auth.outcome", short_enum(ae.AuthOutcome, outcome))]
    if reason:
        out.append(("authwire.auth.reason", short_enum(ae.FailureReason, reason)))
    if has_jwt:
        for key, value in (("iss", iss), ("sub", sub), ("aud", aud), ("kid", kid), ("alg", alg),
                           ("jti_hash", jti_hash), ("exp", exp), ("iat", iat)):
            if value:
                out.append((f"authwire.auth.jwt.{key}", value))
    if gateway_kind:
        out.append(("authwire.gateway.kind", short_enum(ae.GatewayKind, gateway_kind)))
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


def join_attributes(status: int, behind_proxy: bool, conn: connection_pb2.Connection | None
                    ) -> list[tuple[str, Value]]:
    """How the record was joined, and the connection's facts that change while it lives."""
    out: list[tuple[str, Value]] = [("authwire.join.status", _JOIN_STATUS[status])]
    if behind_proxy:
        out.append(("authwire.join.behind_proxy", True))
    if conn is not None:
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


def record_severity(outcome: int) -> tuple[int, str]:
    return SEVERITY_WARN if outcome == ae.AUTH_OUTCOME_FAILURE else SEVERITY_INFO


def record_body(request: tuple) -> str:
    """One human line of REQUEST_FIELDS, e.g. 'GET /orders 401 jwt failure expired'."""
    method, _, path, status, *_ = request
    auth_method, outcome, reason = request[7], request[8], request[12]
    words = [method or "-", path or "-", str(status or "-"),
             short_enum(ae.AuthMethod, auth_method), short_enum(ae.AuthOutcome, outcome)]
    if reason:
        words.append(short_enum(ae.FailureReason, reason))
    return " ".join(words)


def link_attributes(peer: tuple, status: int, behind_proxy: bool, conn: connection_pb2.Connection | None
                    ) -> list[tuple[str, Value]]:
    """Peer, join and connection: the same for the records of one connection (one cache entry)."""
    out = peer_attributes(peer) + join_attributes(status, behind_proxy, conn)
    if conn is not None:
        out += connection_attributes(conn)
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
    """The LogRecord for one record, from its messages only (the reference; RecordEncoder.encode is the fast
    path, from plain rows)."""
    event = record.event
    request = request_values(event)
    severity, text = record_severity(event.auth.outcome)
    conn = record.connection if record.HasField("connection") else None
    pairs = [*request_attributes(request),
             *link_attributes(peer_values(event), record.join.status, record.join.behind_proxy, conn),
             *per_record_attributes(record)]
    return logs_pb2.LogRecord(
        time_unix_nano=event.start_time.ToNanoseconds(),
        observed_time_unix_nano=record.received_time.ToNanoseconds(),
        severity_number=severity, severity_text=text, event_name=RECORD_EVENT,
        body=common_pb2.AnyValue(string_value=record_body(request)), attributes=key_values(pairs))


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

_varint = uvarint  # authwire.protowire: a table for small values, two-byte ones without a loop


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


def _row_slice(names: Sequence[str]) -> slice:
    """The slice of a plain row holding these columns, which must be adjacent there and in this order."""
    first = INDEX[names[0]]
    if [INDEX.get(name) for name in names] != list(range(first, first + len(names))):
        raise AssertionError(f"columns {names} are no longer adjacent in authwire.store.columns")
    return slice(first, first + len(names))


# Where REQUEST_FIELDS and PEER_FIELDS are in a plain row (checked at import: a layout change fails loudly).
_HTTP = _row_slice(REQUEST_FIELDS[:5])          # method .. user_agent
_ROUTE_AUTH = _row_slice(REQUEST_FIELDS[5:22])  # route_id .. jwt_alg
_PEER = _row_slice(PEER_FIELDS)
GATEWAY = _row_slice(("gateway_kind", "gateway_node", "gateway_version"))  # what a record's resource is keyed by
_KIND, _SERVER_IP = INDEX["gateway_kind"], INDEX["server_ip"]
_TIME_NS, _RECEIVED_NS, _REQUEST_ID, _LATENCY_NS = (INDEX[n] for n in ("time_ns", "received_ns", "request_id",
                                                                        "latency_ns"))
_JOIN_STATUS_I, _BEHIND_PROXY_I = INDEX["join_status"], INDEX["behind_proxy"]
_JWT_PRESENT = 1 << CONTAINERS.index("event.auth.jwt")


class RecordEncoder:
    """Plain row (authwire.store.columns) -> encoded LogRecord bytes, with per-block caches; one per exporter
    (not thread-safe).

    The request head (severity, event name, body, request block) is keyed by its REQUEST_FIELDS, taken from
    the row by two slices. The link block (peer, join, connection) is keyed by the PEER_FIELDS, the join
    status and the Connection object itself (by id, the object kept beside the entry so its id stays
    unique): every row of a connection shares one Connection object, a snapshot that is replaced (never
    changed) when the store learns the connection's final facts, so a new state or retransmit count comes
    as a new object and a new entry. Caches are bounded (CACHE_ENTRIES, cleared when full).
    """

    def __init__(self) -> None:
        self._link: dict[tuple, tuple[bytes, connection_pb2.Connection | None]] = {}
        self._head: dict[tuple, bytes] = {}
        self._encoded: dict[tuple, bytes] = {}  # (key, value, type) -> one encoded attribute

    def _attributes(self, pairs: Iterable[tuple[str, Value]]) -> bytes:
        """A block's attributes, encoded (on a block cache miss). Most attributes of a new connection or
        route repeat others' (network.type, server.port, the SYN's fields, the auth method ...): each
        (key, value) is encoded once, so a new connection's block costs mostly dict lookups."""
        cache = self._encoded
        out = []
        for key, value in pairs:
            ident = (key, value, value.__class__)  # the type too: True == 1, but they encode differently
            encoded = cache.get(ident)
            if encoded is None:
                if len(cache) >= ATTRIBUTES_CACHED:
                    cache.clear()
                encoded = cache[ident] = _attribute(key, value)
            out.append(encoded)
        return b"".join(out)

    def _request_head(self, key: tuple) -> bytes:
        """Severity, event name, body and the request block: all decided by the REQUEST_FIELDS (key: as
        encode() slices them out of the row)."""
        request = (*key[0], *key[1], *key[2:])
        severity, text = record_severity(request[8])
        body = common_pb2.AnyValue(string_value=record_body(request)).SerializeToString()
        encoded = (_SEVERITY_TAG + _varint(severity) + _len_field(_LR["severity_text"].number, text.encode())
                   + _EVENT_NAME + _len_field(_LR["body"].number, body) + self._attributes(request_attributes(request)))
        if len(self._head) >= CACHE_ENTRIES:
            self._head.clear()
        self._head[key] = encoded
        return encoded

    def _link_block(self, key: tuple, row: tuple) -> bytes:
        conn = row[CONN]
        encoded = self._attributes(link_attributes(row[_PEER], row[_JOIN_STATUS_I], row[_BEHIND_PROXY_I], conn))
        if len(self._link) >= CACHE_ENTRIES:
            self._link.clear()
        self._link[key] = (encoded, conn)
        return encoded

    def encode(self, row: tuple) -> bytes:
        key = (row[_HTTP], row[_ROUTE_AUTH], row[_KIND], row[_SERVER_IP], row[PRESENT] & _JWT_PRESENT)
        head = self._head.get(key)
        if head is None:
            head = self._request_head(key)
        link_key = (row[_PEER], row[_JOIN_STATUS_I], row[_BEHIND_PROXY_I], id(row[CONN]))
        link = self._link.get(link_key)
        link = link[0] if link is not None else self._link_block(link_key, row)
        # Below: the fields of per_record_attributes(), encoded inline (the tests compare the two).
        rid = row[_REQUEST_ID].encode()
        prefix = _REQUEST_ID_PREFIXES.get(len(rid))
        if prefix is None:
            prefix = _request_id_prefix(len(rid))
        parts = [_TIMES.pack(_TIME_TAG[0], (row[_TIME_NS] or 0) & _U64, _OBSERVED_TAG[0],
                             (row[_RECEIVED_NS] or 0) & _U64),
                 head, link, prefix, rid]
        latency = row[_LATENCY_NS]
        if latency is not None:
            parts.append(_DURATION_PREFIX + _DOUBLE.pack(latency / 1e9))
        for key_, i in _PER_RECORD:
            value = row[i]
            if value:
                parts.append(_attribute(key_, value))
        return b"".join(parts)


_PER_RECORD = tuple((key, INDEX[name]) for key, name in (
    ("http.request.body.size", "request_bytes"), ("http.response.body.size", "response_bytes"),
    ("authwire.gateway.connection_id", "gateway_connection_id"),
    ("authwire.gateway.connection_requests", "connection_requests"),
    ("authwire.join.kernel_events_lost", "kernel_events_lost")))
_SEVERITY_TAG = _varint(_LR["severity_number"].number << 3 | 0)
_EVENT_NAME = _len_field(_LR["event_name"].number, RECORD_EVENT.encode())


def _key_prefix(key: str) -> bytes:
    """KeyValue.key plus the value's tag: what precedes the AnyValue's length."""
    raw = key.encode()
    return _KEY_TAG + _varint(len(raw)) + raw + _VALUE_TAG


_REQUEST_ID_KEY = _key_prefix("authwire.request.id")
_REQUEST_ID_PREFIXES: dict[int, bytes] = {}


def _request_id_prefix(n: int) -> bytes:
    """The authwire.request.id attribute up to its n-byte value (one per length: ids are bounded)."""
    value_head = _STRING_TAG + _varint(n)
    kv_head = _REQUEST_ID_KEY + _varint(len(value_head) + n) + value_head
    prefix = _ATTR_TAG + _varint(len(kv_head) + n) + kv_head
    if len(_REQUEST_ID_PREFIXES) < 4096:
        _REQUEST_ID_PREFIXES[n] = prefix
    return prefix


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


_LOG_RECORDS_TAG = _varint(_SL["log_records"].number << 3 | 2)
_SCOPE_LOGS_TAG = _varint(_RL["scope_logs"].number << 3 | 2)
_RESOURCE_LOGS_TAG = _varint(_REQ["resource_logs"].number << 3 | 2)


def export_request(groups: Iterable[tuple[bytes, list[bytes]]]) -> bytes:
    """ExportLogsServiceRequest bytes: one ResourceLogs per (resource head, encoded LogRecords) group.

    The lengths are summed, not measured on concatenated parts: the request's bytes are copied once."""
    out: list[bytes] = []
    tag = _LOG_RECORDS_TAG
    for head, records in groups:
        parts = [_SCOPE_HEAD]
        scope_len = len(_SCOPE_HEAD)
        for r in records:
            n = len(r)
            length = _varint(n)
            parts += (tag, length, r)
            scope_len += 1 + len(length) + n
        scope_field = _SCOPE_LOGS_TAG + _varint(scope_len)
        out += (_RESOURCE_LOGS_TAG, _varint(len(head) + len(scope_field) + scope_len), head, scope_field)
        out += parts
    return b"".join(out)

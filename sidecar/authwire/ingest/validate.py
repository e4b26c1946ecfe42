"""Validation of incoming AuthEvents: the one boundary between what a client sent and what is stored.

- Every problem becomes a Rejection naming index, field and reason; every bad field of an event is named
  (and counted as `ingest.rejected{field}`), and the event is counted once as `ingest.rejected_events{source}`.
- Total: whatever an event holds, validating it never raises (an unexpected exception becomes a Rejection
  of that one event, field "event"); its neighbours are unaffected.
- Reasons never repeat a rejected string (it may be a secret or a terminal escape): they say what is wrong
  and how long it is, not what it was.
- Order matters for cost: lengths first, then the secret scanner (authwire.ingest.secrets, linear) on
  values known to be short.
- Secrets: a credential shape in a field the gateway fills from the client's own request (user agent,
  path, host, X-Forwarded-For, request id) is replaced by REDACTED and the event kept (counted as
  `ingest.redacted{field}`), so a client cannot hide its requests by sending a token-shaped user agent;
  in a field the gateway's auth plugin fills (consumer, credential id, claims, message) it rejects the
  event: that is a reporter bug that must be seen.
- IP addresses are normalized in place (IPv4-mapped IPv6 -> IPv4, canonical text) so that the join and
  the store see one spelling of every address.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from operator import attrgetter, gt
from typing import Protocol

from google.protobuf.descriptor import FieldDescriptor

from authwire.addresses import normalize_ip
from authwire.ingest.secrets import secret_indexes
from authwire.v1 import auth_event_pb2, ingest_pb2

log = logging.getLogger(__name__)

# Longest accepted value per string field path; anything not listed gets DEFAULT_MAX_STRING.
MAX_STRING = {
    "request_id": 128,
    "http.method": 16,
    "http.host": 255,
    "http.path": 2048,
    "http.user_agent": 512,
    "auth.message": 1024,
    "auth.plugin": 64,
    "gateway.version": 64,
    "forwarded_for": 256,
    "client.ip": 64,
    "server.ip": 64,
    "auth.jwt.alg": 32,
    "auth.jwt.jti_hash": 64,
}
DEFAULT_MAX_STRING = 256
MAX_FUTURE_SECONDS = 300  # gateway clocks drift; more than this ahead is a broken clock or bad data
# google.protobuf.Timestamp/Duration ranges (timestamp.proto, duration.proto): outside them a value has no
# RFC 3339 text, and formatting it raises.
MAX_TIMESTAMP_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
MAX_DURATION_SECONDS = 315_576_000_000   # 10,000 years
MAX_NANOS = 999_999_999
REDACTED = "[redacted: looks like a credential]"

# Filled by the gateway from the client's request: redacted, never a reason to drop the event.
CLIENT_TEXT = ("request_id", "forwarded_for", "http.host", "http.path", "http.user_agent")
# Identity fields: also refused when they hold a long hex key or a high-entropy base64 secret.
IDENTITY_TEXT = ("auth.consumer", "auth.credential_id", "auth.jwt.sub", "auth.jwt.iss", "auth.jwt.aud")
# Checked for their own shape instead of for secrets.
_NOT_SCANNED = ("client.ip", "server.ip", "auth.jwt.jti_hash")


class CounterSink(Protocol):
    def inc(self, name: str, label: str = "", n: int = 1) -> None: ...


def validate(event: auth_event_pb2.AuthEvent, index: int, now: float,
             counters: CounterSink | None = None) -> list[ingest_pb2.Rejection]:
    """Check one event (normalizing addresses, redacting client-sent secrets in place); its problems, or []."""
    problems: list[tuple[str, str]] = []
    try:
        if not event.request_id.strip():
            problems.append(("request_id", "empty; every event needs the gateway's request id"))
        _check_endpoint(event, "client", problems)
        _check_endpoint(event, "server", problems)
        _check_time(event, now, problems)
        _walk(event, problems, counters)
    except Exception as exc:  # a bug here must cost this one event only, never its batch
        log.debug("validation of event %d raised %s", index, type(exc).__name__)
        problems = [("event", f"could not be validated ({type(exc).__name__}); not stored")]
    return [ingest_pb2.Rejection(index=index, field=f, reason=r) for f, r in problems]


def validate_batch(events: Sequence[auth_event_pb2.AuthEvent], now: float, counters: CounterSink,
                   source: str) -> tuple[list[auth_event_pb2.AuthEvent], list[ingest_pb2.Rejection]]:
    """(good events, rejections) of a batch, counting every bad field and every rejected event."""
    good: list[auth_event_pb2.AuthEvent] = []
    rejections: list[ingest_pb2.Rejection] = []
    for index, event in enumerate(events):
        problems = validate(event, index, now, counters)
        if problems:
            rejections.extend(problems)
            count_rejected(problems, counters, source)
        else:
            good.append(event)
    return good, rejections


def count_rejected(problems: list[ingest_pb2.Rejection], counters: CounterSink, source: str) -> None:
    """One rejected event: each bad field, and the event once."""
    for p in problems:
        counters.inc("ingest.rejected", p.field)
    counters.inc("ingest.rejected_events", source)


def _check_endpoint(event: auth_event_pb2.AuthEvent, name: str, problems: list[tuple[str, str]]) -> None:
    if not event.HasField(name):
        problems.append((name, "missing; the TCP endpoint is needed to join the connection"))
        return
    endpoint = getattr(event, name)
    ip = endpoint.ip
    if len(ip) > MAX_STRING["client.ip"]:
        return  # named by the length check of _walk
    if "%" in ip:
        problems.append((f"{name}.ip", "has an IPv6 zone id (%...); the proto allows none"))
    else:
        try:
            endpoint.ip = normalize_ip(ip)
        except ValueError:
            problems.append((f"{name}.ip", f"not an IP address ({len(ip)} characters)"))
    if not 1 <= endpoint.port <= 65535:
        problems.append((f"{name}.port", f"{endpoint.port} is outside 1..65535"))


def _check_time(event: auth_event_pb2.AuthEvent, now: float, problems: list[tuple[str, str]]) -> None:
    if not event.HasField("start_time"):
        problems.append(("start_time", "missing"))
    else:
        seconds, nanos = event.start_time.seconds, event.start_time.nanos
        if not 0 <= nanos <= MAX_NANOS:
            problems.append(("start_time", f"nanos {nanos} outside 0..{MAX_NANOS}"))
        elif seconds <= 0 or seconds > MAX_TIMESTAMP_SECONDS:
            problems.append(("start_time", f"{seconds} s since the epoch is not a real time"))
        elif seconds + nanos / 1e9 > now + MAX_FUTURE_SECONDS:
            ahead = seconds + nanos / 1e9 - now
            problems.append(("start_time", f"{ahead:.0f}s in the future (more than {MAX_FUTURE_SECONDS}s: "
                                           "check the gateway's clock)"))
    seconds, nanos = event.latency.seconds, event.latency.nanos
    if seconds < 0 or nanos < 0:
        problems.append(("latency", "negative"))
    elif nanos > MAX_NANOS or seconds > MAX_DURATION_SECONDS:
        problems.append(("latency", f"outside the Duration range (nanos 0..{MAX_NANOS}, "
                                    f"seconds up to {MAX_DURATION_SECONDS})"))
    for claim in ("exp", "iat"):
        value = getattr(event.auth.jwt, claim)
        if not 0 <= value <= MAX_TIMESTAMP_SECONDS:
            problems.append((f"auth.jwt.{claim}", f"{value} s since the epoch is not a real time"))


def _fields(descriptor, prefix: str = "") -> list[tuple[str, FieldDescriptor]]:
    """Every singular string and enum field path of AuthEvent, found once from the schema."""
    found = []
    for fd in descriptor.fields:
        path = prefix + fd.name
        if fd.is_repeated:
            continue
        if fd.type == FieldDescriptor.TYPE_MESSAGE and fd.message_type.full_name.startswith("authwire."):
            found += _fields(fd.message_type, path + ".")
        elif fd.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_ENUM):
            found.append((path, fd))
    return found


def _setter(path: str):
    parent, _, name = path.rpartition(".")
    get_parent = attrgetter(parent) if parent else (lambda e: e)
    return lambda event, value: setattr(get_parent(event), name, value)


# Checks decided once from the schema; attrgetter("http.path") reads nested fields in C, which keeps
# validation at a few microseconds per event (a generic ListFields walk cost ~15 us).
_STRINGS = [path for path, fd in _fields(auth_event_pb2.AuthEvent.DESCRIPTOR) if fd.type == FieldDescriptor.TYPE_STRING]
_GET_STRINGS = attrgetter(*_STRINGS)  # one C call reads every string field
_LIMITS = [MAX_STRING.get(path, DEFAULT_MAX_STRING) for path in _STRINGS]
_PLAIN_SCAN = [i for i, path in enumerate(_STRINGS) if path not in _NOT_SCANNED + IDENTITY_TEXT]
_IDENTITY_SCAN = [_STRINGS.index(path) for path in IDENTITY_TEXT]
_SETTERS = {path: _setter(path) for path in CLIENT_TEXT}
_ENUM_CHECKS = [(path, attrgetter(path), fd.enum_type)
                for path, fd in _fields(auth_event_pb2.AuthEvent.DESCRIPTOR) if fd.type == FieldDescriptor.TYPE_ENUM]
_HEX = frozenset("0123456789abcdef")
assert not set(CLIENT_TEXT) & set(IDENTITY_TEXT) and set(CLIENT_TEXT) <= set(_STRINGS)


def _walk(event: auth_event_pb2.AuthEvent, problems: list[tuple[str, str]], counters: CounterSink | None) -> None:
    """String lengths, then secret shapes, then enum values, for every string and enum field at any depth."""
    values = _GET_STRINGS(event)
    too_long = any(map(gt, map(len, values), _LIMITS))  # in C; the loop below only for a bad event
    if too_long:
        for path, value, limit in zip(_STRINGS, values, _LIMITS, strict=True):
            if len(value) > limit:
                problems.append((path, f"{len(value)} characters, more than the {limit} allowed"))
    jti_hash = event.auth.jwt.jti_hash
    if jti_hash and (len(jti_hash) != 64 or not _HEX.issuperset(jti_hash)):
        problems.append(("auth.jwt.jti_hash", "not 64 lower-case hex digits (the SHA-256 of the jti, "
                                              "never the jti itself)"))
    if too_long:
        return  # the scanner only ever sees bounded values; this event is refused anyway
    for index in secret_indexes(values, _PLAIN_SCAN, _IDENTITY_SCAN):
        path = _STRINGS[index]
        if path in _SETTERS:
            _SETTERS[path](event, REDACTED)
            if counters is not None:
                counters.inc("ingest.redacted", path)
        else:
            problems.append((path, "looks like a secret (a token, password, key or Authorization value); "
                                   "report a key id or consumer name, never the credential"))
    for path, get, enum in _ENUM_CHECKS:
        value = get(event)
        if enum.values_by_number.get(value) is None:
            names = ", ".join(v.name for v in enum.values)
            problems.append((path, f"unknown {enum.name} value {value} (known: {names})"))


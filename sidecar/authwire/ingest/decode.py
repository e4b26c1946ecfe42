"""Decoding of request bodies that a client controls: never raises, salvages what it can, counts the rest.

gRPC's generated deserializer raises on any bad byte, and grpc then logs a traceback and fails the call
(a stream stops reading). Here:
- a plain ReportRequest body goes through the native pass (authwire.ingest.event_rows): its plainly valid
  events come back as event rows, the others as messages for validation;
- a body that parses is used as is (one C parse);
- a body that does not (bad UTF-8 in one string, one truncated event, garbage) is split at the wire level
  into its top-level fields and each event is parsed on its own: the events that parse are kept, the
  others become Rejections of their own index (counted), so one bad event never costs its neighbours;
- a body that is not even a sequence of protobuf fields is `Malformed` (counted; the caller answers
  INVALID_ARGUMENT, or on a stream a response naming the problem, and keeps reading).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from authwire.ingest.event_rows import native
from authwire.v1 import auth_event_pb2, ingest_pb2


def _split_type():
    """A message of `repeated bytes` fields 1..3: parses any message's length-delimited fields 1..3 raw."""
    fdp = descriptor_pb2.FileDescriptorProto(name="authwire/internal/split.proto", package="authwire.internal",
                                             syntax="proto3")
    msg = fdp.message_type.add(name="Split")
    for number in (1, 2, 3):
        msg.field.add(name=f"f{number}", number=number, type=descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
                      label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED)
    pool = descriptor_pool.DescriptorPool()
    return message_factory.GetMessageClass(pool.Add(fdp).message_types_by_name["Split"])


Split = _split_type()


@dataclass
class Malformed:
    """A body that is not the expected message at all; `why` never quotes the bytes."""

    size: int
    why: str


@dataclass
class DecodedReport:
    """A ReportRequest as far as it could be decoded."""

    events: Sequence[tuple | auth_event_pb2.AuthEvent]  # event rows (native pass) or messages to validate
    drops: ingest_pb2.ReporterDrops | None
    positions: list[int] | None = None            # index in the request of each of events; None = 0..n-1
    undecodable: list[tuple[int, int]] = field(default_factory=list)  # (index, size) of events that did not parse

    def rejections(self) -> list[ingest_pb2.Rejection]:
        return [ingest_pb2.Rejection(index=i, field="event", reason=f"does not parse as an AuthEvent ({size} "
                                     "bytes: bad UTF-8, truncated or not protobuf); not stored")
                for i, size in self.undecodable]

    def remap(self, response: ingest_pb2.ReportResponse) -> ingest_pb2.ReportResponse:
        """The pipeline's response (indexes into events) with request indexes, plus the undecodable ones."""
        if self.positions is None and not self.undecodable:
            return response
        if self.positions is not None:
            for r in response.rejections:
                r.index = self.positions[r.index]
        response.rejections.extend(self.rejections())
        response.rejections.sort(key=lambda r: r.index)
        return response


def decode_report(data: bytes) -> DecodedReport | Malformed:
    """Decode a ReportRequest body (see the module docstring)."""
    if native is not None:
        decoded = _native_report(data)
        if decoded is not None:
            return decoded
    try:
        request = ingest_pb2.ReportRequest.FromString(data)
        return DecodedReport(request.events, request.drops if request.HasField("drops") else None)
    except DecodeError:
        pass
    try:
        parts = Split.FromString(data)
    except DecodeError as exc:
        return Malformed(len(data), f"ReportRequest does not parse ({len(data)} bytes): {_why(exc)}")
    events, positions, undecodable = [], [], []
    for index, raw in enumerate(parts.f1):
        try:
            events.append(auth_event_pb2.AuthEvent.FromString(raw))
            positions.append(index)
        except DecodeError:
            undecodable.append((index, len(raw)))
    drops = None
    if parts.f2:
        try:
            drops = ingest_pb2.ReporterDrops.FromString(b"".join(parts.f2))
        except DecodeError:
            # counts we cannot read are not counted; the events still are
            drops = None
    return DecodedReport(events, drops, positions, undecodable)


def _native_report(data: bytes) -> DecodedReport | None:
    """The native pass over a plain ReportRequest body: event rows for the events it accepts, messages for
    the rest (parsed here: one that does not parse is undecodable); None when the body's top level is not
    plain (then the paths above decide)."""
    got = native.report(data, time.time())
    if got is None:
        return None
    items, drops_raw = got
    drops = None
    if drops_raw is not None:
        try:
            drops = ingest_pb2.ReporterDrops.FromString(drops_raw)
        except DecodeError:
            return None
    undecodable: list[tuple[int, int]] = []
    for index, item in enumerate(items):
        if type(item) is bytes:
            try:
                items[index] = auth_event_pb2.AuthEvent.FromString(item)
            except DecodeError:
                undecodable.append((index, len(item)))
    if not undecodable:
        return DecodedReport(items, drops)
    bad = {i for i, _ in undecodable}
    positions = [i for i in range(len(items)) if i not in bad]
    return DecodedReport([items[i] for i in positions], drops, positions, undecodable)


def _why(exc: Exception) -> str:
    # upb says what is wrong ("Wire format was corrupt", "String field had bad UTF-8") without quoting
    # input bytes; drop its "Error parsing message with type ...:" prefix, which names our internal type
    return str(exc).rpartition(": ")[2][:120] or type(exc).__name__


def lenient(message_type, data: bytes):
    """message_type parsed from data, or Malformed (for messages with no per-item salvage)."""
    try:
        return message_type.FromString(data)
    except DecodeError as exc:
        return Malformed(len(data), f"{message_type.DESCRIPTOR.name} does not parse ({len(data)} bytes): {_why(exc)}")


@dataclass
class SalvagedMessage:
    """A streamed message that did not parse whole: what could be read of it, and how many items not."""

    message: object
    bad_items: int


def decode_als_message(data: bytes):
    """An Envoy StreamAccessLogsMessage, a SalvagedMessage (some entries did not parse), or Malformed."""
    from envoy.data.accesslog.v3 import accesslog_pb2
    from envoy.service.accesslog.v3 import als_pb2

    try:
        return als_pb2.StreamAccessLogsMessage.FromString(data)
    except DecodeError:
        pass
    try:
        parts = Split.FromString(data)
        http = Split.FromString(b"".join(parts.f2)) if parts.f2 else Split()
    except DecodeError as exc:
        return Malformed(len(data), f"StreamAccessLogsMessage does not parse ({len(data)} bytes): {_why(exc)}")
    message = als_pb2.StreamAccessLogsMessage()
    bad = 0
    if parts.f1:
        try:
            message.identifier.CopyFrom(als_pb2.StreamAccessLogsMessage.Identifier.FromString(b"".join(parts.f1)))
        except DecodeError:
            bad += 1
    for raw in http.f1:
        try:
            message.http_logs.log_entry.append(accesslog_pb2.HTTPAccessLogEntry.FromString(raw))
        except DecodeError:
            bad += 1
    if parts.f3:
        try:
            message.tcp_logs.CopyFrom(als_pb2.StreamAccessLogsMessage.TCPAccessLogEntries.FromString(
                b"".join(parts.f3)))
        except DecodeError:
            bad += 1
    return SalvagedMessage(message, bad)

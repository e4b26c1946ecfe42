"""EnrichedRecord <-> JSON in the one mapping every output uses: proto3 JSON, proto field names, enum names.

to_dict gives exactly what json_format.MessageToDict(preserving_proto_field_name=True) gives (a contract
test compares them), ~10x faster: MessageToDict walks descriptors in pure Python for every message and
cost 60-80 us per record, which alone capped JSONL ingest near 15k records/s. Here the per-field work is
decided once per message type.
"""

from __future__ import annotations

import base64
import math
import re
import time
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

_AS_STRING = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
              FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64}
_FLOATS = {FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE}


def _float(value: float) -> Any:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def json_fraction(nanos: int) -> str:
    """proto3 JSON: 0, 3, 6 or 9 fractional digits."""
    if nanos == 0:
        return ""
    if nanos % 1_000_000 == 0:
        return f".{nanos // 1_000_000:03d}"
    if nanos % 1000 == 0:
        return f".{nanos // 1000:06d}"
    return f".{nanos:09d}"


def _timestamp(ts) -> str:
    if not 0 <= ts.seconds < 253402300800:  # outside 1970..9999: let protobuf format (or refuse) it
        return ts.ToJsonString()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts.seconds)) + json_fraction(ts.nanos) + "Z"


def _duration(d) -> str:
    if d.seconds < 0 or d.nanos < 0:
        return d.ToJsonString()
    return f"{d.seconds}{json_fraction(d.nanos)}s"


def _scalar(fd: FieldDescriptor) -> Callable[[Any], Any]:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        if fd.message_type.full_name == "google.protobuf.Timestamp":
            return _timestamp
        if fd.message_type.full_name == "google.protobuf.Duration":
            return _duration
        if fd.message_type.full_name.startswith("google.protobuf."):
            return lambda m: json_format.MessageToDict(m, preserving_proto_field_name=True)
        return _converter(fd.message_type)
    if fd.type == FieldDescriptor.TYPE_ENUM:
        names = {v.number: v.name for v in fd.enum_type.values}
        return lambda v: names.get(v, v)
    if fd.type in _AS_STRING:
        return str
    if fd.type in _FLOATS:
        return _float
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return lambda b: base64.b64encode(b).decode()
    return lambda v: v


_CONVERTERS: dict[str, Callable[[Message], dict[str, Any]]] = {}


def _converter(descriptor: Descriptor) -> Callable[[Message], dict[str, Any]]:
    name = descriptor.full_name
    if name in _CONVERTERS:
        return _CONVERTERS[name]
    per_field: dict[int, Callable[[Any], Any]] = {}

    def convert(message: Message) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for fd, value in message.ListFields():
            fn = per_field.get(fd.number)
            if fn is None:
                if fd.type == FieldDescriptor.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry:
                    # a map field (e.g. Alert.evidence): a JSON object, keys as text
                    value_fn = _scalar(fd.message_type.fields_by_name["value"])
                    fn = per_field[fd.number] = lambda m, s=value_fn: {str(k): s(m[k]) for k in m}
                else:
                    scalar = _scalar(fd)
                    fn = per_field[fd.number] = (lambda v, s=scalar: [s(x) for x in v]) if fd.is_repeated else scalar
            out[fd.name] = fn(value)
        return out

    _CONVERTERS[name] = convert
    return convert


def to_dict(message: Message) -> dict[str, Any]:
    return _converter(message.DESCRIPTOR)(message)


def from_json(text: str, message: Message) -> Message:
    """Parse proto3 JSON into message; raises json_format.ParseError naming the bad field."""
    return json_format.Parse(text, message)


def short_enum(enum, value: int) -> str:
    """AuthOutcome FAILURE (AUTH_OUTCOME_FAILURE) -> "failure": how the CLI prints and accepts enum values."""
    try:
        name = enum.Name(value)
    except ValueError:
        return str(value)
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.DESCRIPTOR.name).upper() + "_"
    return name.removeprefix(prefix).lower()

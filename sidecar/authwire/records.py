"""EnrichedRecord <-> JSON in the one mapping every output uses: proto3 JSON, proto field names, enum names."""

from __future__ import annotations

import re
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message


def to_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


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

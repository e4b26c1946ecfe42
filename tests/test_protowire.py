"""authwire.protowire: hand-written protobuf fields parse back, with the C runtime, to what was written."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from authwire.protowire import UINT64_MAX, message_field, text_field, uint_field, uvarint, varint
from authwire.v1 import auth_event_pb2 as ae

EDGES = [0, 1, 127, 128, 4095, 4096, 16383, 16384, 65535, 0x1FFFFF, 0x200000, 2**32 - 1, 2**63, UINT64_MAX]


@given(st.one_of(st.sampled_from(EDGES), st.integers(0, UINT64_MAX)))
def test_a_number_parses_back_and_both_varint_spellings_agree(n):
    assert uvarint(n) == varint(n)
    assert ae.HttpRequest.FromString(uint_field(b"\x30", n)).request_bytes == n  # request_bytes: field 6


def test_numbers_past_uint64_saturate_and_defaults_are_not_written():
    assert ae.HttpRequest.FromString(uint_field(b"\x30", 2**70)).request_bytes == UINT64_MAX
    assert uint_field(b"\x30", 0) == text_field(b"\x0a", "") == b""
    assert message_field(b"\x2a", b"") == b"\x2a\x00"  # an empty message is still present


@given(st.text(max_size=5000), st.integers(0, 2**32 - 1))
def test_text_and_embedded_messages_parse_back(text, port):
    endpoint = message_field(b"\x2a", text_field(b"\x0a", text) + uint_field(b"\x10", port))  # AuthEvent.client
    event = ae.AuthEvent.FromString(endpoint)
    assert event.HasField("client") and (event.client.ip, event.client.port) == (text, port)

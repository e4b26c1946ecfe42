"""The row layout: every field of an EnrichedRecord survives plain_row -> stored row -> assemble, and the JSON
object built from the row is exactly records.to_dict of the record (what JSONL and `query --format json` show)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from authwire.records import to_dict
from authwire.store import columns as C
from authwire.v1 import auth_event_pb2 as pb
from authwire.v1 import connection_pb2, record_pb2
from support import auth_event

TEXT = st.text(max_size=12)
U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)
I64 = st.integers(-2**63, 2**63 - 1)
NS = st.integers(0, 253402300799 * 10**9)
IPS = st.sampled_from(["10.0.0.1", "192.0.2.200", "2001:db8::7", "::1", "fe80::1:2"])


def _record_leaves(record: record_pb2.EnrichedRecord, path: str):
    obj = record
    parts = path.split(".")
    for p in parts[:-1]:
        obj = getattr(obj, p)
    return obj, parts[-1]


@st.composite
def records(draw) -> record_pb2.EnrichedRecord:
    record = record_pb2.EnrichedRecord()
    for container in C.CONTAINERS:
        if draw(st.booleans()):
            obj, leaf = _record_leaves(record, container + ".x")
            obj.SetInParent()
    for _, path, kind in C.COLUMNS:
        if not draw(st.booleans()):
            continue
        obj, leaf = _record_leaves(record, path)
        if kind in ("ts", "ts_rel", "dur"):
            getattr(obj, leaf).FromNanoseconds(draw(NS))
        elif kind in ("str", "istr"):
            setattr(obj, leaf, draw(TEXT))
        elif kind == "ip":
            setattr(obj, leaf, draw(IPS))
        elif kind == "bool":
            setattr(obj, leaf, draw(st.booleans()))
        elif kind == "u64":
            setattr(obj, leaf, draw(U64))
        elif kind == "i64":
            setattr(obj, leaf, draw(I64))
        elif kind.startswith("enum:"):
            setattr(obj, leaf, draw(st.integers(0, 3)))
        else:
            setattr(obj, leaf, draw(U32))
    record.event.SetInParent()
    if draw(st.booleans()):
        record.connection.uid = draw(TEXT) or "C1"
        record.connection.syn.ttl = draw(st.integers(1, 255))
        record.connection.to_server.bytes = draw(U64)
    return record


def _stored(plain: tuple) -> tuple[tuple, dict[int, str]]:
    interner: dict[str, int | None] = {"": None}

    class Interner(dict):
        def __missing__(self, text):
            self[text] = len(self) + 1
            return self[text]

    strings = Interner(interner)
    stored = C.intern_row(plain, strings, 1 if plain[C.CONN] is not None else None)
    return stored, {v: k for k, v in strings.items() if v is not None}


@settings(max_examples=300, deadline=None)
@given(records())
def test_every_field_survives_the_row_and_json_is_to_dict(record):
    plain = C.plain_row_of(record)
    stored, strings = _stored(plain)
    conn = record.connection if record.HasField("connection") else None
    assert C.assemble(stored, strings, conn) == record
    assert C.json_dict(plain, to_dict(conn) if conn is not None else None) == to_dict(record)


def test_a_realistic_record_round_trips():
    event = auth_event("r-1", client=("2001:db8::9", 4444))
    event.forwarded_for = "203.0.113.9"
    event.auth.jwt.iss = "https://issuer"
    event.auth.jwt.exp = 1_900_000_000
    conn = connection_pb2.Connection(uid="Cabc", community_id="1:xyz")
    conn.handshake_rtt.FromMicroseconds(1234)
    join = record_pb2.Join(status=record_pb2.JOIN_STATUS_EXACT, kernel_request_index=3, behind_proxy=True)
    join.connection_age.FromMilliseconds(20)
    record = record_pb2.EnrichedRecord(event=event, connection=conn, join=join)
    record.received_time.FromNanoseconds(1_700_000_000_123_456_789)
    plain = C.plain_row(event, 1_700_000_000_123_456_789, conn, join)
    assert plain == C.plain_row_of(record)
    stored, strings = _stored(plain)
    assert C.assemble(stored, strings, conn) == record
    assert C.json_dict(plain, to_dict(conn)) == to_dict(record)
    assert event.auth.method == pb.AUTH_METHOD_JWT

"""The store thread's per-row work in C (authwire.store._rows) gives exactly what the Python definitions give.

JSONL objects: same keys, same values, same order (the encoded texts are compared); stored tuples: equal,
with the same strings interned in the same order. For rows holding any value each column kind can hold:
unset (None / default), zero, huge, negative, outside the RFC 3339 range, unknown enum values.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from authwire.store import columns as C
from support import require

BIG = st.one_of(st.integers(-2**70, 2**70), st.sampled_from([0, 1, -1, 999, 1_000_000, 2**63 - 1, 2**63, -2**63]))
NS = st.one_of(st.none(), BIG, st.integers(0, 2**62),
               st.sampled_from([1_700_000_000_123_000_000, 1_700_000_000_000_000_001, 253402300800 * 10**9]))
BY_KIND = {"ts": NS, "ts_rel": NS, "dur": NS, "str": st.text(max_size=8), "istr": st.text(max_size=8),
           "ip": st.sampled_from(["", "10.0.0.1", "2001:db8::1"]), "int": BIG, "u64": BIG, "i64": BIG,
           "bool": st.booleans()}


def column_values(kind: str):
    return st.integers(-3, 12) if kind.startswith("enum:") else BY_KIND[kind]


ROWS = st.tuples(*(column_values(kind) for _, _, kind in C.COLUMNS), st.integers(0, 127), st.none())
CONNECTIONS = [object(), object()]
STORE_ROWS = st.tuples(*(column_values(kind) for _, _, kind in C.COLUMNS), st.integers(0, 127),
                       st.sampled_from([None, *CONNECTIONS]))
CONNECTION = st.one_of(st.none(), st.just({"uid": "C1", "syn": {"ttl": 64}}))


@settings(max_examples=400, deadline=None)
@given(ROWS, CONNECTION)
def test_the_c_builder_gives_the_python_object_byte_for_byte(row, conn):
    require(C.json_dict is not C._json_dict, "authwire.store._rowjson is not built (needs gcc and python3-dev)")
    assert outcome(C.json_dict, row, conn) == outcome(C._json_dict, row, conn)


def outcome(build, row, conn):
    """The encoded object, or the exception type for values no valid record holds (a Duration beyond
    10,000 years: both builders hand those to protobuf's formatter, which refuses them)."""
    try:
        return json.dumps(build(row, conn))  # keeps key order; stdlib json takes ints beyond 64 bits
    except ValueError as exc:
        return type(exc)


@settings(max_examples=200, deadline=None)
@given(st.lists(STORE_ROWS, max_size=6), st.integers(1, 2**40))
def test_the_c_stored_rows_equal_the_python_ones(rows, first_id):
    from authwire.store.record_store import _Interner

    require(C.stored_rows is not C._stored_rows, "authwire.store._rows is not built (needs gcc and python3-dev)")
    results = []
    for build in (C.stored_rows, C._stored_rows):
        strings, asked = _Interner(1), []

        def connection_id(conn, asked=asked) -> int:
            asked.append(conn)
            return 10 + CONNECTIONS.index(conn)

        results.append((build(rows, strings, connection_id, first_id), strings.pending, set(map(id, asked))))
    assert results[0] == results[1]

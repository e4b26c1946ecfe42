"""The JSONL object builder in C (authwire.store._rowjson) gives exactly what the Python definition gives.

Same keys, same values, same order (the encoded texts are compared), for rows holding any value each column
kind can hold: unset (None / default), zero, huge, negative, outside the RFC 3339 range, unknown enum values.
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

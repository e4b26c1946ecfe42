"""The contract: committed stubs match protos/, and records survive the wire and the JSON mapping."""

from __future__ import annotations

import filecmp
import importlib.util
import json
from pathlib import Path

from authwire.records import from_json, to_dict
from authwire.v1 import auth_event_pb2, connection_pb2, record_pb2

ROOT = Path(__file__).resolve().parent.parent


def _gen_protos():
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_are_fresh(tmp_path):
    generated = _gen_protos().generate(tmp_path)
    assert generated, "protoc produced nothing"
    committed = ROOT / "sidecar" / "authwire" / "v1"
    stale = [p.name for p in generated if not filecmp.cmp(p, committed / p.name, shallow=False)]
    missing = [p.name for p in generated if not (committed / p.name).exists()]
    assert not stale and not missing, f"run `make protos` and commit: stale {stale}, missing {missing}"


def test_enums_have_unspecified_zero():
    for module in (auth_event_pb2, connection_pb2, record_pb2):
        for enum in module.DESCRIPTOR.enum_types_by_name.values():
            assert enum.values_by_number[0].name.endswith("_UNSPECIFIED"), enum.name


def test_enriched_record_round_trips_binary_and_json():
    record = record_pb2.EnrichedRecord(
        event=auth_event_pb2.AuthEvent(
            request_id="r-ü-1", client=auth_event_pb2.Endpoint(ip="2001:db8::1", port=51000),
            gateway_connection_id=2**63 + 5,
            auth=auth_event_pb2.Auth(method=auth_event_pb2.AUTH_METHOD_HMAC,
                                     outcome=auth_event_pb2.AUTH_OUTCOME_FAILURE,
                                     reason=auth_event_pb2.FAILURE_REASON_CLOCK_SKEW,
                                     jwt=auth_event_pb2.JwtClaims(exp=-1, iat=2**40))),
        connection=connection_pb2.Connection(
            uid="c1", syn=connection_pb2.SynFingerprint(option_kinds=[2, 4, 8, 1, 3], window_scale=-1)),
        join=record_pb2.Join(status=record_pb2.JOIN_STATUS_EXACT, kernel_events_lost=3),
    )
    again = record_pb2.EnrichedRecord.FromString(record.SerializeToString())
    assert again == record
    as_json = to_dict(record)
    # proto field names (snake_case) and enum names, as the CLI, JSONL and `ingest` use them
    assert as_json["event"]["auth"]["reason"] == "FAILURE_REASON_CLOCK_SKEW"
    assert as_json["event"]["gateway_connection_id"] == str(2**63 + 5)
    assert as_json["connection"]["syn"]["window_scale"] == -1
    assert from_json(json.dumps(as_json), record_pb2.EnrichedRecord()) == record


def test_fast_json_mapping_equals_protobufs_own():
    from google.protobuf import json_format

    from authwire.v1 import query_pb2
    record = record_pb2.EnrichedRecord(
        event=auth_event_pb2.AuthEvent(request_id="x", gateway_connection_id=7, connection_requests=3,
                                       auth=auth_event_pb2.Auth(reason=77, jwt=auth_event_pb2.JwtClaims(exp=5))),
        connection=connection_pb2.Connection(syn=connection_pb2.SynFingerprint(option_kinds=[2, 0], ts_val=1)),
        join=record_pb2.Join(kernel_events_lost=1, behind_proxy=True))
    record.event.start_time.FromNanoseconds(1_700_000_000_123_456_789)
    record.event.latency.FromNanoseconds(1_500_000)
    record.join.waited.FromNanoseconds(0)
    stats = query_pb2.StatsResponse(counters=[query_pb2.Counter(name="a", value=2**60)])
    filters = query_pb2.Filters(retransmits_gt=0)  # proto3 optional: present even at zero
    other = record_pb2.EnrichedRecord()
    other.event.start_time.FromNanoseconds(1_700_000_000_120_000_000)
    other.event.latency.FromNanoseconds(2_000_123_000)
    other.received_time.FromSeconds(1_700_000_000)
    other.join.connection_age.FromNanoseconds(-1_500_000_000)
    for message in (record, other, stats, filters, record_pb2.EnrichedRecord()):
        assert to_dict(message) == json_format.MessageToDict(message, preserving_proto_field_name=True)

"""Crafted records for the detection tests: only the fields the detections read, set on purpose.

`message()` builds the EnrichedRecord; `record()` returns what the engine gets from the pipeline, its plain row
(authwire.store.columns.plain_row, via plain_row_of); `replace()` changes a row's fields by column name.
"""

from __future__ import annotations

import itertools

from authwire.store.columns import INDEX, plain_row_of
from authwire.v1 import auth_event_pb2 as ae
from authwire.v1 import connection_pb2, record_pb2

LINUX = "4:64:1460:m*44:7:MSTNW:df"
BARE = "4:255:1240:65535:-:M:df"
WINDOWS = "4:128:1460:65535:8:MNWNNS:df"
CHROME_WINDOWS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/124.0 Safari/537.36")
SAFARI_MAC = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Version/17.4 Safari/605.1.15"
_ids = itertools.count(1)


def message(t: float, ip: str = "198.51.100.7", outcome: int = ae.AUTH_OUTCOME_FAILURE, credential: str = "",
           signature: str = LINUX, hops: int = 0, os_hint: str = "linux", uid: str = "", user_agent: str = "curl/8",
           gateway_conn: int = 0, consumer: str = "", jti_hash: str = "", method: int = ae.AUTH_METHOD_BASIC,
           exact: bool = True, rtt_us: int = 300) -> record_pb2.EnrichedRecord:
    n = next(_ids)
    event = ae.AuthEvent(
        request_id=f"r{n}", client=ae.Endpoint(ip=ip, port=40000 + n % 20000),
        server=ae.Endpoint(ip="192.0.2.1", port=443), gateway=ae.Gateway(kind=ae.GATEWAY_KIND_ENVOY, node="gw"),
        gateway_connection_id=gateway_conn, http=ae.HttpRequest(method="GET", path="/login", user_agent=user_agent,
                                                                status=200 if outcome == ae.AUTH_OUTCOME_SUCCESS
                                                                else 401),
        auth=ae.Auth(method=method, outcome=outcome, consumer=consumer, credential_id=credential,
                     jwt=ae.JwtClaims(sub=consumer, jti_hash=jti_hash) if jti_hash else None))
    event.start_time.FromNanoseconds(int(t * 1e9))
    r = record_pb2.EnrichedRecord(event=event)
    if exact:
        r.join.status = record_pb2.JOIN_STATUS_EXACT
        conn = connection_pb2.Connection(uid=uid or f"C{n:08x}", client=event.client, server=event.server)
        conn.syn.signature = signature
        conn.syn.hop_distance = hops
        conn.syn.os_hint = os_hint
        conn.syn.ip_version = 4
        conn.handshake_rtt.FromMicroseconds(rtt_us)
        r.connection.CopyFrom(conn)
    else:
        r.join.status = record_pb2.JOIN_STATUS_INSPECTOR_OFF
    return r


def record(t: float, **kw) -> tuple:
    """The plain row of message(t, **kw): what Pipeline.subscribe_rows hands the engine."""
    return plain_row_of(message(t, **kw))


def replace(row: tuple, **values) -> tuple:
    """The row with some fields (authwire.store.columns NAMES) changed."""
    out = list(row)
    for name, value in values.items():
        out[INDEX[name]] = value
    return tuple(out)


def request_id(row: tuple) -> str:
    return row[INDEX["request_id"]]


def success(t: float, **kw) -> tuple:
    return record(t, outcome=ae.AUTH_OUTCOME_SUCCESS, **kw)

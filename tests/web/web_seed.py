"""A small store with what the web view must show: several clients and TCP stacks, a brute-force scanner,
an IPv6 client, and a user agent that is an HTML injection attempt."""

from __future__ import annotations

import time
from pathlib import Path

from authwire.join import fingerprint
from authwire.store.alerts import AlertStore, alerts_path
from authwire.store.record_store import Store
from authwire.v1 import auth_event_pb2 as pb
from authwire.v1 import connection_pb2 as cp
from authwire.v1 import record_pb2
from support import auth_event

NOW = time.time()
SCANNER = "10.66.0.9"
XSS_AGENT = "<script>alert(1)</script>"
LINUX = dict(ttl=61, window=64240, window_scale=7, mss=1460, option_kinds=[2, 4, 8, 1, 3], sack_permitted=True,
             timestamps=True, ts_val=1, df=True)
BARE = dict(ttl=255, window=1024, window_scale=-1, mss=1240, option_kinds=[2], df=False)
WINDOWS = dict(ttl=126, window=65535, window_scale=8, mss=1440, option_kinds=[2, 1, 3, 1, 1, 4], sack_permitted=True,
               df=True)


def _record(event: pb.AuthEvent, uid: str, stack: dict) -> record_pb2.EnrichedRecord:
    record = record_pb2.EnrichedRecord(event=event, join=record_pb2.Join(status=record_pb2.JOIN_STATUS_EXACT))
    syn = cp.SynFingerprint(ip_version=6 if ":" in event.client.ip else 4, **stack)
    fingerprint.annotate(syn)
    c = record.connection
    c.uid, c.community_id = uid, f"1:{uid}="
    c.client.CopyFrom(event.client)
    c.server.CopyFrom(event.server)
    c.syn.CopyFrom(syn)
    c.handshake_rtt.FromMicroseconds(1500)
    c.state = cp.CONNECTION_STATE_CLOSED
    record.received_time.CopyFrom(event.start_time)
    return record


def records() -> list[record_pb2.EnrichedRecord]:
    f = pb.AUTH_OUTCOME_FAILURE
    out = []
    for i in range(6):  # alice from a Linux laptop: good JWTs
        out.append(_record(auth_event(f"alice-{i}", client=("10.1.0.5", 41000 + i // 3), start=NOW - 3000 + i * 60),
                           f"Calice{i // 3}", LINUX))
    for i in range(24):  # the scanner: bad Basic passwords and forged JWTs, one connection each, a bare stack
        basic = i % 2 == 0
        e = auth_event(f"scan-{i}", client=(SCANNER, 50000 + i), start=NOW - 1800 + i * 30, outcome=f,
                       method=pb.AUTH_METHOD_BASIC if basic else pb.AUTH_METHOD_JWT, consumer="",
                       credential_id="admin" if basic else "kid-forged",
                       reason=pb.FAILURE_REASON_INVALID_CREDENTIALS if basic else pb.FAILURE_REASON_BAD_SIGNATURE)
        e.http.status, e.http.path, e.route_id = 401, "/admin", "admin"
        e.http.user_agent = XSS_AGENT if i == 0 else "masscan/1.3"
        out.append(_record(e, f"Cscan{i}", BARE))
    for i in range(4):  # carol from a Windows desktop: one expired token, then good
        e = auth_event(f"carol-{i}", client=("2001:db8::7", 42000), start=NOW - 1200 + i * 100, consumer="carol",
                       credential_id="key-carol", **({"outcome": f, "reason": pb.FAILURE_REASON_EXPIRED} if i == 0
                                                     else {}))
        e.http.status = 401 if i == 0 else 200
        out.append(_record(e, "Ccarol", WINDOWS))
    e = auth_event("dave-0", client=("192.0.2.50", 43000), start=NOW - 600, consumer="dave", credential_id="")
    e.route_id = ""
    no_connection = record_pb2.EnrichedRecord(
        event=e, join=record_pb2.Join(status=record_pb2.JOIN_STATUS_NO_CONNECTION))
    no_connection.received_time.CopyFrom(e.start_time)
    out.append(no_connection)  # the kernel saw no connection for it: no SYN facts
    return out


def alerts() -> list[record_pb2.Alert]:
    alert = record_pb2.Alert(id="A-scan-1", detection="stack_stuffing", severity=record_pb2.ALERT_SEVERITY_WARNING,
                             summary="24 failures from one bare TCP stack", key="stack=4:255:1240:1024:-:M:-/hops=0",
                             clients=[SCANNER], credentials=["admin", "kid-forged"], request_ids=["scan-0", "scan-23"],
                             stack="4:255:1240:1024:-:M:-/hops=0")
    alert.evidence["failures"] = 24.0
    alert.client.ip = SCANNER
    for ts, t in [(alert.time, NOW - 1000), (alert.first_time, NOW - 1800), (alert.last_time, NOW - 1110),
                  (alert.updated_time, NOW - 1000)]:
        ts.FromNanoseconds(int(t * 1e9))
    return [alert]


def build(path: Path) -> int:
    store = Store(path)
    rs = records()
    store.write(rs)
    store.close()
    alert_store = AlertStore(alerts_path(path))
    alert_store.upsert(alerts())
    alert_store.close()
    return len(rs)

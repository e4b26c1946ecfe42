"""The sidecar's gRPC-Web listener (`serve --grpc-web-listen`, repeatable): real `authwire serve`, HTTP/1.1
clients over loopback TCP and a unix socket. Same Ingest service and validation as gRPC; keep-alive; every
malformed request answered with a gRPC status naming the problem, counted, and never fatal.
"""

from __future__ import annotations

import http.client
import shutil
import socket
import struct
import tempfile
import time
from pathlib import Path

import pytest
from nginx_process import free_port

from authwire.v1 import ingest_pb2, query_pb2
from support import Sidecar, auth_event, start_sidecar, wait_until

CT = "application/grpc-web+proto"


def frame(payload: bytes, flag: int = 0) -> bytes:
    return struct.pack(">BI", flag, len(payload)) + payload


def parse_reply(body: bytes) -> tuple[list[bytes], dict[str, str]]:
    messages, trailers, pos = [], {}, 0
    while pos < len(body):
        flag, length = struct.unpack_from(">BI", body, pos)
        payload = body[pos + 5:pos + 5 + length]
        assert len(payload) == length, "truncated frame in the reply"
        if flag & 0x80:
            for line in payload.decode().split("\r\n"):
                if line:
                    key, _, value = line.partition(":")
                    trailers[key.strip().lower()] = value.strip()
        else:
            messages.append(payload)
        pos += 5 + length
    return messages, trailers


@pytest.fixture(scope="module")
def sidecar():
    """One sidecar for the module (start-up costs ~1 s); tests look at counter deltas, not totals."""
    tmp = Path(tempfile.mkdtemp(prefix="aw-gwl-"))
    port = free_port()
    s = start_sidecar(tmp, "--grpc-web-listen", f"127.0.0.1:{port}", "--grpc-web-listen", f"unix:{tmp}/gw.sock")
    s.web_port = port
    s.tmp = tmp
    AUTH.update(s.auth_header())
    try:
        yield s
    finally:
        s.kill()
        shutil.rmtree(tmp, ignore_errors=True)


AUTH: dict[str, str] = {}  # the module sidecar's token header, set by the fixture


def post(conn: http.client.HTTPConnection, body: bytes, method: str = "Report", ctype: str = CT,
         headers: dict[str, str] | None = None):
    conn.request("POST", f"/authwire.v1.Ingest/{method}", body=body,
                 headers={"Content-Type": ctype, **(AUTH if headers is None else headers)})
    resp = conn.getresponse()
    return resp, resp.read()


def report_body(*events) -> bytes:
    return frame(ingest_pb2.ReportRequest(events=list(events)).SerializeToString())


def stored_ids(sidecar: Sidecar) -> set[str]:
    recs = sidecar.query().Query(query_pb2.QueryRequest(limit=1000), timeout=10).records
    return {r.event.request_id for r in recs}


def counters(sidecar: Sidecar) -> dict[tuple[str, str], int]:
    stats = sidecar.query().Stats(query_pb2.StatsRequest(), timeout=10)
    return {(c.name, c.label): c.value for c in stats.counters}


def test_report_over_tcp_with_keepalive(sidecar):
    before = counters(sidecar).get(("ingest.received", "grpc-web"), 0)
    conn = http.client.HTTPConnection("127.0.0.1", sidecar.web_port, timeout=10)
    resp, body = post(conn, report_body(auth_event("gw-1")))
    first_socket = conn.sock
    assert resp.status == 200 and resp.getheader("Content-Type") == CT
    messages, trailers = parse_reply(body)
    assert trailers["grpc-status"] == "0"
    assert ingest_pb2.ReportResponse.FromString(messages[0]).accepted == 1
    # the same connection carries the next call (HTTP/1.1 keep-alive)
    resp, body = post(conn, report_body(auth_event("gw-2"), auth_event("gw-3")), ctype="application/grpc-web")
    assert conn.sock is first_socket and resp.status == 200
    assert ingest_pb2.ReportResponse.FromString(parse_reply(body)[0][0]).accepted == 2
    conn.close()
    assert {"gw-1", "gw-2", "gw-3"} <= stored_ids(sidecar)
    assert counters(sidecar)[("ingest.received", "grpc-web")] - before == 3


def test_report_over_the_unix_socket(sidecar):
    body = report_body(auth_event("gw-unix"))
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(sidecar.tmp / "gw.sock"))
        s.sendall(f"POST /authwire.v1.Ingest/Report HTTP/1.1\r\nHost: x\r\nContent-Type: {CT}\r\n"
                  f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    messages, trailers = parse_reply(payload)
    assert trailers["grpc-status"] == "0" and ingest_pb2.ReportResponse.FromString(messages[0]).accepted == 1
    assert "gw-unix" in stored_ids(sidecar)
    # gateway workers run as their own user (www-data, nobody, kong): they must be able to connect
    assert (sidecar.tmp / "gw.sock").stat().st_mode & 0o777 == 0o666


def test_bad_events_are_rejected_by_name_and_good_neighbours_kept(sidecar):
    bad = auth_event("gw-bad")
    bad.client.port = 0
    conn = http.client.HTTPConnection("127.0.0.1", sidecar.web_port, timeout=10)
    _, body = post(conn, report_body(auth_event("gw-good"), bad))
    messages, trailers = parse_reply(body)
    resp = ingest_pb2.ReportResponse.FromString(messages[0])
    assert trailers["grpc-status"] == "0" and resp.accepted == 1
    assert [(r.index, r.field) for r in resp.rejections] == [(1, "client.port")]
    assert "gw-good" in stored_ids(sidecar) and "gw-bad" not in stored_ids(sidecar)


def test_reporter_drops_are_counted_once_accepted(sidecar):
    before = counters(sidecar)
    req = ingest_pb2.ReportRequest(events=[auth_event("gw-d1")],
                                   drops=ingest_pb2.ReporterDrops(queue_full=7, send_failed=3))
    conn = http.client.HTTPConnection("127.0.0.1", sidecar.web_port, timeout=10)
    _, reply = post(conn, frame(req.SerializeToString()))
    assert parse_reply(reply)[1]["grpc-status"] == "0"
    # a report that does not parse is not accepted: its drops are not counted (the reporter resends them)
    _, reply = post(conn, frame(req.SerializeToString()[:-2]))
    assert parse_reply(reply)[1]["grpc-status"] == "3"
    after = counters(sidecar)
    delta = {k: after.get(("gateway.dropped", k), 0) - before.get(("gateway.dropped", k), 0)
             for k in ("queue_full", "send_failed", "encode_failed")}
    assert delta == {"queue_full": 7, "send_failed": 3, "encode_failed": 0}


def test_report_stream_answers_each_message_in_order(sidecar):
    body = report_body(auth_event("gw-s1")) + report_body(auth_event("gw-s2"), auth_event("gw-s3"))
    conn = http.client.HTTPConnection("127.0.0.1", sidecar.web_port, timeout=10)
    _, reply = post(conn, body, method="ReportStream")
    messages, trailers = parse_reply(reply)
    assert trailers["grpc-status"] == "0"
    assert [ingest_pb2.ReportResponse.FromString(m).accepted for m in messages] == [1, 2]


def test_report_stream_error_keeps_the_responses_before_it(sidecar):
    body = report_body(auth_event("gw-st1")) + frame(b"\x0a\x05abc") + report_body(auth_event("gw-st3"))
    conn = http.client.HTTPConnection("127.0.0.1", sidecar.web_port, timeout=10)
    _, reply = post(conn, body, method="ReportStream")
    messages, trailers = parse_reply(reply)
    assert [ingest_pb2.ReportResponse.FromString(m).accepted for m in messages] == [1]
    assert trailers["grpc-status"] == "3" and "message 1: ReportRequest does not parse" in \
        trailers["grpc-message"].replace("%20", " ")
    ids = stored_ids(sidecar)
    assert "gw-st1" in ids and "gw-st3" not in ids


@pytest.mark.parametrize("body, label, words", [
    (b"\x00\x00\x00", "frame", "3 bytes left, a frame header needs 5"),
    (b"\x00\x00\x00\x00\x09abc", "frame", "declares 9 bytes, only 3 follow"),
    (frame(b"x", flag=1), "frame", "compressed"),
    (frame(b"grpc-status:0", flag=0x80), "frame", "trailers frame"),
    (b"", "frame", "no message frame"),
    (frame(b"") + frame(b""), "frame", "Report is unary: got 2 message frames"),
    (frame(b"\x0a\x05abc"), "protobuf", "ReportRequest does not parse"),
])
def test_malformed_requests_get_invalid_argument_and_are_counted(sidecar, body, label, words):
    before = counters(sidecar).get(("grpc_web.errors", label), 0)
    conn = http.client.HTTPConnection("127.0.0.1", sidecar.web_port, timeout=10)
    resp, reply = post(conn, body)
    messages, trailers = parse_reply(reply)
    assert resp.status == 200 and messages == []
    assert trailers["grpc-status"] == "3" and resp.getheader("grpc-status") == "3"
    assert words in trailers["grpc-message"].replace("%20", " ")
    wait_until(lambda: counters(sidecar).get(("grpc_web.errors", label), 0) == before + 1, 5, "the error counter")
    # the listener is still fine, on the same connection
    resp, reply = post(conn, report_body(auth_event(f"gw-after-{label}-{time.monotonic_ns()}")))
    assert parse_reply(reply)[1]["grpc-status"] == "0"


def test_wrong_content_type_and_unknown_method(sidecar):
    before = counters(sidecar)
    conn = http.client.HTTPConnection("127.0.0.1", sidecar.web_port, timeout=10)
    resp, reply = post(conn, report_body(auth_event("gw-json")), ctype="application/json")
    assert resp.status == 415 and b"application/grpc-web+proto" in reply
    resp, reply = post(conn, report_body(auth_event("gw-x")), method="Query")
    trailers = parse_reply(reply)[1]
    assert trailers["grpc-status"] == "12" and "ReportStream" in trailers["grpc-message"]
    after = counters(sidecar)
    for label in ("content_type", "method"):
        key = ("grpc_web.errors", label)
        assert after[key] - before.get(key, 0) == 1, label

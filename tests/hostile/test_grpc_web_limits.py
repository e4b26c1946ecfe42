"""Stalled and greedy gRPC-Web clients against a real `authwire serve` (issue 11 item 8).

The listener's memory stays within its configured limits (max_in_flight x max_body, plus slack), stalled
connections are closed by the header/body timeouts and counted, connections beyond the cap are refused and
counted, and SIGTERM is not held up beyond the shutdown grace by a stalled body.
"""

from __future__ import annotations

import http.client
import socket
import struct
from pathlib import Path

import pytest

from authwire.server import SHUTDOWN_GRACE_SECONDS
from authwire.v1 import ingest_pb2, query_pb2
from support import auth_event, free_port, start_sidecar, wait_until

MAX_BODY = 1024 * 1024
IN_FLIGHT = 4


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def errors(sidecar) -> dict[str, int]:
    stats = sidecar.query().Stats(query_pb2.StatsRequest(), timeout=10)
    return {c.label: c.value for c in stats.counters if c.name == "grpc_web.errors"}


def head(sidecar, length: int, token: bool = True) -> bytes:
    auth = f"Authorization: Bearer {sidecar.token()}\r\n" if token else ""
    return (f"POST /authwire.v1.Ingest/Report HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc-web+proto\r\n"
            f"{auth}Content-Length: {length}\r\n\r\n").encode()


def report(sidecar, request_id: str) -> str:
    body = ingest_pb2.ReportRequest(events=[auth_event(request_id)]).SerializeToString()
    conn = http.client.HTTPConnection("127.0.0.1", sidecar.web_port, timeout=10)
    conn.request("POST", "/authwire.v1.Ingest/Report", body=struct.pack(">BI", 0, len(body)) + body,
                 headers={"Content-Type": "application/grpc-web+proto", **sidecar.auth_header()})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.getheader("grpc-status", "0")


@pytest.fixture
def limited(tmp_path):
    port = free_port()
    s = start_sidecar(tmp_path, "--grpc-web-listen", f"127.0.0.1:{port}", "--grpc-web-max-body-bytes",
                      str(MAX_BODY), "--grpc-web-max-in-flight", str(IN_FLIGHT), "--grpc-web-max-connections",
                      "24", "--grpc-web-header-timeout", "1", "--grpc-web-body-timeout", "2")
    s.web_port = port
    try:
        yield s
    finally:
        s.kill()


def connect(sidecar) -> socket.socket:
    return socket.create_connection(("127.0.0.1", sidecar.web_port), timeout=10)


def at_eof(s: socket.socket) -> bool:
    """True once the sidecar closed s (whatever it answered first)."""
    s.settimeout(0.01)
    try:
        while chunk := s.recv(65536):
            del chunk
        return True
    except TimeoutError:
        return False
    except OSError:
        return True


def test_stalled_uploads_cannot_raise_memory_beyond_the_limits_and_are_cut(limited):
    baseline = rss_bytes(limited.process.pid)
    before = errors(limited)
    sockets, peak = [], baseline
    # 8 uploads that declare 16 MiB and send 12 MiB (refused on the declared size before any is buffered;
    # the old listener buffered them all: 96 MiB),
    # 8 that send most of an allowed 1 MiB body and stall, 8 that never finish their headers
    for _ in range(8):
        s = connect(limited)
        s.sendall(head(limited, 16 * MAX_BODY - 1))
        try:
            s.sendall(b"\0" * (12 * MAX_BODY))
        except OSError:
            pass  # the sidecar closed it: that is the point
        sockets.append(s)
        peak = max(peak, rss_bytes(limited.process.pid))
    for _ in range(8):
        s = connect(limited)
        s.sendall(head(limited, MAX_BODY) + b"\0" * (MAX_BODY - 1000))
        sockets.append(s)
        peak = max(peak, rss_bytes(limited.process.pid))
    for _ in range(8):
        s = connect(limited)
        s.sendall(b"POST /authwire.v1.Ingest/Report HTTP/1.1\r\nHost: x\r\n")
        sockets.append(s)
    closed: set[int] = set()

    def all_closed() -> bool:
        nonlocal peak
        peak = max(peak, rss_bytes(limited.process.pid))
        closed.update(i for i, s in enumerate(sockets) if i not in closed and at_eof(s))
        return len(closed) == len(sockets)

    wait_until(all_closed, 15, "every stalled connection closed by the sidecar")
    for s in sockets:
        s.close()
    after = errors(limited)
    grew = peak - baseline
    # the bodies it may hold at once: IN_FLIGHT x MAX_BODY = 4 MiB; 48 MiB of slack for Python's allocator
    assert grew < IN_FLIGHT * MAX_BODY + 48 * 1024 * 1024, f"RSS grew by {grew / 2**20:.0f} MiB"
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert delta.get("too_large", 0) == 8, delta
    assert delta.get("body_timeout", 0) + delta.get("busy", 0) == 8, delta
    assert delta.get("header_timeout", 0) >= 8, delta
    # and the listener still serves a well-behaved client
    assert report(limited, "after-stall") == "0"


def test_connections_beyond_the_cap_are_refused_and_counted(limited):
    before = errors(limited).get("connections", 0)
    held = [connect(limited) for _ in range(30)]
    wait_until(lambda: errors(limited).get("connections", 0) - before >= 6, 10, "6 connections refused")
    for s in held:
        s.close()
    wait_until(lambda: report(limited, "after-cap") == "0", 10, "the listener serving again")


def test_sigterm_is_not_delayed_beyond_the_grace_by_a_stalled_body(tmp_path):
    port = free_port()
    sidecar = start_sidecar(tmp_path, "--grpc-web-listen", f"127.0.0.1:{port}", "--grpc-web-body-timeout", "600",
                            "--grpc-web-header-timeout", "600")
    sidecar.web_port = port
    stalled = connect(sidecar)
    stalled.sendall(head(sidecar, MAX_BODY) + b"\0" * 100)
    try:
        # the grace for handlers, then the gRPC server's own grace: not the old 60 s
        assert sidecar.stop(timeout=2 * SHUTDOWN_GRACE_SECONDS + 5) == 0
    finally:
        stalled.close()
        sidecar.kill()
    assert "authwire stopped" in sidecar.log_text()

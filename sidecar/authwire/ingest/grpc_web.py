"""gRPC-Web (HTTP/1.1) listener serving the Ingest service for OpenResty plugins (APISIX, Kong).

OpenResty has no HTTP/2 client, so its plugins POST `application/grpc-web+proto` bodies: length-prefixed
messages (1 flag byte, 4-byte big-endian length) and get back data frames plus a trailers frame
(flag 0x80, `grpc-status`/`grpc-message` lines), per gRPC's PROTOCOL-WEB. aiohttp does the HTTP (keep-alive
included); this module only does the framing and hands every ReportRequest to `pipeline.report(...,
"grpc-web", drops)`, the same path as gRPC ingest.

Every bad request gets a gRPC status naming what was wrong and is counted as
`grpc_web.errors{<what>}`; nothing a client sends can take the listener down. Events the gateway's reporter
had to drop arrive as `ReportRequest.drops`; the pipeline counts them as `gateway.dropped{queue_full|
send_failed|encode_failed}`.
"""

from __future__ import annotations

import logging
import os
import stat
import struct
import time
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import quote

from aiohttp import web
from google.protobuf.message import DecodeError

from authwire.pipeline import StoreUnavailable
from authwire.v1 import auth_event_pb2, ingest_pb2

log = logging.getLogger(__name__)

SERVICE = "authwire.v1.Ingest"
CONTENT_TYPES = ("application/grpc-web", "application/grpc-web+proto")
MAX_BODY = 16 * 1024 * 1024  # bytes; a batch of 1000 large events is ~1 MiB
LOG_INTERVAL = 10.0  # seconds between two log lines about the same kind of bad request

# gRPC status codes used here
OK, INVALID_ARGUMENT, UNIMPLEMENTED, INTERNAL, UNAVAILABLE = 0, 3, 12, 13, 14

_FRAME_HEADER = struct.Struct(">BI")
_TRAILER_FLAG = 0x80
_COMPRESSED_FLAG = 0x01


class ReportPipeline(Protocol):
    async def report(
        self, events: Sequence[auth_event_pb2.AuthEvent], source: str,
        drops: ingest_pb2.ReporterDrops | None = None,
    ) -> ingest_pb2.ReportResponse: ...


class CounterSink(Protocol):
    def inc(self, name: str, label: str = "", n: int = 1) -> None: ...


class FrameError(ValueError):
    """The body is not a well-formed sequence of gRPC-Web frames; the message says where."""


def parse_frames(body: bytes) -> list[bytes]:
    """Message payloads of a gRPC-Web request body. Raises FrameError naming the bad frame."""
    messages: list[bytes] = []
    pos = 0
    while pos < len(body):
        index = len(messages)
        if len(body) - pos < _FRAME_HEADER.size:
            raise FrameError(f"frame {index}: {len(body) - pos} bytes left, a frame header needs 5")
        flag, length = _FRAME_HEADER.unpack_from(body, pos)
        pos += _FRAME_HEADER.size
        if flag & _TRAILER_FLAG:
            raise FrameError(f"frame {index}: a trailers frame (flag 0x{flag:02x}) in a request")
        if flag & _COMPRESSED_FLAG:
            raise FrameError(f"frame {index}: compressed (flag 0x{flag:02x}); send uncompressed frames")
        if flag != 0:
            raise FrameError(f"frame {index}: unknown flag 0x{flag:02x}")
        if length > len(body) - pos:
            raise FrameError(f"frame {index}: declares {length} bytes, only {len(body) - pos} follow")
        messages.append(body[pos:pos + length])
        pos += length
    return messages


def data_frame(payload: bytes) -> bytes:
    return _FRAME_HEADER.pack(0, len(payload)) + payload


def trailers_frame(status: int, message: str = "") -> bytes:
    # grpc-message is percent-encoded (PROTOCOL-HTTP2); keep printable ASCII readable
    text = f"grpc-status:{status}\r\ngrpc-message:{quote(message, safe=' !#$&()*+,/:;=?@[]~')}\r\n".encode()
    return _FRAME_HEADER.pack(_TRAILER_FLAG, len(text)) + text


class GrpcWebIngest:
    """The aiohttp handler: POST /authwire.v1.Ingest/<Method>."""

    def __init__(self, pipeline: ReportPipeline, counters: CounterSink) -> None:
        self.pipeline = pipeline
        self.counters = counters
        self._last_log: dict[str, float] = {}

    def _fail(self, status: int, what: str, message: str, data: bytes = b"") -> web.Response:
        """Count, log (at most once per LOG_INTERVAL per kind: a bad client must not flood the log), reply."""
        self.counters.inc("grpc_web.errors", what)
        now = time.monotonic()
        if now - self._last_log.get(what, -LOG_INTERVAL) >= LOG_INTERVAL:
            self._last_log[what] = now
            log.warning("gRPC-Web request refused (%s): %s", what, message)
        return self._reply(data, status, message)

    @staticmethod
    def _reply(data: bytes, status: int, message: str = "") -> web.Response:
        headers = {"Content-Type": "application/grpc-web+proto"}
        if not data:
            # trailers-only response: the status also goes in the headers
            headers["grpc-status"] = str(status)
            headers["grpc-message"] = quote(message, safe=" ")
        return web.Response(status=200, body=data + trailers_frame(status, message), headers=headers)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype not in CONTENT_TYPES:
            self.counters.inc("grpc_web.errors", "content_type")
            return web.Response(status=415, text=f"content-type {ctype or '(none)'} is not one of "
                                                 f"{', '.join(CONTENT_TYPES)}\n")
        if method not in ("Report", "ReportStream"):
            return self._fail(UNIMPLEMENTED, "method", f"{SERVICE}/{method} is not a method of {SERVICE}")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._fail(INVALID_ARGUMENT, "too_large", f"body larger than {MAX_BODY} bytes")
        try:
            payloads = parse_frames(body)
        except FrameError as err:
            return self._fail(INVALID_ARGUMENT, "frame", f"bad gRPC-Web framing: {err}")
        if not payloads:
            return self._fail(INVALID_ARGUMENT, "frame", "no message frame in the request body")
        if method == "Report" and len(payloads) != 1:
            return self._fail(INVALID_ARGUMENT, "frame",
                              f"Report is unary: got {len(payloads)} message frames, want 1")
        # ReportStream over gRPC-Web: each request message gets its response message, in order; an error
        # ends the stream after the responses of the messages already stored (as a gRPC stream would), so
        # the client knows exactly which ones to send again.
        out = bytearray()
        for index, payload in enumerate(payloads):
            req = ingest_pb2.ReportRequest()
            try:
                req.ParseFromString(payload)
            except DecodeError as err:
                where = f"message {index}: " if len(payloads) > 1 else ""
                return self._fail(INVALID_ARGUMENT, "protobuf",
                                  f"{where}ReportRequest does not parse ({len(payload)} bytes): {err}", bytes(out))
            try:
                resp = await self.pipeline.report(list(req.events), "grpc-web",
                                                  req.drops if req.HasField("drops") else None)
            except StoreUnavailable as err:
                # retryable: the gateway's reporter keeps the batch and backs off
                return self._fail(UNAVAILABLE, "store", f"store unavailable: {err}", bytes(out))
            except Exception as err:  # the listener must outlive any pipeline bug
                log.exception("pipeline.report failed for a gRPC-Web request")
                return self._fail(INTERNAL, "pipeline", f"internal error: {type(err).__name__}: {err}", bytes(out))
            out += data_frame(resp.SerializeToString())
        return self._reply(bytes(out), OK)


def _parse_address(address: str) -> tuple[str, str | None, int | None]:
    """("unix", path, None) or ("tcp", host, port). Raises ValueError naming the address."""
    if address.startswith("unix:"):
        path = address[len("unix:"):]
        if not path:
            raise ValueError(f"gRPC-Web listen address {address!r}: empty unix socket path")
        return "unix", path, None
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"gRPC-Web listen address {address!r}: want HOST:PORT, [V6]:PORT or unix:/path")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"gRPC-Web listen address {address!r}: port {port} outside 0..65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return "tcp", host, port


def _remove_stale_socket(path: str) -> None:
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


async def start_grpc_web(addresses: list[str], pipeline: ReportPipeline, counters: CounterSink) -> Any:
    """Listen on every address; returns the aiohttp AppRunner (`await runner.cleanup()` stops it).

    The bound addresses (TCP port 0 resolved) are in `runner.addresses` as (host, port) or path.
    """
    ingest = GrpcWebIngest(pipeline, counters)
    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post(f"/{SERVICE}/{{method}}", ingest.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        for address in addresses:
            kind, host, port = _parse_address(address)
            if kind == "unix":
                assert host is not None
                _remove_stale_socket(host)
                os.makedirs(os.path.dirname(host) or ".", exist_ok=True)
                site: web.BaseSite = web.UnixSite(runner, host)
            else:
                site = web.TCPSite(runner, host, port, reuse_address=True)
            await site.start()
            if kind == "unix":
                # The gateway's workers run as their own user (nginx www-data, APISIX nobody, Kong kong) and
                # connect() needs write permission. This listener only accepts reports, which any local
                # process can also send to the loopback TCP default, so the socket is open to all local users.
                os.chmod(host, 0o666)
            log.info("gRPC-Web Ingest listening on %s", site.name)
    except BaseException:
        await runner.cleanup()
        raise
    return runner

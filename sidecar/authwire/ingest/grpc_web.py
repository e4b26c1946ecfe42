"""gRPC-Web (HTTP/1.1) listener serving the Ingest service for OpenResty plugins (APISIX, Kong).

OpenResty has no HTTP/2 client, so its plugins POST `application/grpc-web+proto` bodies: length-prefixed
messages (1 flag byte, 4-byte big-endian length) and get back data frames plus a trailers frame
(flag 0x80, `grpc-status`/`grpc-message` lines), per gRPC's PROTOCOL-WEB. aiohttp does the HTTP (keep-alive
included); this module only does the framing and hands every ReportRequest to `pipeline.report(...,
"grpc-web", drops)`, the same path as gRPC ingest.

Every bad request gets a gRPC status naming what was wrong and is counted as
`grpc_web.errors{<what>}`; nothing a client sends can take the listener down, and no client can hold
more than its share (GrpcWebLimits): a request's headers must arrive within `header_timeout` of the
connection opening or of the previous response (also the keep-alive idle limit), its body within
`body_timeout`, bodies are at most `max_body` bytes, at most `max_connections` connections are open and
at most `max_in_flight` bodies are being read or handled at once (HTTP/1.1: one per connection). So the
listener's memory is bounded by about max_in_flight x max_body, and SIGTERM waits at most the shutdown
grace for a stalled client. On TCP (loopback included) a request needs `authorization: Bearer <token>`
before its body is read; on a unix socket the socket's file mode decides. Events the gateway's reporter
had to drop arrive as `ReportRequest.drops`; the pipeline counts them as `gateway.dropped{queue_full|
send_failed|encode_failed}`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from aiohttp import web

from authwire.access import BearerToken, ServerTls
from authwire.ingest.decode import Malformed, decode_report
from authwire.ingest.problem_log import RateLimitedLog
from authwire.listen import ListenAddress, parse_listen_address, set_socket_access
from authwire.pipeline import StoreUnavailable
from authwire.v1 import auth_event_pb2, ingest_pb2

log = logging.getLogger(__name__)

SERVICE = "authwire.v1.Ingest"
CONTENT_TYPES = ("application/grpc-web", "application/grpc-web+proto")

# gRPC status codes used here
OK, INVALID_ARGUMENT, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, \
    UNAUTHENTICATED = 0, 3, 4, 8, 12, 13, 14, 16


@dataclass(frozen=True)
class GrpcWebLimits:
    max_body: int = 4 * 1024 * 1024   # bytes; a batch of 1000 large events is ~1 MiB
    max_connections: int = 256
    max_in_flight: int = 32           # bodies read or handled at once, all connections together
    header_timeout: float = 10.0      # seconds for a request's headers; also the keep-alive idle limit
    body_timeout: float = 30.0        # seconds for a request's body
    shutdown_grace: float = 5.0       # seconds SIGTERM waits for requests being handled

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

    def __init__(self, pipeline: ReportPipeline, counters: CounterSink, token: BearerToken | None = None,
                 limits: GrpcWebLimits | None = None, mutual_tls: bool = False) -> None:
        self.pipeline = pipeline
        self.counters = counters
        self.token = token
        self.mutual_tls = mutual_tls
        self.limits = limits or GrpcWebLimits()
        self.guard = ConnectionGuard(self.limits, counters)
        self.in_flight = 0
        self._problems = RateLimitedLog("grpc_web")

    def _fail(self, status: int, what: str, message: str, data: bytes = b"", close: bool = False) -> web.Response:
        """Count, log (rate-limited: a bad client must not flood the log), reply."""
        self.counters.inc("grpc_web.errors", what)
        self._problems.log(what, f"gRPC-Web request refused ({what}): {message}")
        response = self._reply(data, status, message)
        if close:
            response.force_close()
        return response

    @staticmethod
    def _reply(data: bytes, status: int, message: str = "") -> web.Response:
        headers = {"Content-Type": "application/grpc-web+proto"}
        if not data:
            # trailers-only response: the status also goes in the headers
            headers["grpc-status"] = str(status)
            headers["grpc-message"] = quote(message, safe=" ")
        return web.Response(status=200, body=data + trailers_frame(status, message), headers=headers)

    def _authorized(self, request: web.Request) -> bool:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if isinstance(sockname, str | bytes):  # AF_UNIX: the socket's file mode decided
            return True
        if self.mutual_tls and request.transport.get_extra_info("peercert"):
            return True  # CERT_REQUIRED: the handshake verified it against tls_client_ca
        return self.token is not None and self.token.matches_authorization(request.headers.get("Authorization"))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        connection = self.guard.request_started(request.transport)
        try:
            return await self._handle(request)
        finally:
            if connection is not None:
                connection.request_done()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        if not self._authorized(request):
            return self._fail(UNAUTHENTICATED, "unauthenticated", "send authorization: Bearer <token> (the "
                              "sidecar's --token-file) or use its unix socket", close=True)
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype not in CONTENT_TYPES:
            self.counters.inc("grpc_web.errors", "content_type")
            return web.Response(status=415, text=f"content-type is not one of {', '.join(CONTENT_TYPES)}\n")
        if method not in ("Report", "ReportStream"):
            return self._fail(UNIMPLEMENTED, "method", f"not a method of {SERVICE} (Report, ReportStream)")
        if request.content_length is not None and request.content_length > self.limits.max_body:
            return self._fail(RESOURCE_EXHAUSTED, "too_large", f"body larger than {self.limits.max_body} bytes",
                              close=True)
        if self.in_flight >= self.limits.max_in_flight:
            # retryable: the reporter keeps the batch and backs off
            return self._fail(RESOURCE_EXHAUSTED, "busy", f"{self.limits.max_in_flight} requests in flight; "
                              "retry", close=True)
        self.in_flight += 1
        try:
            return await self._read_and_report(request, method)
        finally:
            self.in_flight -= 1

    async def _read_and_report(self, request: web.Request, method: str) -> web.StreamResponse:
        try:
            body = await asyncio.wait_for(request.read(), self.limits.body_timeout)
        except web.HTTPRequestEntityTooLarge:
            return self._fail(RESOURCE_EXHAUSTED, "too_large", f"body larger than {self.limits.max_body} bytes",
                              close=True)
        except TimeoutError:
            return self._fail(DEADLINE_EXCEEDED, "body_timeout",
                              f"body not received within {self.limits.body_timeout:g}s", close=True)
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
            decoded = decode_report(payload)
            if isinstance(decoded, Malformed):
                self.counters.inc("ingest.malformed", "grpc-web")
                where = f"message {index}: " if len(payloads) > 1 else ""
                return self._fail(INVALID_ARGUMENT, "protobuf", f"{where}{decoded.why}", bytes(out))
            if decoded.undecodable:
                n = len(decoded.undecodable)
                self.counters.inc("ingest.malformed", "grpc-web", n)
                self.counters.inc("ingest.rejected", "event", n)
                self.counters.inc("ingest.rejected_events", "grpc-web", n)
            try:
                resp = decoded.remap(await self.pipeline.report(decoded.events, "grpc-web", decoded.drops))
            except StoreUnavailable as err:
                # retryable: the gateway's reporter keeps the batch and backs off
                return self._fail(UNAVAILABLE, "store", f"store unavailable: {err}", bytes(out))
            except Exception as err:  # the listener must outlive any pipeline bug
                return self._fail(INTERNAL, "pipeline", f"internal error: {type(err).__name__}", bytes(out))
            out += data_frame(resp.SerializeToString())
        return self._reply(bytes(out), OK)


class _GuardedConnection(asyncio.Protocol):
    """Wraps aiohttp's per-connection protocol: counts the connection and closes it when idle too long."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        if len(self.guard.open) >= self.guard.limits.max_connections:
            self.guard.counters.inc("grpc_web.errors", "connections")
            self.guard.problems.log("connections", f"gRPC-Web connection refused: "
                                                   f"{self.guard.limits.max_connections} already open")
            transport.abort()
            return
        self.transport = transport
        self.guard.open[transport] = self
        self._arm()
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:
            return
        self._disarm()
        self.guard.open.pop(self.transport, None)
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.guard.limits.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self.guard.counters.inc("grpc_web.errors", "header_timeout")
        self.guard.problems.log("header_timeout", "gRPC-Web connection closed: no complete request within "
                                                  f"{self.guard.limits.header_timeout:g}s")
        if self.transport is not None:
            self.transport.abort()

    def request_done(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._arm()


class ConnectionGuard:
    """The open connections of one listener (all its sites): the connection cap and the idle timers."""

    def __init__(self, limits: GrpcWebLimits, counters: CounterSink) -> None:
        self.limits = limits
        self.counters = counters
        self.open: dict[Any, _GuardedConnection] = {}
        self.problems = RateLimitedLog("grpc_web")

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _GuardedConnection(self, inner())

    def request_started(self, transport) -> _GuardedConnection | None:
        connection = self.open.get(transport)
        if connection is not None:
            connection._disarm()  # headers are in; the body has its own deadline
        return connection

    def abort_all(self) -> None:
        for transport in list(self.open):
            transport.abort()


class _GuardedSite(web.BaseSite):
    """A pre-bound socket served through ConnectionGuard."""

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, guard: ConnectionGuard, name: str,
                 ssl_context=None) -> None:
        super().__init__(runner, backlog=128, ssl_context=ssl_context)
        self._sock = sock
        self._guard = guard
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.factory(server), sock=self._sock, backlog=self._backlog, ssl=self._ssl_context)


def _bind(address: ListenAddress) -> socket.socket:
    """A listening socket, never with SO_REUSEPORT (so a second sidecar's bind fails); unix paths must
    already be claimed (authwire.listen.ListenerLock removed a stale socket)."""
    if address.is_unix:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(address.path)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"grpc_web_listen {address.text}: {exc.strerror}") from None
        return sock
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT only; not a second listener
    try:
        sock.bind((address.host, address.port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"grpc_web_listen {address.text}: {exc.strerror}") from None
    return sock


async def start_grpc_web(addresses: list[str], pipeline: ReportPipeline, counters: CounterSink,
                         token: BearerToken | None = None, limits: GrpcWebLimits | None = None,
                         socket_group: str = "", tls: ServerTls | None = None) -> Any:
    """Listen on every address; returns the aiohttp AppRunner (`await runner.cleanup()` stops it).

    The bound addresses (TCP port 0 resolved) are in `runner.addresses` as (host, port) or path.
    """
    limits = limits or GrpcWebLimits()
    ingest = GrpcWebIngest(pipeline, counters, token, limits, mutual_tls=tls is not None and tls.mutual)
    ssl_context = tls.ssl_context() if tls is not None and tls.enabled else None
    app = web.Application(client_max_size=limits.max_body)
    app.router.add_post(f"/{SERVICE}/{{method}}", ingest.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=limits.shutdown_grace,
                           keepalive_timeout=limits.header_timeout, handler_cancellation=True)
    # SIGTERM: stalled clients are cut after the grace, their handlers cancelled
    app.on_shutdown.append(lambda _app: _abort_later(ingest.guard, limits.shutdown_grace))
    await runner.setup()
    try:
        for text in addresses:
            address = parse_listen_address(text, "grpc_web_listen")
            if not address.is_unix and token is None and not ingest.mutual_tls:
                raise ValueError(f"grpc_web_listen {text}: a TCP listener needs a token (token_file) or mTLS")
            sock = _bind(address)
            site_tls = None if address.is_unix else ssl_context
            site = _GuardedSite(runner, sock, ingest.guard, f"unix:{address.path}" if address.is_unix
                                else f"{'https' if site_tls else 'http'}://{address.text}", site_tls)
            await site.start()
            if address.is_unix:
                # The gateway's workers run as their own user (nginx www-data, APISIX nobody, Kong kong) and
                # connect() needs write permission: without socket_group the socket is open to every local
                # user (reports only: no record is served here); with it, to that group only (0660).
                set_socket_access(address.path, 0o666, socket_group)
            log.info("gRPC-Web Ingest listening on %s", site.name)
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def _abort_later(guard: ConnectionGuard, grace: float) -> None:
    asyncio.get_running_loop().call_later(grace, guard.abort_all)

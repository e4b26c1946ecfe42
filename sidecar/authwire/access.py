"""Who may talk to the sidecar: the bearer token every TCP listener that accepts reports or serves records
requires (loopback included: on a shared host any local user can connect to 127.0.0.1).

- The token lives in a file (`--token-file`, env AUTHWIRE_TOKEN_FILE); `serve` creates it (0600, 32 random
  bytes, URL-safe) when the file does not exist yet, so a fresh install is protected without a setup step.
- Clients send `authorization: Bearer <token>` (gRPC metadata, gRPC-Web and HTTP headers alike).
- Comparison is constant-time; the token is never logged nor echoed (only the file's path is).
- Unix sockets rely on their file mode and need no token.
- token_file = "off" disables tokens: serve then refuses every TCP listener that accepts reports or serves
  records (gRPC, gRPC-Web, HTTP), naming it, and listens on unix sockets only.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

import grpc

TOKEN_BYTES = 32
DEFAULT_TOKEN_FILE = "/var/lib/authwire/token"  # beside the default store
MAX_TOKEN_FILE = 4096


class AccessError(ValueError):
    """The token file cannot be used; the message names the path and the fix (never the token)."""


class BearerToken:
    """A loaded token. `matches()` is the only way to compare with what a client presented."""

    __slots__ = ("_expected", "path")

    def __init__(self, token: str, path: str = "") -> None:
        if not token:
            raise AccessError(f"token file {path or '(inline)'} is empty")
        self._expected = token.encode()
        self.path = path

    def __repr__(self) -> str:  # never print the token itself
        return f"BearerToken(path={self.path!r})"

    def matches(self, presented: str | bytes | None) -> bool:
        if presented is None:
            return False
        if isinstance(presented, str):
            presented = presented.encode("utf-8", "replace")
        return hmac.compare_digest(presented, self._expected)

    def matches_authorization(self, header: str | bytes | None) -> bool:
        """True when header is `Bearer <token>` (scheme case-insensitive, RFC 6750)."""
        if header is None:
            return False
        if isinstance(header, bytes):
            header = header.decode("latin-1")
        scheme, _, value = header.strip().partition(" ")
        return scheme.lower() == "bearer" and self.matches(value.strip())

    @property
    def value(self) -> str:
        """The token, for clients that must send it (CLI, tests). Never log it."""
        return self._expected.decode()


def load_token(path: str | Path) -> BearerToken:
    """Read a token file (first line, stripped). Raises AccessError naming the path."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_TOKEN_FILE + 1)
    except OSError as exc:
        raise AccessError(f"token file {p}: {exc.strerror or exc}") from None
    if len(data) > MAX_TOKEN_FILE:
        raise AccessError(f"token file {p}: larger than {MAX_TOKEN_FILE} bytes; want one line with the token")
    text = data.decode("utf-8", "replace").strip().splitlines()
    return BearerToken(text[0].strip() if text else "", str(p))


def load_or_create_token(path: str | Path) -> BearerToken:
    """The token in path; a new random one (file mode 0600, parent made 0700) if the file does not exist."""
    p = Path(path)
    if not p.exists():
        p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        token = secrets.token_urlsafe(TOKEN_BYTES)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_token(p)  # another process made it first
        except OSError as exc:
            raise AccessError(f"token file {p}: cannot create: {exc.strerror or exc}") from None
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
    return load_token(p)


TOKEN_OFF = "off"


def client_token(path: str | Path | None = None) -> str | None:
    """For clients (CLI, tools): the token from path or AUTHWIRE_TOKEN_FILE, or None when neither is set."""
    path = path or os.environ.get("AUTHWIRE_TOKEN_FILE")
    return load_token(path).value if path and str(path) != TOKEN_OFF else None


# gRPC methods any peer may call: the health check carries no record data.
OPEN_GRPC_PREFIXES = ("/grpc.health.v1.Health/",)


class GrpcAccess(grpc.aio.ServerInterceptor):
    """The access rule on the gRPC server: a TCP peer must send `authorization: Bearer <token>` metadata for
    every method but the health check (Ingest, Query, Envoy's ALS and any service added later); a unix-socket
    peer is let through, the socket's file mode having decided who could connect.

    With mutual TLS (ServerTls.mutual) a verified client certificate stands in for the token.
    Denials are UNAUTHENTICATED, counted as `access.denied{grpc}`; the presented value is never logged.
    With token None (token_file = "off") and no mTLS, serve refuses TCP listeners before this is ever asked.
    """

    def __init__(self, token: BearerToken | None, counters=None, mutual_tls: bool = False) -> None:
        self.token = token
        self.counters = counters
        self.mutual_tls = mutual_tls

    async def _check(self, context: grpc.aio.ServicerContext) -> None:
        if context.peer().startswith("unix:"):
            return
        if self.mutual_tls and peer_has_client_certificate(context):
            return
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and self.token is not None and self.token.matches_authorization(value):
                return
        if self.counters is not None:
            self.counters.inc("access.denied", "grpc")
        await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                            "send metadata authorization: Bearer <token> (the sidecar's --token-file), "
                            "or connect over its unix socket")

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_GRPC_PREFIXES):
            return handler
        check = self._check
        des, ser = handler.request_deserializer, handler.response_serializer
        if handler.unary_unary:
            inner_uu = handler.unary_unary

            async def unary_unary(request, context):
                await check(context)
                return await inner_uu(request, context)
            return grpc.unary_unary_rpc_method_handler(unary_unary, des, ser)
        if handler.stream_unary:
            inner_su = handler.stream_unary

            async def stream_unary(request_iterator, context):
                await check(context)
                return await inner_su(request_iterator, context)
            return grpc.stream_unary_rpc_method_handler(stream_unary, des, ser)
        inner = handler.unary_stream or handler.stream_stream

        async def streaming(request, context):
            await check(context)
            async for response in inner(request, context):
                yield response
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(streaming, des, ser)
        return grpc.stream_stream_rpc_method_handler(streaming, des, ser)


class _BearerMetadata(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                      grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Client side: adds `authorization: Bearer <token>` to every call of a channel."""

    def __init__(self, token: str) -> None:
        self._metadata = (("authorization", f"Bearer {token}"),)

    def _details(self, details):
        return details._replace(metadata=tuple(details.metadata or ()) + self._metadata)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


def client_channel(server: str, token_file: str | Path | None = None, **kwargs) -> grpc.Channel:
    """A channel to the sidecar that sends the token on TCP (token_file, else AUTHWIRE_TOKEN_FILE, else the
    default `/var/lib/authwire/token` when readable); on a unix socket the file mode decides and no token
    is read. AUTHWIRE_TLS_CA (with AUTHWIRE_TLS_CERT/KEY for mTLS) makes a TCP channel TLS."""
    ca = os.environ.get("AUTHWIRE_TLS_CA")
    if ca and not server.startswith("unix:"):
        creds = client_credentials(ca, os.environ.get("AUTHWIRE_TLS_CERT"), os.environ.get("AUTHWIRE_TLS_KEY"))
        channel = grpc.secure_channel(server, creds, **kwargs)
    else:
        channel = grpc.insecure_channel(server, **kwargs)
    if server.startswith("unix:"):
        return channel
    token = client_token(token_file)
    if token is None and os.access(DEFAULT_TOKEN_FILE, os.R_OK):
        token = load_token(DEFAULT_TOKEN_FILE).value
    return grpc.intercept_channel(channel, _BearerMetadata(token)) if token else channel


class ServerTls:
    """TLS on the TCP listeners (gRPC, gRPC-Web): cert + key, and with client_ca mutual TLS — a client
    certificate signed by that CA then authenticates the peer in place of the bearer token (the handshake
    fails without one). Unix sockets stay plaintext: their file mode is the rule there."""

    def __init__(self, cert: str, key: str, client_ca: str = "") -> None:
        if bool(cert) != bool(key):
            raise AccessError("tls_cert and tls_key go together")
        if client_ca and not cert:
            raise AccessError("tls_client_ca needs tls_cert and tls_key (the server's own certificate)")
        self.cert, self.key, self.client_ca = cert, key, client_ca

    @property
    def enabled(self) -> bool:
        return bool(self.cert)

    @property
    def mutual(self) -> bool:
        return bool(self.client_ca)

    def _read(self, path: str, what: str) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise AccessError(f"{what} {path}: {exc.strerror or exc}") from None

    def grpc_credentials(self) -> grpc.ServerCredentials:
        pair = (self._read(self.key, "tls_key"), self._read(self.cert, "tls_cert"))
        ca = self._read(self.client_ca, "tls_client_ca") if self.mutual else None
        return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=self.mutual)

    def ssl_context(self):
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.cert, self.key)
            if self.mutual:
                context.load_verify_locations(self.client_ca)
                context.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise AccessError(f"tls_cert/tls_key/tls_client_ca: {exc}") from None
        return context


def peer_has_client_certificate(context: grpc.aio.ServicerContext) -> bool:
    """A gRPC peer that completed mutual TLS (the server required and verified its certificate)."""
    auth = context.auth_context() or {}
    return auth.get("transport_security_type") == [b"ssl"] and bool(auth.get("x509_pem_cert"))


def client_credentials(ca: str | None, cert: str | None = None, key: str | None = None):
    """grpc channel credentials for a TLS server (CLI): ca verifies the server; cert/key for mTLS."""
    read = lambda p: Path(p).read_bytes() if p else None  # noqa: E731
    return grpc.ssl_channel_credentials(read(ca), read(key), read(cert))

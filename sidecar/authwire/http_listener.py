"""The sidecar's HTTP listener (aiohttp): one listener for everything served over plain HTTP.

Routes are added by the stages that own them (export: `/metrics`; query: the JSON API and the web view);
this module owns binding, limits and the access rule:

- a *public* route (`/healthz`, `/metrics`: no record data, no consumer/IP/credential in any label) answers
  without a token on a unix socket or a loopback listener, and needs the token everywhere else;
- every other route needs `Authorization: Bearer <token>` on any TCP listener, loopback included
  (authwire.access), or one of the extra `authenticators` (the web view's session cookie);
- a listener on a non-loopback TCP address without a token refuses to start, naming the address.

Failures are RFC 9457 problem documents (`application/problem+json`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from authwire.access import BearerToken
from authwire.listen import is_loopback_host, parse_listen_address

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Authenticator = Callable[[web.Request], bool]
HealthCheck = Callable[[], tuple[bool, str]]  # (ok, a short fact: "writable", "running", why not)

MAX_REQUEST_BODY = 64 * 1024   # a read-only API: requests carry no bodies worth more
KEEPALIVE_TIMEOUT = 15.0       # seconds an idle keep-alive connection is kept
MAX_LINE = 8190                # request line and header line limits (aiohttp's defaults, stated)
MAX_HEADERS_SIZE = 8190


def problem(status: int, title: str, detail: str = "", **extra: Any) -> web.Response:
    """An RFC 9457 problem+json response."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return web.json_response(body, status=status, content_type="application/problem+json")


def request_is_local(request: web.Request) -> bool:
    """Arrived on a unix socket or a loopback listener (so the peer is on this host)."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if isinstance(sockname, str | bytes):  # AF_UNIX
        return True
    if isinstance(sockname, tuple) and sockname:
        return is_loopback_host(str(sockname[0]))
    return False


def request_is_unix(request: web.Request) -> bool:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return isinstance(sockname, str | bytes)


class HttpListener:
    def __init__(self, addresses: list[str], token: BearerToken | None, setting: str = "http_listen") -> None:
        self.addresses = [parse_listen_address(a, setting) for a in addresses]
        for a in self.addresses:
            if a.kind == "tcp" and not a.is_loopback and token is None:
                raise ValueError(f"{setting} {a.text}: a non-loopback listener needs a token (--token-file)")
        self.token = token
        self.authenticators: list[Authenticator] = []
        self.app = web.Application(client_max_size=MAX_REQUEST_BODY, middlewares=[self._errors])
        self.runner: web.AppRunner | None = None
        self.bound: list[Any] = []  # (host, port) or path, after start()
        self.health_checks: dict[str, HealthCheck] = {}
        self.add_route("GET", "/healthz", self._healthz, public=True)

    def add_route(self, method: str, path: str, handler: Handler, public: bool = False) -> None:
        """Register a route; public=True only for data-free routes such as /metrics and /healthz."""
        async def guarded(request: web.Request) -> web.StreamResponse:
            if not self.allowed(request, public):
                return problem(401, "Unauthorized", "send Authorization: Bearer <token> (see --token-file)",
                               headers_hint="WWW-Authenticate")
            return await handler(request)
        self.app.router.add_route(method, path, guarded)

    def add_health_check(self, name: str, check: HealthCheck) -> None:
        """A fact /healthz reports; any check not ok makes /healthz answer 503 (status "failing")."""
        self.health_checks[name] = check

    def allowed(self, request: web.Request, public: bool) -> bool:
        if request_is_unix(request):
            return True  # the socket's file mode decides who can connect
        if public and request_is_local(request):
            return True
        if self.token is not None and self.token.matches_authorization(request.headers.get("Authorization")):
            return True
        return any(auth(request) for auth in self.authenticators)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = problem(exc.status, exc.reason, exc.text if exc.text and exc.text != exc.reason else "")
            if "Allow" in exc.headers:  # 405 must say which methods exist (RFC 9110 15.5.6)
                response.headers["Allow"] = exc.headers["Allow"]
            return response
        if response.status == 401 and not response.headers.get("WWW-Authenticate"):
            response.headers["WWW-Authenticate"] = 'Bearer realm="authwire"'
        return response

    async def _healthz(self, request: web.Request) -> web.Response:
        checks = {}
        for name, check in self.health_checks.items():
            try:
                ok, detail = check()
            except Exception as exc:  # a broken check is a failing one, not a 500
                ok, detail = False, f"check failed: {type(exc).__name__}"
            checks[name] = {"ok": ok, "detail": detail}
        healthy = all(c["ok"] for c in checks.values())
        body: dict[str, Any] = {"status": "serving" if healthy else "failing"}
        if checks:
            body["checks"] = checks
        return web.json_response(body, status=200 if healthy else 503)

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                    keepalive_timeout=KEEPALIVE_TIMEOUT,
                                    max_line_size=MAX_LINE, max_field_size=MAX_HEADERS_SIZE)
        await self.runner.setup()
        try:
            for a in self.addresses:
                if a.is_unix:
                    os.makedirs(os.path.dirname(a.path) or ".", exist_ok=True)
                    site: web.BaseSite = web.UnixSite(self.runner, a.path)
                else:
                    site = web.TCPSite(self.runner, a.host, a.port)
                await site.start()
                if a.is_unix:
                    os.chmod(a.path, 0o660)
                server = getattr(site, "_server", None)
                for sock in getattr(server, "sockets", None) or []:
                    self.bound.append(sock.getsockname())
                log.info("HTTP listening on %s", site.name)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

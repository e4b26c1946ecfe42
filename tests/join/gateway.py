"""A small but real API gateway for the join tests: HTTP/1.1 keep-alive (aiohttp), JWT (RS256 + HS256),
Basic and HMAC access-key/secret-key (AKSK) authentication, reporting one AuthEvent per request to the
sidecar over gRPC exactly as a plugin does: from the log phase (after the response), batched, in the
background, never blocking a request, never sending a secret.

Run inside the server network namespace:

    python tests/join/gateway.py --listen 10.1.0.1:8080 --sidecar unix:/tmp/aw.sock --creds creds.json

It prints one line `READY <host> <port>` once it accepts connections.

Routes: /jwt/*, /basic/*, /hmac/* authenticate with that scheme; anything else is AUTH_METHOD_NONE.
Test controls (never reported): `X-Hold-Report: 1` keeps that request's report back until
`POST /__gateway/release` (late reports, sent after the connection closed); `GET /__gateway/stats`
gives report counters as JSON. `X-Request-Id` is honoured as the request id (as real gateways do).

AKSK scheme (modelled on APISIX hmac-auth / AWS-style signing, simplified):
    X-Date: <unix seconds>
    Authorization: HMAC-SHA256 Credential=<access key>, Signature=<hex HMAC-SHA256(secret, string_to_sign)>
    string_to_sign = METHOD "\\n" PATH "\\n" X-Date
A date more than 300 s from the gateway's clock is CLOCK_SKEW.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import hmac
import itertools
import json
import os
import signal
import socket
import sys
import time
import uuid
import weakref
from pathlib import Path
from typing import Any

import grpc
import jwt
from aiohttp import web

from authwire.v1 import auth_event_pb2 as ae
from authwire.v1 import ingest_pb2, ingest_pb2_grpc

MAX_SKEW_S = 300
BATCH_MAX = 500
BATCH_LINGER_S = 0.02


# -- credentials (shared with the test client: it signs, the gateway verifies) ------------------------

def hmac_string_to_sign(method: str, path: str, date: str) -> str:
    return f"{method}\n{path}\n{date}"


def hmac_signature(secret: str, method: str, path: str, date: str) -> str:
    return hmac.new(secret.encode(), hmac_string_to_sign(method, path, date).encode(), hashlib.sha256).hexdigest()


def hmac_authorization(access_key: str, secret: str, method: str, path: str, date: str) -> str:
    return f"HMAC-SHA256 Credential={access_key}, Signature={hmac_signature(secret, method, path, date)}"


def basic_authorization(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# -- authentication -----------------------------------------------------------------------------------

class AuthResult:
    __slots__ = ("method", "outcome", "reason", "message", "consumer", "credential_id", "plugin", "claims")

    def __init__(self, method: int, plugin: str) -> None:
        self.method = method
        self.plugin = plugin
        self.outcome = ae.AUTH_OUTCOME_FAILURE
        self.reason = ae.FAILURE_REASON_UNSPECIFIED
        self.message = ""
        self.consumer = ""
        self.credential_id = ""
        self.claims: ae.JwtClaims | None = None

    def fail(self, reason: int, message: str) -> AuthResult:
        self.outcome, self.reason, self.message = ae.AUTH_OUTCOME_FAILURE, reason, message
        return self

    def ok(self, consumer: str, credential_id: str) -> AuthResult:
        self.outcome, self.consumer, self.credential_id = ae.AUTH_OUTCOME_SUCCESS, consumer, credential_id
        return self


class Authenticator:
    """creds.json: {"jwt": {kid: {"alg": "RS256", "public_key": PEM, "consumer": name} |
    {"alg": "HS256", "secret": str, "consumer": name}}, "basic": {user: {"password", "consumer"}},
    "hmac": {access_key: {"secret", "consumer"}}}"""

    def __init__(self, creds: dict[str, Any]) -> None:
        self.jwt_keys = creds.get("jwt", {})
        self.basic = creds.get("basic", {})
        self.hmac = creds.get("hmac", {})

    def jwt(self, request: web.Request) -> AuthResult:
        r = AuthResult(ae.AUTH_METHOD_JWT, "jwt-auth")
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return r.fail(ae.FAILURE_REASON_MISSING_CREDENTIALS, "Missing JWT token in request")
        token = header[len("Bearer "):].strip()
        try:
            head = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            return r.fail(ae.FAILURE_REASON_INVALID_CREDENTIALS, "JWT token invalid")
        kid, alg = head.get("kid", ""), head.get("alg", "")
        r.claims = ae.JwtClaims(
            iss=str(unverified.get("iss", "")), sub=str(unverified.get("sub", "")),
            aud=str(unverified.get("aud", "")), kid=kid, alg=alg,
            exp=int(unverified.get("exp", 0) or 0), iat=int(unverified.get("iat", 0) or 0),
            jti_hash=hashlib.sha256(str(unverified["jti"]).encode()).hexdigest() if "jti" in unverified else "")
        key = self.jwt_keys.get(kid)
        if key is None:
            return r.fail(ae.FAILURE_REASON_UNKNOWN_KEY, "Invalid user key in JWT token")
        r.credential_id = kid
        if alg != key["alg"]:  # never let the token choose the algorithm (alg confusion)
            return r.fail(ae.FAILURE_REASON_INVALID_CREDENTIALS, f"JWT alg {alg} not allowed for key")
        verify_key = key["public_key"] if key["alg"] == "RS256" else key["secret"]
        try:
            jwt.decode(token, verify_key, algorithms=[key["alg"]], options={"verify_aud": False})
        except jwt.ExpiredSignatureError:
            return r.fail(ae.FAILURE_REASON_EXPIRED, "failed to verify jwt: Signature has expired")
        except jwt.InvalidSignatureError:
            return r.fail(ae.FAILURE_REASON_BAD_SIGNATURE, "failed to verify jwt: Signature verification failed")
        except jwt.InvalidTokenError as exc:
            return r.fail(ae.FAILURE_REASON_INVALID_CREDENTIALS, f"failed to verify jwt: {exc}"[:200])
        return r.ok(key["consumer"], kid)

    def basic_auth(self, request: web.Request) -> AuthResult:
        r = AuthResult(ae.AUTH_METHOD_BASIC, "basic-auth")
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return r.fail(ae.FAILURE_REASON_MISSING_CREDENTIALS, "Missing authorization in request")
        try:
            user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return r.fail(ae.FAILURE_REASON_INVALID_CREDENTIALS, "Invalid authorization in request")
        r.credential_id = user
        entry = self.basic.get(user)
        if entry is None:
            return r.fail(ae.FAILURE_REASON_UNKNOWN_KEY, "Invalid user authorization")
        if not hmac.compare_digest(entry["password"].encode(), password.encode()):
            return r.fail(ae.FAILURE_REASON_INVALID_CREDENTIALS, "Invalid user authorization")
        return r.ok(entry["consumer"], user)

    def hmac_auth(self, request: web.Request) -> AuthResult:
        r = AuthResult(ae.AUTH_METHOD_HMAC, "hmac-auth")
        header = request.headers.get("Authorization", "")
        date = request.headers.get("X-Date", "")
        if not header.startswith("HMAC-SHA256 ") or not date:
            return r.fail(ae.FAILURE_REASON_MISSING_CREDENTIALS,
                          "client request can't be validated: missing Authorization header")
        fields = dict(p.strip().partition("=")[::2] for p in header[len("HMAC-SHA256 "):].split(","))
        access_key, signature = fields.get("Credential", ""), fields.get("Signature", "")
        r.credential_id = access_key
        entry = self.hmac.get(access_key)
        if entry is None:
            return r.fail(ae.FAILURE_REASON_UNKNOWN_KEY, "client request can't be validated: unknown access key")
        try:
            skew = abs(time.time() - int(date))
        except ValueError:
            return r.fail(ae.FAILURE_REASON_INVALID_CREDENTIALS, "client request can't be validated: bad X-Date")
        if skew > MAX_SKEW_S:
            return r.fail(ae.FAILURE_REASON_CLOCK_SKEW, "client request can't be validated: clock skew exceeded")
        expected = hmac_signature(entry["secret"], request.method, request.path, date)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            return r.fail(ae.FAILURE_REASON_BAD_SIGNATURE, "client request can't be validated")
        return r.ok(entry["consumer"], access_key)


# -- reporting (the plugin's log phase) ---------------------------------------------------------------

class Reporter:
    """Batches events and ships them with Ingest.Report; the request path only appends to a list."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.pending: list[ae.AuthEvent] = []
        self.held: list[ae.AuthEvent] = []
        self.wakeup = asyncio.Event()
        self.stats = {"queued": 0, "sent": 0, "accepted": 0, "rejected": 0, "send_errors": 0, "dropped": 0, "held": 0}
        self.rejections: list[str] = []
        self.channel: grpc.aio.Channel | None = None
        self.inflight = 0

    def log(self, event: ae.AuthEvent, hold: bool) -> None:
        self.stats["queued"] += 1
        if hold:
            self.held.append(event)
            self.stats["held"] += 1
            return
        self.pending.append(event)
        self.wakeup.set()

    def release(self) -> int:
        n = len(self.held)
        self.pending.extend(self.held)
        self.held.clear()
        self.stats["held"] = 0
        self.wakeup.set()
        return n

    async def run(self) -> None:
        self.channel = grpc.aio.insecure_channel(self.target)
        stub = ingest_pb2_grpc.IngestStub(self.channel)
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            await asyncio.sleep(BATCH_LINGER_S)  # let a batch form, as plugin batch processors do
            while self.pending:
                batch, self.pending = self.pending[:BATCH_MAX], self.pending[BATCH_MAX:]
                self.inflight = len(batch)
                for attempt in range(5):
                    try:
                        resp = await stub.Report(ingest_pb2.ReportRequest(events=batch), timeout=30)
                        break
                    except grpc.aio.AioRpcError as exc:
                        self.stats["send_errors"] += 1
                        print(f"report failed (attempt {attempt + 1}): {exc.code()} {exc.details()}",
                              file=sys.stderr, flush=True)
                        await asyncio.sleep(0.2 * (attempt + 1))
                else:  # gave up: counted, as a plugin's batch processor counts what it drops
                    self.inflight = 0
                    self.stats["dropped"] += len(batch)
                    continue
                self.inflight = 0
                self.stats["sent"] += len(batch)
                self.stats["accepted"] += resp.accepted
                self.stats["rejected"] += len(resp.rejections)
                self.rejections.extend(f"{r.index} {r.field}: {r.reason}" for r in resp.rejections[:20])


# -- HTTP ---------------------------------------------------------------------------------------------

class Gateway:
    def __init__(self, auth: Authenticator, reporter: Reporter, node: str, worker: int) -> None:
        self.auth = auth
        self.reporter = reporter
        self.node = node
        # Connection ids unique across worker processes, like nginx's shared $connection counter.
        self._ids = itertools.count((worker << 40) + 1)
        self._conns: weakref.WeakKeyDictionary[Any, list[int]] = weakref.WeakKeyDictionary()

    def _connection(self, request: web.Request) -> tuple[int, int]:
        """(gateway connection id, this request's number on it); one asyncio transport per TCP connection."""
        state = self._conns.get(request.transport)
        if state is None:
            state = self._conns[request.transport] = [next(self._ids), 0]
        state[1] += 1
        return state[0], state[1]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        start_ns = time.time_ns()
        start_mono = time.monotonic()
        conn_id, conn_requests = self._connection(request)
        await request.read()
        path = request.path
        if path.startswith("/jwt/"):
            result = self.auth.jwt(request)
        elif path.startswith("/basic/"):
            result = self.auth.basic_auth(request)
        elif path.startswith("/hmac/"):
            result = self.auth.hmac_auth(request)
        else:
            result = AuthResult(ae.AUTH_METHOD_NONE, "")
            result.outcome = ae.AUTH_OUTCOME_NOT_ATTEMPTED
        if result.outcome == ae.AUTH_OUTCOME_FAILURE:
            body = json.dumps({"message": result.message}).encode()
            response = web.Response(status=401, body=body, content_type="application/json",
                                    headers={"WWW-Authenticate": "authwire-test"})
        else:
            body = json.dumps({"ok": True, "consumer": result.consumer}).encode()
            response = web.Response(status=200, body=body, content_type="application/json")
        await response.prepare(request)
        await response.write_eof()
        # Log phase: the response is out; build the event and hand it to the batcher.
        self.reporter.log(self._event(request, result, response, start_ns, start_mono, conn_id, conn_requests),
                          hold=request.headers.get("X-Hold-Report") == "1")
        return response

    def _event(self, request: web.Request, result: AuthResult, response: web.Response, start_ns: int,
               start_mono: float, conn_id: int, conn_requests: int) -> ae.AuthEvent:
        peer = request.transport.get_extra_info("peername")
        local = request.transport.get_extra_info("sockname")
        event = ae.AuthEvent(
            request_id=request.headers.get("X-Request-Id") or uuid.uuid4().hex,
            gateway=ae.Gateway(kind=ae.GATEWAY_KIND_OTHER, node=self.node, version="test-1"),
            client=ae.Endpoint(ip=peer[0], port=peer[1]),
            server=ae.Endpoint(ip=local[0], port=local[1]),
            forwarded_for=request.headers.get("X-Forwarded-For", "").split(",")[0].strip(),
            gateway_connection_id=conn_id,
            connection_requests=conn_requests,
            http=ae.HttpRequest(method=request.method, host=request.host, path=request.path,
                                status=response.status, user_agent=request.headers.get("User-Agent", ""),
                                request_bytes=request.content_length or 0,
                                response_bytes=response.content_length or 0),
            route_id=request.path.split("/")[1] or "root",
            auth=ae.Auth(method=result.method, outcome=result.outcome, plugin=result.plugin,
                         consumer=result.consumer, credential_id=result.credential_id, reason=result.reason,
                         message=result.message),
        )
        if result.claims is not None:
            event.auth.jwt.CopyFrom(result.claims)
        event.start_time.FromNanoseconds(start_ns)
        event.latency.FromNanoseconds(int((time.monotonic() - start_mono) * 1e9))
        return event

    async def release(self, request: web.Request) -> web.Response:
        return web.json_response({"released": self.reporter.release()})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({**self.reporter.stats, "pending": len(self.reporter.pending) + self.reporter.inflight,
                                  "rejections": self.reporter.rejections[:20]})


async def serve(args: argparse.Namespace) -> None:
    creds = json.loads(Path(args.creds).read_text())
    reporter = Reporter(args.sidecar)
    gateway = Gateway(Authenticator(creds), reporter, args.node, args.worker)
    app = web.Application()
    app.router.add_post("/__gateway/release", gateway.release)
    app.router.add_get("/__gateway/stats", gateway.stats)
    app.router.add_route("*", "/{tail:.*}", gateway.handle)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=300)
    await runner.setup()
    host, port = args.listen.rsplit(":", 1)
    host = host.strip("[]")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if args.reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, int(port)))
    sock.listen(4096)
    site = web.SockSite(runner, sock)
    await site.start()
    sender = asyncio.create_task(reporter.run())
    print(f"READY {host} {sock.getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    # Ship what is left before exiting, as a plugin flushes its batch on worker exit.
    await runner.cleanup()
    reporter.release()
    deadline = time.monotonic() + 60
    while (reporter.pending or reporter.inflight or reporter.wakeup.is_set()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    sender.cancel()
    print(f"gateway exiting: {json.dumps(reporter.stats)}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", required=True, help="HOST:PORT")
    p.add_argument("--sidecar", required=True, help="gRPC target of authwire, e.g. unix:/run/authwire.sock")
    p.add_argument("--creds", required=True, help="credentials JSON (see Authenticator)")
    p.add_argument("--node", default=os.uname().nodename)
    p.add_argument("--worker", type=int, default=0, help="worker index (keeps connection ids unique)")
    p.add_argument("--reuse-port", action="store_true", help="SO_REUSEPORT: several workers on one port")
    args = p.parse_args(argv)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

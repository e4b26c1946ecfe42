"""Shared test support: CI-strict skipping and a real `authwire serve` subprocess.

Under CI=true a test that would skip for lack of root, bcc, nginx or envoy FAILS instead, so a broken
machine setup can never pass silently.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authwire.demo.lab import nsenter_argv
from authwire.v1 import ingest_pb2_grpc, query_pb2_grpc

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
AUTHWIRE = str(Path(sys.executable).with_name("authwire"))


def require(condition: bool, why: str) -> None:
    """Skip when condition is false — but fail under CI=true."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true: this test must run here but cannot: {why}")
    pytest.skip(why)


def require_root_bcc() -> None:
    require(os.geteuid() == 0, "needs root (tc clsact + BPF)")
    try:
        import bcc  # noqa: F401
    except ImportError as exc:
        require(False, f"needs bcc (apt-get install python3-bpfcc; venv with --system-site-packages): {exc}")
    require(shutil.which("tc") is not None and shutil.which("ip") is not None, "needs iproute2 (ip, tc)")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for children that must be told their port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.02):
    """Poll predicate until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Sidecar:
    """A running `authwire serve` child process."""

    process: subprocess.Popen
    address: str
    db: Path
    log: Path
    args: list[str] = field(default_factory=list)
    _channel: grpc.Channel | None = None

    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.address)
        return self._channel

    def ingest(self) -> ingest_pb2_grpc.IngestStub:
        return ingest_pb2_grpc.IngestStub(self.channel())

    def query(self) -> query_pb2_grpc.QueryStub:
        return query_pb2_grpc.QueryStub(self.channel())

    def cli(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        """Run an `authwire` client command against this sidecar."""
        result = subprocess.run([AUTHWIRE, *args, "--server", self.address], capture_output=True, text=True,
                                input=input, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"authwire {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    def token(self) -> str:
        """The bearer token TCP listeners require (serve creates it: --token-file, else `token` beside the db)."""
        from authwire.access import load_token

        args = self.args
        path = args[args.index("--token-file") + 1] if "--token-file" in args else self.db.parent / "token"
        return load_token(path).value

    def auth_header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def _close_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM and wait: the clean shutdown path."""
        self._close_channel()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"authwire serve did not stop within {timeout}s of SIGTERM") from None
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: the crash path."""
        self._close_channel()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def start_sidecar(tmp_path: Path, *extra_args: str, db: Path | None = None, netns: str | None = None,
                  inspector: bool = False, ready_timeout: float = 30,
                  launcher: list[str] | None = None) -> Sidecar:
    """Start `authwire serve` on a unix socket under tmp_path and wait until its health check says SERVING.

    Without inspector=True it runs with --no-inspector. netns runs it inside that network namespace.
    launcher: argv put before the command instead (e.g. ["ip", "netns", "exec", NS]).
    """
    sock = tmp_path / f"authwire-{os.getpid()}-{time.monotonic_ns()}.sock"
    address = f"unix:{sock}"
    db = db or tmp_path / "authwire.db"
    log = tmp_path / f"serve-{time.monotonic_ns()}.log"
    args = ["serve", "--listen", address, "--db", str(db)]
    if "--grpc-web-listen" not in extra_args:
        args += ["--grpc-web-listen", "off"]
    if "--http-listen" not in extra_args:
        args += ["--http-listen", "off"]
    if not inspector:
        args.append("--no-inspector")
    args += list(extra_args)
    command = [AUTHWIRE, *args]
    if launcher:
        command = [*launcher, *command]
    elif netns:
        # nsenter, not `ip netns exec`: that remounts /sys and hides tracefs/bpffs from the inspector.
        command = nsenter_argv(netns, command)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    sidecar = Sidecar(process, address, db, log, args)

    def serving() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"authwire serve exited with {process.returncode}:\n{sidecar.log_text()}")
        with contextlib.suppress(grpc.RpcError):
            stub = health_pb2_grpc.HealthStub(sidecar.channel())
            return stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == \
                health_pb2.HealthCheckResponse.SERVING
        return False

    try:
        wait_until(serving, ready_timeout, "authwire serve to report SERVING")
    except BaseException:
        sidecar.kill()
        raise
    return sidecar


def auth_event(request_id: str, client: tuple[str, int] = ("192.0.2.10", 40000),
               server: tuple[str, int] = ("192.0.2.1", 443), start: float | None = None, **auth):
    """A well-formed AuthEvent (JWT success unless auth fields say otherwise)."""
    from authwire.v1 import auth_event_pb2 as pb

    event = pb.AuthEvent(
        request_id=request_id,
        client=pb.Endpoint(ip=client[0], port=client[1]),
        server=pb.Endpoint(ip=server[0], port=server[1]),
        gateway=pb.Gateway(kind=pb.GATEWAY_KIND_APISIX, node="gw-1", version="3.18.0"),
        http=pb.HttpRequest(method="GET", host="api.example", path="/orders", status=200, user_agent="curl/8"),
        route_id="orders",
        auth=pb.Auth(method=pb.AUTH_METHOD_JWT, outcome=pb.AUTH_OUTCOME_SUCCESS, plugin="jwt-auth",
                     consumer="alice", credential_id="key-alice"),
    )
    for key, value in auth.items():
        setattr(event.auth, key, value)
    event.start_time.FromNanoseconds(int((time.time() if start is None else start) * 1e9))
    event.latency.FromMilliseconds(3)
    return event

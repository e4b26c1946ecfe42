"""The authwire Kong plugin's cost on Kong 3.9.3's own Lua (PDK, key-auth, kong.tools.queue); prints one line.

Two nginx processes (one worker each) run Kong's Lua the way tests/gateway/test_kong_adapter.py does: real
key-auth on every request, one with the authwire plugin enabled globally (Kong's queue batching 200 events to
a null gRPC-Web sink in a third nginx), one without. wrk alternates between them for a bounded time each; the
figure is the worker's CPU per request (utime + stime), which depends much less than req/s on what else the
two shared cores run. Needs AUTHWIRE_KONG_HOME / AUTHWIRE_APISIX_HOME as the tests do.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "gateway"), str(ROOT / "bench")]

import nginx_process  # noqa: E402
import plugin_overhead  # noqa: E402
import test_kong_adapter as kong_test  # noqa: E402

SITE = """
local runtime = require("kong_runtime")
local runloop = require("kong_runloop")
runtime.add_consumer({id = "6f0a3c1e-0000-4000-8000-000000000001", username = "alice"},
  {["key-auth"] = {key = %(key)s}})
if %(with_authwire)s then
  runloop.add_global("authwire", {sidecar = %(sink)s, node = "bench", packed_var = "authwire_vars",
    queue = {max_batch_size = 200, max_coalescing_delay = 0.05, max_entries = 20000}})
end
runloop.add_route({id = "route-key", prefix = "/key/", service = {id = "8c9d0e1f-0000-4000-8000-000000000001"},
                   plugins = {{"key-auth", {}}}})
return {}
"""


def start(tmp: Path, name: str, sink: str, with_authwire: bool) -> nginx_process.Nginx:
    # the Kong README's map: $kong_request_id in the request id's place
    body = nginx_process.PACKED_MAP.replace("$request_id", "$kong_request_id") + kong_test.http_body()
    site = SITE % {"key": json.dumps(plugin_overhead.API_KEY), "sink": json.dumps(sink),
                   "with_authwire": "true" if with_authwire else "false"}
    return nginx_process.start_nginx(tmp / name, body, lua_files={"kong_site.lua": site}, error_level="error")


def main() -> None:
    missing = nginx_process.missing() or (None if shutil.which("wrk") else "needs wrk")
    if not (kong_test.KONG_HOME / "kong" / "tools" / "queue.lua").is_file():
        missing = missing or f"needs Kong's Lua tree at {kong_test.KONG_HOME} (AUTHWIRE_KONG_HOME)"
    if missing:
        raise SystemExit(f"kong_plugin: {missing}")
    tmp = Path(tempfile.mkdtemp(prefix="aw-bench-kong-"))
    servers = []
    try:
        sink = nginx_process.start_nginx(tmp / "sink", plugin_overhead.NULL_SINK % {"sock": tmp / "sink.sock"},
                                         error_level="error")
        servers.append(sink)
        off = start(tmp, "off", f"unix:{tmp}/sink.sock", False)
        servers.append(off)
        on = start(tmp, "on", f"unix:{tmp}/sink.sock", True)
        servers.append(on)
        runs: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
        for _ in range(plugin_overhead.ROUNDS):
            for name, server in (("off", off), ("on", on)):
                runs[name].append(plugin_overhead.wrk(server.port, server.process.pid))
        time.sleep(1)  # the last batch ships
        stats = json.loads(nginx_process.http_request(on.port, "/test/stats")[1])
        (r_off, c_off), (r_on, c_on) = ((statistics.median(r for r, _ in v), statistics.median(c for _, c in v))
                                        for v in (runs["off"], runs["on"]))
        print(f"kong_plugin: Kong 3.9.3 Lua (PDK + key-auth) on Debian nginx, authwire on vs off: worker CPU/request "
              f"{c_off:.1f} -> {c_on:.1f} us (+{c_on - c_off:.1f} us), req/s {r_on:.0f}/{r_off:.0f} "
              f"(ratio {r_on / r_off:.3f}); queued {stats['queued']}, pending {stats['pending']}, "
              f"dropped {stats['dropped']}; "
              f"{plugin_overhead.ROUNDS}x{plugin_overhead.SECONDS}s per variant, {plugin_overhead.CONNECTIONS} conns, "
              f"1 worker, null sink; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

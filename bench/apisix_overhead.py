"""Real APISIX 3.18 (../shared/apisix, 1 worker): a key-auth route without a logger, with the authwire plugin
(shipping to a real `authwire serve` on the same 2 cores), with APISIX's own tcp-logger and with its
http-logger, all in the same run. Prints one line per figure: req/s and the APISIX worker's CPU per request
(utime + stime / requests), and the sidecar's CPU per request.

wrk alternates between the routes (none, authwire, tcp-logger, http-logger, ...) for a bounded time each;
figures are medians. The upstream and the http-logger sink are one separate nginx; the tcp-logger sink is a
Python asyncio reader that discards. Goal (issue 9): worker CPU added by authwire <= tcp-logger's, and the
req/s ratio (with / without) >= 0.9 x tcp-logger's.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "gateway"), str(ROOT / "tests" / "gateway" / "apisix")]

import apisix_runtime  # noqa: E402
import nginx_process  # noqa: E402
from discard_sink import DiscardSink  # noqa: E402
from plugin_overhead import run_wrk  # noqa: E402
from proc_stats import cpu_seconds  # noqa: E402

from support import start_sidecar  # noqa: E402

ROUNDS = int(os.environ.get("AUTHWIRE_BENCH_ROUNDS", "3"))
SECONDS = int(os.environ.get("AUTHWIRE_BENCH_SECONDS", "3"))
CONNECTIONS = 32
API_KEY = "bench-key-secret-0001"
BATCH = 200  # events per batch for every logger: the same batching for all

UPSTREAM_AND_HTTP_SINK = """
  server {
    listen 127.0.0.1:{port};
    location / { return 200 "ok"; }
    location = /http-sink { client_body_buffer_size 1m; client_max_body_size 64m;
                            content_by_lua_block { ngx.req.read_body() ngx.say("ok") } }
  }
"""


def worker_pid(prefix: Path) -> int:
    master = int((prefix / "logs" / "nginx.pid").read_text())
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                cmd = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat[1]) == master and b"worker process" in cmd:
                return int(proc.name)
    raise SystemExit("apisix_overhead: no APISIX worker process found")


def wrk(port: int, path: str, pids: dict[str, int]) -> tuple[float, dict[str, float]]:
    """(requests/s, {process: CPU µs per request}) for one bounded wrk run."""
    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
    rps, requests = run_wrk(f"http://127.0.0.1:{port}{path}", SECONDS, "apisix_overhead", CONNECTIONS,
                            (f"apikey: {API_KEY}",))
    return rps, {k: (cpu_seconds(p) - cpu0[k]) * 1e6 / requests for k, p in pids.items()}


def routes(upstream: str, sidecar: str, tcp_port: int) -> dict:
    up = apisix_runtime.upstream(upstream)
    common = {"batch_max_size": BATCH, "inactive_timeout": 1}
    plugins = {
        "none": {},
        "authwire": {"authwire": {"sidecar": sidecar, "packed_var": "authwire_vars", **common}},
        "tcp-logger": {"tcp-logger": {"host": "127.0.0.1", "port": tcp_port, **common}},
        "http-logger": {"http-logger": {"uri": f"http://{upstream}/http-sink", **common}},
    }
    return {
        "routes": [{"id": name, "uri": f"/{name}/*", "plugins": {"key-auth": {}, **p}, "upstream": up}
                   for name, p in plugins.items()],
        "consumers": [{"username": "alice", "plugins": {"key-auth": {"key": API_KEY}}}],
    }


def main() -> None:
    missing = apisix_runtime.missing() or nginx_process.missing() or (None if shutil.which("wrk") else "needs wrk")
    if missing:
        raise SystemExit(f"apisix_overhead: {missing}")
    tmp = Path(tempfile.mkdtemp(prefix="aw-bench-apx-"))
    sidecar = gw = backend = sink = None
    try:
        backend = nginx_process.start_nginx(tmp / "backend", UPSTREAM_AND_HTTP_SINK, error_level="error")
        sink = DiscardSink()
        sidecar = start_sidecar(tmp, "--grpc-web-listen", f"unix:{tmp}/gw.sock")
        gw = apisix_runtime.start_apisix(
            routes(f"127.0.0.1:{backend.port}", f"unix:{tmp}/gw.sock", sink.port),
            plugins=["key-auth", "tcp-logger", "http-logger", "authwire"], error_level="error",
            http_snippet=nginx_process.PACKED_MAP + "\n")
        pids = {"worker": worker_pid(gw.prefix), "sidecar": sidecar.process.pid}
        variants = ("none", "authwire", "tcp-logger", "http-logger")
        for name in variants:  # warm up: LuaJIT traces, keep-alive pools, batch processors
            run_wrk(f"http://127.0.0.1:{gw.port}/{name}/w", 1, "apisix_overhead", 8, (f"apikey: {API_KEY}",))
        runs: dict[str, list] = {k: [] for k in variants}
        for _ in range(ROUNDS):
            for name in variants:
                runs[name].append(wrk(gw.port, f"/{name}/bench", pids))
        time.sleep(1.5)
        med = {k: (statistics.median(r for r, _ in v), statistics.median(c["worker"] for _, c in v),
                   statistics.median(c["sidecar"] for _, c in v)) for k, v in runs.items()}
        rps0, cpu0, _ = med["none"]
        tail = (f"{ROUNDS}x{SECONDS}s per route, {CONNECTIONS} conns, 1 worker, key-auth, batch {BATCH}; "
                f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        for name in variants:
            rps, cpu, side = med[name]
            extra = f", sidecar {side:.1f} us/request" if name == "authwire" else ""
            print(f"apisix_overhead: {name}: {rps:.0f} req/s (ratio {rps / rps0:.3f}), worker CPU "
                  f"{cpu:.1f} us/request (+{cpu - cpu0:.1f}){extra}; {tail}")
        aw_add, tcp_add = med["authwire"][1] - cpu0, med["tcp-logger"][1] - cpu0
        ratio_aw, ratio_tcp = med["authwire"][0] / rps0, med["tcp-logger"][0] / rps0
        print(f"apisix_overhead: goal: worker CPU added by authwire {aw_add:.1f} us <= tcp-logger's {tcp_add:.1f} us: "
              f"{'met' if aw_add <= tcp_add else 'MISSED'}; req/s ratio {ratio_aw:.3f} >= 0.9 x tcp-logger's "
              f"{ratio_tcp:.3f} = {0.9 * ratio_tcp:.3f}: {'met' if ratio_aw >= 0.9 * ratio_tcp else 'MISSED'}")
    finally:
        for thing in (gw, backend, sidecar):
            if thing is not None:
                (thing.stop if thing is not sidecar else thing.kill)()
        if sink is not None:
            sink.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

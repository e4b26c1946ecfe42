"""p95 latency of the HTTP/JSON API (GET /v1/records, /v1/inspect) on bench/query.py's 10M-record store.
Goal: <= 100 ms.

The store is bench/query.py's (its open_store(): the same file, built by its builder or reused when it already
holds --records rows). The server
is the real `authwire web --db` (read-only store, aiohttp, token), a child process; requests are sent one at a
time over keep-alive from this process, --runs per query with varying parameters, on a warm page cache. The
server's CPU time per request comes from /proc/<pid>/stat around each query's runs. Prints one line per query
and one result line.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sidecar"))

import query as store_bench  # noqa: E402  (bench/query.py: the store builder)
from proc_stats import cpu_seconds  # noqa: E402  (bench/proc_stats.py)

GOAL_MS = 100.0


def start_web(db: Path) -> tuple[subprocess.Popen, str, str, Path]:
    exe = Path(sys.executable).with_name("authwire")
    work = Path(tempfile.mkdtemp(prefix="authwire-bench-http-"))  # the token and the log: not beside the store
    log, token_file = work / "web.log", work / "token"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(exe), "web", "--db", str(db), "--token-file", str(token_file)], stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        m = re.search(r"(http://127\.0\.0\.1:\d+)/\?login=", log.read_text())
        if m:
            token = token_file.read_text().strip()
            return proc, m.group(1), token, work
        if proc.poll() is not None:
            raise SystemExit(f"authwire web exited: {log.read_text()}")
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("authwire web did not start in 120 s")


def queries(rng: random.Random, n: int) -> dict[str, callable]:
    def ip() -> str:
        k = rng.randrange(store_bench.IPS)
        return f"10.{k >> 8}.{k & 255}.{1 + k % 250}"

    return {
        "/v1/records?client_ip=IP": lambda: ("/v1/records", {"client_ip": ip()}),
        "/v1/records?client_ip=/16": lambda: ("/v1/records", {"client_ip": f"10.{rng.randrange(256)}.0.0/16"}),
        "/v1/records?consumer=C": lambda: ("/v1/records", {"consumer": f"consumer-{rng.randrange(500)}"}),
        "/v1/records?outcome=failure&since=1h": lambda: ("/v1/records", {"outcome": "failure", "since": "1h"}),
        "/v1/records?group_by=syn.signature,auth.outcome&since=15m": lambda: (
            "/v1/records", {"group_by": "syn.signature,auth.outcome", "since": "15m"}),
        "/v1/records?group_by=client_ip&outcome=failure&since=15m": lambda: (
            "/v1/records", {"group_by": "client_ip", "outcome": "failure", "since": "15m"}),
        "/v1/records/{request_id}": lambda: (f"/v1/records/r{rng.randrange(n)}", {}),
        "/v1/inspect?ip=IP": lambda: ("/v1/inspect", {"ip": ip()}),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=10_000_000)
    p.add_argument("--db", type=Path, default=Path("/var/tmp/authwire-bench-query.db"))
    p.add_argument("--runs", type=int, default=40)
    args = p.parse_args()
    store_bench.open_store(args.db, args.records)  # built (or reused) by bench/query.py's builder
    proc, base, token, work = start_web(args.db)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    rng = random.Random(7)
    worst, failed, cpu_per_request = 0.0, [], []
    try:
        session.get(f"{base}/v1/records", params={"since": "1h"}, timeout=120)  # warm the page cache
        for name, make in queries(rng, args.records).items():
            times = []
            cpu0 = cpu_seconds(proc.pid)
            for _ in range(args.runs):
                path, params = make()
                t = time.perf_counter()
                r = session.get(base + path, params=params, timeout=120)
                times.append((time.perf_counter() - t) * 1000)
                if r.status_code not in (200, 404):
                    raise SystemExit(f"{name}: HTTP {r.status_code}: {r.text[:300]}")
            cpu_ms = (cpu_seconds(proc.pid) - cpu0) * 1000 / args.runs
            cpu_per_request.append(cpu_ms)
            p95 = statistics.quantiles(times, n=20)[-1]
            if name.startswith(("/v1/records", "/v1/inspect")):
                worst = max(worst, p95)
                if p95 > GOAL_MS:
                    failed.append(name)
            print(f"  {name:<58} p50 {statistics.median(times):7.2f} ms  p95 {p95:7.2f} ms  "
                  f"server CPU {cpu_ms:6.2f} ms/request", file=sys.stderr)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    verdict = "ok" if not failed else "over goal: " + "; ".join(failed)
    print(f"bench/query_http.py: {args.records:,} records, {len(cpu_per_request)} API queries x {args.runs} runs "
          f"over HTTP, worst p95 {worst:.1f} ms (goal <= {GOAL_MS:.0f} ms), server CPU "
          f"{min(cpu_per_request):.1f}-{max(cpu_per_request):.1f} ms/request: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

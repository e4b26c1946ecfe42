"""Envoy throughput with authwire (kernel inspector + ALS) vs without, in one run; ALS ingest rate and drops.

Lab (network namespaces, authwire.demo.lab): one gateway namespace running two identical Envoys (1 worker
each; jwt_authn verifying a valid token on every request):
  - "without": port 8090, no access log, reached through client A's link, which the inspector does not watch;
  - "with":    port 8080, gRPC access log to authwire, reached through client B's link, where `authwire serve`
               (in the gateway namespace) has its tc programs attached.
Both clients have the same stack. wrk runs from the client namespaces, alternating phases (ROUNDS x
PHASE_S each: without, inspector only = ALS-less Envoy through the watched link, with), so drift on the
machine hits all alike. Prints:

  envoy_overhead: without=<req/s> with=<req/s> ratio=<with/without> (goal >= 0.90)
  envoy_overhead_inspector_only: ... (the tc programs' share of the cost)
  envoy_als_ingest: <entries/s> stored while Envoy served <req/s>; logs_dropped=<n> (goal 0)
  envoy_cpu: Envoy's own CPU per request without and with the access log (the gateway side of the cost), and the
             ratio that alone allows when Envoy's one worker is saturated
  envoy_als_sidecar_threads: the sidecar's CPU per entry by thread (where the sidecar's share goes)

--als-buffer-bytes / --als-flush-interval try other access-log batching (Envoy's buffer_size_bytes and
buffer_flush_interval); the defaults are what gateway-plugins/envoy/envoy.yaml ships.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from proc_stats import cpu_seconds, thread_cpu_seconds  # noqa: E402  (bench/proc_stats.py)

from authwire.demo.credentials import DemoCredentials  # noqa: E402
from authwire.demo.envoy_runner import EnvoyProcess, GatewaySpec  # noqa: E402
from authwire.demo.lab import ClientStack, Lab  # noqa: E402
from authwire.v1 import query_pb2  # noqa: E402
from support import start_sidecar  # noqa: E402

ROUNDS = 5
PHASE_S = 4
CONNECTIONS = 32


def wrk(lab: Lab, host_index: int, url: str, token: str) -> tuple[float, int]:
    """(requests/s, requests) of one phase."""
    host = lab.clients[host_index]
    result = subprocess.run(
        lab.argv(host.netns, ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{PHASE_S}s", "--timeout", "2s",
                              "-H", f"Authorization: Bearer {token}", url]),
        capture_output=True, text=True, timeout=PHASE_S + 30)
    match = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    if result.returncode != 0 or not match:
        raise RuntimeError(f"wrk failed: {result.stdout}{result.stderr}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", result.stdout)
    if non2xx:
        raise RuntimeError(f"wrk saw {non2xx.group(1)} error responses: the token was refused?")
    total = re.search(r"(\d+) requests in", result.stdout)
    return float(match.group(1)), int(total.group(1)) if total else 0


def stored(sidecar) -> int:
    return sidecar.query().Stats(query_pb2.StatsRequest(), timeout=10).store_records


def main() -> int:
    spec_defaults = GatewaySpec(listen="", als_target=None, admin_socket="")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--als-buffer-bytes", type=int, default=spec_defaults.als_buffer_bytes)
    parser.add_argument("--als-flush-interval", default=spec_defaults.als_flush_interval)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    creds = DemoCredentials()
    token = creds.token("bench")
    with tempfile.TemporaryDirectory() as tmp_name, Lab(net=79) as lab:
        tmp = Path(tmp_name)
        lab.create_gateway()
        plain_client = lab.add_client(ClientStack("a"))
        watched_client = lab.add_client(ClientStack("b"))
        sidecar = start_sidecar(tmp, "--iface", watched_client.gateway_iface, "--retention-age", "0",
                                netns=lab.gateway_ns, inspector=True)
        envoys: list[EnvoyProcess] = []
        try:
            stats = sidecar.query().Stats(query_pb2.StatsRequest(), timeout=5)
            if not stats.inspector_running:
                raise RuntimeError(f"kernel inspector not running: {stats.inspector_status}")
            plain = EnvoyProcess(GatewaySpec(listen="0.0.0.0:8090", als_target=None,
                                             admin_socket=str(tmp / "plain.sock")), creds, tmp / "plain",
                                 netns=lab.gateway_ns)
            envoys.append(plain)
            observed = EnvoyProcess(GatewaySpec(listen="0.0.0.0:8080", als_target=sidecar.address,
                                                admin_socket=str(tmp / "als.sock"),
                                                als_buffer_bytes=args.als_buffer_bytes,
                                                als_flush_interval=args.als_flush_interval),
                                    creds, tmp / "als", netns=lab.gateway_ns)
            envoys.append(observed)
            plain.wait_ready()
            observed.wait_ready()
            without: list[float] = []
            with_: list[float] = []
            inspector_only: list[float] = []
            ingest_rates: list[float] = []
            cpu_per_entry: list[float] = []
            envoy_plain_us: list[float] = []
            envoy_als_us: list[float] = []
            threads: dict[str, float] = {}
            entries = 0
            for _ in range(args.rounds):
                cpu0 = cpu_seconds(plain.proc.pid)
                rate, n = wrk(lab, 0, f"http://{plain_client.gateway_ip}:8090/jwt/bench", token)
                without.append(rate)
                envoy_plain_us.append(1e6 * (cpu_seconds(plain.proc.pid) - cpu0) / max(n, 1))
                # The ALS-less Envoy through the watched link: the tc programs' cost alone.
                inspector_only.append(wrk(lab, 1, f"http://{watched_client.gateway_ip}:8090/jwt/bench", token)[0])
                before, t0, cpu0 = stored(sidecar), time.monotonic(), cpu_seconds(sidecar.process.pid)
                threads0, envoy0 = thread_cpu_seconds(sidecar.process.pid), cpu_seconds(observed.proc.pid)
                rate, n = wrk(lab, 1, f"http://{watched_client.gateway_ip}:8080/jwt/bench", token)
                with_.append(rate)
                envoy_als_us.append(1e6 * (cpu_seconds(observed.proc.pid) - envoy0) / max(n, 1))
                # Entries still in flight land within a flush interval or two; count them to this phase.
                deadline = time.monotonic() + 10
                written = observed.stats("access_logs").get("access_logs.grpc_access_log.logs_written", 0)
                while stored(sidecar) < written and time.monotonic() < deadline:
                    time.sleep(0.2)
                now_stored = stored(sidecar)
                ingest_rates.append((now_stored - before) / (time.monotonic() - t0))
                cpu_per_entry.append(1e6 * (cpu_seconds(sidecar.process.pid) - cpu0) / max(now_stored - before, 1))
                for name, seconds in thread_cpu_seconds(sidecar.process.pid).items():
                    threads[name] = threads.get(name, 0.0) + seconds - threads0.get(name, 0.0)
                entries += now_stored - before
            als = observed.stats("access_logs")
            dropped = als.get("access_logs.grpc_access_log.logs_dropped", 0)
            written = als.get("access_logs.grpc_access_log.logs_written", 0)
            total = stored(sidecar)
        finally:
            for envoy in envoys:
                envoy.stop()
            sidecar.stop()
    # Per-round ratios (phases run back to back), median over rounds: robust to load from elsewhere.
    ratio = statistics.median(w / b for w, b in zip(with_, without, strict=True))
    ratio_inspector = statistics.median(i / b for i, b in zip(inspector_only, without, strict=True))
    batching = f"ALS buffer_size_bytes={args.als_buffer_bytes} buffer_flush_interval={args.als_flush_interval}"
    print(f"envoy_overhead: without={statistics.median(without):.0f} req/s with={statistics.median(with_):.0f} "
          f"req/s ratio={ratio:.3f} (goal >= 0.90; medians of {args.rounds} rounds of {PHASE_S}s phases, "
          f"wrk -c{CONNECTIONS}, Envoy 1 worker, jwt_authn on every request; {batching})")
    print(f"envoy_overhead_inspector_only: without={statistics.median(without):.0f} req/s "
          f"with={statistics.median(inspector_only):.0f} req/s ratio={ratio_inspector:.3f} "
          "(tc programs on the gateway's link, no access log)")
    print(f"envoy_als_ingest: {statistics.median(ingest_rates):.0f} entries/s stored (with the inspector joining "
          f"each); sidecar CPU {statistics.median(cpu_per_entry):.0f} us/entry (ALS decode + mapping + validate + "
          f"join + store + detections); logs_written={written} stored={total} logs_dropped={dropped} (goal 0)")
    plain_us, als_us = statistics.median(envoy_plain_us), statistics.median(envoy_als_us)
    # With its one worker saturated, Envoy's own access-log work alone bounds the ratio, whatever the sidecar costs.
    print(f"envoy_cpu: Envoy's own CPU {plain_us:.1f} us/request without the access log, {als_us:.1f} with it "
          f"(building, batching and sending the ALS entries); ratio bound by Envoy alone {plain_us / als_us:.2f}")
    labels = {"main": "event loop (gRPC handling, ALS mapping, validate, join, rows, detections)",
              "authwire": "other Python threads (store writer, kernel poller)", "event_engine": "gRPC core"}
    per_thread = sorted(((1e6 * s / max(entries, 1), labels.get(name, name)) for name, s in threads.items() if s > 0),
                        reverse=True)
    print("envoy_als_sidecar_threads: sidecar CPU us/entry by thread: "
          + ", ".join(f"{name} {us:.1f}" for us, name in per_thread[:6]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

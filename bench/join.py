"""Join under load: >= 1,000 concurrent keep-alive connections, every request reported and joined.

Topology (tests/netns.py): a server namespace with `authwire serve` (kernel inspector on the server
veths) and the test gateway (tests/join/gateway.py: Basic / HMAC auth, reports every request over gRPC,
--workers processes on one SO_REUSEPORT port); two client namespaces with different stacks, each running
wrk with half of the connections, good and bad credentials mixed, for a bounded time.

Correctness is judged from the stored records alone, against what the gateway itself saw: each gateway
connection (gateway_connection_id, per gateway node) must be joined to one kernel connection, no kernel
connection to two gateway connections, the joined connection's client port must be the request's, its SYN
at or before the request start and its TTL the stack of the namespace the request came from. Anything
else is a WRONG join. Prints one result line:

  join: <n> requests over <c> keep-alive connections in <s> s = <r> req/s served, <j> records/s
        joined+stored (...); exact <e> (<p>%), no_connection <n>, wrong <w> (goal: ...)

Phase 2 (unless --no-replay) sends every stored report again, with new request ids, straight to the
sidecar while the connections sit closed in the grace period: join + store throughput when the sidecar
has the CPU to itself, and every replayed record must join the same connection as the live one:

  join_replay: <n> reports ...: <j> records/s joined+stored, sidecar CPU <us> us/record; exact <e>,
               same connection as the live join <s>, wrong <w>
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "join")]

import grpc  # noqa: E402
from gateway import basic_authorization  # noqa: E402
from proc_stats import cpu_seconds  # noqa: E402  (bench/proc_stats.py)

from authwire.demo.lab import Topology  # noqa: E402
from authwire.store.record_store import Store  # noqa: E402
from authwire.v1 import ingest_pb2, ingest_pb2_grpc, query_pb2, record_pb2  # noqa: E402
from support import start_sidecar  # noqa: E402

PORT = 8080
STACK_TTLS = (64, 57)  # client 0 default, client 1 ip_default_ttl=57

WRK_SCRIPT = """
local good = "%s"
local bad = "%s"
local n = 0
request = function()
  n = n + 1
  local auth = (n %% 5 == 0) and bad or good
  return wrk.format("GET", "/basic/items/" .. (n %% 100), {["Authorization"] = auth})
end
"""


def read_ready(process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("READY"):
            return
        if process.poll() is not None:
            break
    raise RuntimeError("gateway did not start")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--duration", type=int, default=10, help="seconds of load (bounded)")
    p.add_argument("--workers", type=int, default=2, help="gateway worker processes")
    p.add_argument("--no-replay", dest="replay", action="store_false",
                   help="skip phase 2 (the same reports again, straight to the sidecar)")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="authwire-bench-join-"))
    creds = tmp / "creds.json"
    creds.write_text(json.dumps({"basic": {"bench": {"password": "bench-pw", "consumer": "bench"}}}))
    script = tmp / "mix.lua"
    script.write_text(WRK_SCRIPT % (basic_authorization("bench", "bench-pw"), basic_authorization("bench", "no")))
    sysctls = [{}, {"net.ipv4.ip_default_ttl": str(STACK_TTLS[1])}]
    with Topology(clients=2, client_sysctls=sysctls) as topo:
        ifaces = [a for i in topo.server_ifaces for a in ("--iface", i)]
        sidecar = start_sidecar(tmp, *ifaces, "--max-flows", "65536", "--grace-period", "300",
                                netns=topo.server_ns, inspector=True)
        gateways: list[subprocess.Popen] = []
        wrks: list[subprocess.Popen] = []
        try:
            stats = sidecar.query().Stats(query_pb2.StatsRequest(), timeout=5)
            if not stats.inspector_running:
                raise RuntimeError(f"inspector off: {stats.inspector_status}")
            for w in range(args.workers):
                g = subprocess.Popen(
                    ["nsenter", f"--net=/run/netns/{topo.server_ns}", "--", sys.executable,
                     str(ROOT / "tests" / "join" / "gateway.py"), "--listen", f"0.0.0.0:{PORT}", "--reuse-port",
                     "--worker", str(w), "--node", "bench-gw", "--sidecar", sidecar.address, "--creds", str(creds)],
                    stdout=subprocess.PIPE, stderr=open(tmp / f"gateway{w}.log", "w"), text=True)  # noqa: SIM115
                gateways.append(g)
                read_ready(g, 20)
            per = args.connections // 2
            cpu0 = cpu_seconds(sidecar.process.pid)
            t0 = time.monotonic()
            for c in topo.client_list:
                wrks.append(subprocess.Popen(
                    ["nsenter", f"--net=/run/netns/{c.ns}", "--", "wrk", "-t1", f"-c{per}", f"-d{args.duration}s",
                     "--timeout", "10s", "-s", str(script), f"http://{c.server_ip4}:{PORT}/"],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
            outputs = [w.communicate(timeout=args.duration + 60)[0] for w in wrks]
            load_s = time.monotonic() - t0
            # A gateway flushes its batches before it exits (as plugins do on worker exit): once every
            # worker has exited, every report has been acknowledged, i.e. joined and committed.
            for g in gateways:
                g.terminate()
            for g in gateways:
                g.wait(120)
            all_s = time.monotonic() - t0
            sidecar_cpu = cpu_seconds(sidecar.process.pid) - cpu0
            replay = replay_phase(sidecar) if args.replay else None
        finally:
            for w in wrks:
                if w.poll() is None:
                    w.kill()
            for g in gateways:
                g.terminate()
                try:
                    g.wait(15)
                except subprocess.TimeoutExpired:
                    g.kill()
            sidecar.stop()
        for out in outputs:
            if "Requests/sec" not in out:
                print(out, file=sys.stderr)
        queued = dropped = 0
        for w in range(args.workers):
            for line in (tmp / f"gateway{w}.log").read_text().splitlines():
                if line.startswith("gateway exiting: "):
                    gw_stats = json.loads(line.split(": ", 1)[1])
                    queued += gw_stats["queued"]
                    dropped += gw_stats["dropped"] + gw_stats["rejected"]
        print(f"  gateways reported {queued} requests ({dropped} dropped or rejected)", file=sys.stderr)
        judge(sidecar.db, topo, args.connections, load_s, all_s, sidecar_cpu)
        if replay is not None:
            judge_replay(sidecar.db, *replay)
    return 0


def replay_phase(sidecar) -> tuple[int, float, float]:
    """Phase 2: every stored report again (new request ids), sent straight to the sidecar with a few
    batches in flight, while its connections are closed but inside the grace period: what the join +
    store path sustains when it has the CPU to itself. Returns (events, seconds, sidecar CPU seconds)."""
    events = []
    for record in Store(sidecar.db, read_only=True).scan():
        event = record.event
        event.request_id = "replay-" + event.request_id
        events.append(event)
    batches = [events[i:i + 500] for i in range(0, len(events), 500)]

    async def send() -> None:
        async with grpc.aio.insecure_channel(sidecar.address) as channel:
            stub = ingest_pb2_grpc.IngestStub(channel)
            queue = list(reversed(batches))

            async def worker() -> None:
                while queue:
                    response = await stub.Report(ingest_pb2.ReportRequest(events=queue.pop()), timeout=120)
                    if response.rejections:
                        raise RuntimeError(f"replay rejected: {response.rejections[0]}")

            await asyncio.gather(*(worker() for _ in range(4)))

    cpu0 = cpu_seconds(sidecar.process.pid)
    t0 = time.monotonic()
    asyncio.run(send())
    return len(events), time.monotonic() - t0, cpu_seconds(sidecar.process.pid) - cpu0


def judge_replay(db_path: Path, n: int, seconds: float, cpu: float) -> None:
    records = list(Store(db_path, read_only=True).scan())
    uid_of = {r.event.request_id: r.connection.uid or None for r in records
              if not r.event.request_id.startswith("replay-")}
    exact = same = 0
    for rid, uid, status in ((r.event.request_id, r.connection.uid or None, r.join.status) for r in records
                             if r.event.request_id.startswith("replay-")):
        exact += status == record_pb2.JOIN_STATUS_EXACT
        same += uid is not None and uid == uid_of.get(rid.removeprefix("replay-"))
    print(f"join_replay: {n} reports straight to the sidecar (4 x 500-event batches in flight, connections "
          f"closed, in grace period): {n / seconds:.0f} records/s joined+stored, sidecar CPU "
          f"{1e6 * cpu / max(n, 1):.0f} us/record; exact {exact}, same connection as the live join {same}, "
          f"wrong {n - same}")


def judge(db_path: Path, topo: Topology, connections: int, load_s: float, all_s: float,
          sidecar_cpu: float) -> None:
    ttl_of_ip = {c.ip4: ttl for c, ttl in zip(topo.client_list, STACK_TTLS, strict=True)}
    status_counts: dict[int, int] = defaultdict(int)
    uid_of_gw: dict[tuple[str, int], str] = {}
    gw_of_uid: dict[str, tuple[str, int]] = {}
    wrong = 0
    total = 0
    first_ns = last_ns = None
    for rec in Store(db_path, read_only=True).scan():
        if rec.event.request_id.startswith("replay-"):
            continue
        total += 1
        status_counts[rec.join.status] += 1
        start = rec.event.start_time.ToNanoseconds()
        first_ns = start if first_ns is None else min(first_ns, start)
        last_ns = start if last_ns is None else max(last_ns, start)
        if rec.join.status != record_pb2.JOIN_STATUS_EXACT:
            continue
        c, e = rec.connection, rec.event
        gw = (e.gateway.node, e.gateway_connection_id)
        bad = (c.client.port != e.client.port or c.client.ip != e.client.ip
               or c.syn_time.ToNanoseconds() > start or c.syn.ttl != ttl_of_ip.get(e.client.ip)
               or uid_of_gw.setdefault(gw, c.uid) != c.uid or gw_of_uid.setdefault(c.uid, gw) != gw)
        wrong += bad
    exact = status_counts[record_pb2.JOIN_STATUS_EXACT]
    span = max((last_ns - first_ns) / 1e9, 1e-9) if total else 1
    print(f"  {total} records, {len(uid_of_gw)} gateway connections -> {len(gw_of_uid)} kernel connections; "
          f"load {load_s:.1f} s, drained after {all_s:.1f} s; sidecar CPU {sidecar_cpu:.1f} s = "
          f"{1e6 * sidecar_cpu / max(total, 1):.0f} us/record (~{total / max(sidecar_cpu, 1e-9):.0f} records/s "
          f"per core: ingest + validate + join + store + kernel poller)", file=sys.stderr)
    print(f"join: {total} requests over {connections} keep-alive connections in {span:.1f} s = "
          f"{total / span:.0f} req/s served, {total / all_s:.0f} records/s joined+stored (all acknowledged "
          f"{all_s:.1f} s after load start); exact {exact} ({100.0 * exact / max(total, 1):.2f}%), "
          f"no_connection {status_counts[record_pb2.JOIN_STATUS_NO_CONNECTION]}, wrong {wrong} "
          f"(goal: >= 5000 req/s, 100% exact, 0 wrong)")


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench/join.py needs root (network namespaces, kernel inspector)")
    sys.exit(main())

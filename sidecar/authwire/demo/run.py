"""`authwire demo` (= `make run`): the whole product, end to end, in network namespaces, in seconds.

Builds a lab (authwire.demo.lab): a gateway namespace running a real Envoy (jwt_authn + basic_auth, ALS to
authwire) and `authwire serve` with the kernel inspector on the gateway's client-facing veths; an upstream
API; and client hosts whose TCP stacks differ (initial TTL, MSS, window scaling, SACK, timestamps). Each
client sends a bounded mix of good and bad JWT and Basic requests. The demo then prints the enriched
records (auth outcome + the kernel's facts about each request's connection) and the `authwire query`
commands to explore them in the store it leaves behind, and removes everything else: namespaces (with
their veths and tc filters) and processes, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authwire.demo import lab
from authwire.demo.credentials import DemoCredentials, basic_header
from authwire.demo.envoy_runner import EnvoyProcess, EnvoyUnavailable, GatewaySpec, envoy_binary
from authwire.demo.lab import ClientStack, Host, Lab
from authwire.kernel import capabilities
from authwire.records import short_enum
from authwire.store.record_store import remove_files
from authwire.v1 import auth_event_pb2, query_pb2, query_pb2_grpc, record_pb2

GATEWAY_PORT = 8080
UPSTREAM_PORT = 8081

# Four client hosts whose SYNs differ the way real populations do.
STACKS = [
    ClientStack("laptop", ttl=64, mtu=1500, description="Linux defaults"),
    ClientStack("desktop", ttl=128, mtu=1480, timestamps=False, hops=2,
                description="Windows-like: TTL 128, no TS; 2 routers away"),
    ClientStack("scanner", ttl=255, mtu=1280, window_scaling=False, sack=False, timestamps=False,
                description="bare stack: TTL 255, no WS/SACK/TS"),
    ClientStack("sensor", ttl=64, mtu=576, window_scaling=False, hops=1,
                description="tiny MSS, no window scaling; 1 router away"),
]


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived: stop, clean up, exit 130."""


_MAIN_PID = os.getpid()


def _interrupt(signum: int, frame: Any) -> None:
    if os.getpid() != _MAIN_PID:
        # A forked helper (pyroute2's NetNS runs one per namespace) inherited this handler: die normally.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise Interrupted(signal.Signals(signum).name)


def traffic_plan(creds: DemoCredentials, rounds: int) -> dict[str, list[list[dict[str, str]]]]:
    """Per host: sessions (one TCP connection each) of requests. Bounded: ~10 requests per host per round."""
    def jwt(sub: str, **kw: bool) -> str:
        return "Bearer " + creds.token(sub, **kw)

    def req(case: str, path: str, authorization: str = "") -> dict[str, str]:
        return {"case": case, "path": path, "authorization": authorization}

    alice, bob = basic_header("alice", creds.users["alice"]), basic_header("bob", creds.users["bob"])
    plan = {
        "laptop": [
            [req("jwt valid", "/jwt/orders", jwt("alice")), req("jwt valid", "/jwt/orders/7", jwt("alice")),
             req("jwt valid", "/jwt/profile", jwt("alice"))],
            [req("basic valid", "/basic/reports", alice)],
            [req("jwt expired", "/jwt/orders", jwt("alice", expired=True))],
        ],
        "desktop": [
            [req("jwt valid", "/jwt/orders", jwt("carol")), req("jwt valid", "/jwt/invoices", jwt("carol"))],
            [req("basic valid", "/basic/reports", bob)],
            [req("basic wrong password", "/basic/reports", basic_header("bob", "bilder"))],
            [req("public", "/status")],
        ],
        "scanner": [
            *([req("jwt bad signature", "/jwt/admin", jwt("admin", bad_signature=True))] for _ in range(3)),
            [req("jwt missing", "/jwt/admin")],
            *([req("basic wrong password", "/basic/admin", basic_header("admin", pw))]
              for pw in ("admin", "123456", "password")),
            [req("basic missing", "/basic/admin")],
        ],
        "sensor": [
            [req("basic valid", "/basic/telemetry", bob), req("basic valid", "/basic/telemetry", bob)],
            [req("jwt expired", "/jwt/telemetry", jwt("sensor-7", expired=True))],
            [req("jwt valid", "/jwt/telemetry", jwt("sensor-7"))],
        ],
    }
    return {host: sessions * rounds for host, sessions in plan.items()}


# --- detections (issue 12): the scanner attacks, the detections raise alerts --------------------------------
SPOOFED_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/124.0.0.0 Safari/537.36")
SCANNER_EXTRA_IPS = 12
STUFFING_USERS = ["admin", "root", "test", "guest", "info", "support", "oracle", "postgres", "ubuntu", "user",
                  "ftp", "backup", "deploy", "jenkins", "git", "demo", "web", "mysql", "pi", "sales", "dev", "ops",
                  "mail", "api"]
EXPECTED_DETECTIONS = ("stack_stuffing", "keepalive_stuffing", "ua_stack_mismatch", "credential_replay")


def attack_plan(creds: DemoCredentials, stolen: str, scanner_ips: list[str]) -> dict[str, list[list[dict]]]:
    """The scanner's attacks, each aimed at one detection; the laptop keeps using alice's token meanwhile."""
    def req(case: str, path: str, authorization: str = "", **extra: str) -> dict[str, str]:
        return {"case": case, "path": path, "authorization": authorization, **extra}

    stuffing = [[req("stuffing (rotating IPs)", "/basic/login", basic_header(user, "Winter2024!"),
                     source_ip=scanner_ips[i % len(scanner_ips)])] for i, user in enumerate(STUFFING_USERS)]
    keepalive = [[req("keep-alive stuffing", "/basic/admin", basic_header(user, "123456"))
                  for user in STUFFING_USERS + ["admin1"]]]
    spoof = [[req("UA spoof", "/jwt/orders", "Bearer " + creds.token("mallory"), user_agent=SPOOFED_UA)]]
    replay = [[req("replayed token", "/jwt/orders", stolen)]]
    owner = [[req("jwt valid (alice's session)", "/jwt/orders", stolen)] for _ in range(3)]
    return {"scanner": stuffing + keepalive + spoof + replay, "laptop": owner}


@dataclass
class Sent:
    host: str
    case: str
    path: str
    status: int
    local_port: int
    ip: str = ""
    time: float = 0.0


class Demo:
    def __init__(self, output: Path, rounds: int, out=sys.stdout, stacks: list[ClientStack] | None = None,
                 serve_args: list[str] | None = None) -> None:
        self.output = output
        self.rounds = rounds
        self.out = out
        self.stacks = STACKS if stacks is None else stacks
        self.serve_args = serve_args or []
        self.work = Path(tempfile.mkdtemp(prefix="authwire-demo-"))  # sockets + configs, removed at the end
        self.lab = Lab()
        self.children: list[subprocess.Popen] = []
        self.envoy: EnvoyProcess | None = None
        self.sidecar: subprocess.Popen | None = None
        self.socket = self.work / "authwire.sock"
        self.db = output / "authwire.db"

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # --- setup ------------------------------------------------------------------------------------------
    def build_lab(self) -> None:
        self.lab.create_gateway()
        for stack in self.stacks:
            self.lab.add_client(stack)
        upstream = self.lab.add_upstream()
        self.say(f"[1/7] network namespaces: gateway {self.lab.gateway_ns}, upstream {upstream.ip}, clients:")
        for host in self.lab.clients:
            s = host.stack
            assert s is not None
            self.say(f"        {host.name:8} {host.ip:13} TTL {s.ttl:3}  MSS {s.mss:4}  "
                     f"WS {'on ' if s.window_scaling else 'off'} SACK {'on ' if s.sack else 'off'} "
                     f"TS {'on ' if s.timestamps else 'off'}  ({s.description})")

    def _spawn(self, argv: list[str], log: Path, **kw: Any) -> subprocess.Popen:
        with log.open("wb") as f:
            proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, start_new_session=True, **kw)
        self.children.append(proc)
        return proc

    def start_upstream(self) -> None:
        up = self.lab.upstream
        assert up is not None
        self._spawn(self.lab.argv(up.netns, [sys.executable, "-m", "authwire.demo.traffic", "--upstream",
                                             f"{up.ip}:{UPSTREAM_PORT}"]), self.work / "upstream.log")

    def start_sidecar(self) -> query_pb2.StatsResponse:
        from authwire.store.alerts import alerts_path

        for store in (self.db, alerts_path(self.db)):  # catalog, segments, alerts, WAL files: a fresh start
            remove_files(store)
        jsonl = self.output / "records.jsonl"
        jsonl.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "authwire", "serve", "--listen", f"unix:{self.socket}",
                "--grpc-web-listen", "off", "--db", str(self.db), "--jsonl", str(jsonl),
                "--join-wait", "1.0", *self.serve_args]
        for iface in self.lab.gateway_ifaces:
            argv += ["--iface", iface]
        self.sidecar = self._spawn(self.lab.argv(self.lab.gateway_ns, argv), self.output / "authwire-serve.log",
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.channel = grpc.insecure_channel(f"unix:{self.socket}")
        deadline = time.monotonic() + 60  # first BPF compile can take a few seconds
        while True:
            if self.sidecar.poll() is not None:
                raise RuntimeError(f"authwire serve exited ({self.sidecar.returncode}); see "
                                   f"{self.output / 'authwire-serve.log'}:\n{self._tail('authwire-serve.log')}")
            try:
                status = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if status.status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("authwire serve did not become ready in 60 s; see "
                                   f"{self.output / 'authwire-serve.log'}")
            time.sleep(0.1)
        stats = query_pb2_grpc.QueryStub(self.channel).Stats(query_pb2.StatsRequest(), timeout=5)
        if stats.inspector_running:
            self.say(f"[2/7] authwire serve: kernel inspector on {', '.join(self.lab.gateway_ifaces)}; "
                     f"store {self.db}")
        else:
            self.say(f"[2/7] authwire serve: WARNING kernel inspector off ({stats.inspector_status}); "
                     "records will join as INSPECTOR_OFF. `authwire doctor` says what to fix.")
        return stats

    def _tail(self, name: str, n: int = 1500) -> str:
        try:
            return (self.output / name).read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def start_envoy(self, creds: DemoCredentials) -> None:
        assert self.lab.upstream is not None
        spec = GatewaySpec(listen=f"0.0.0.0:{GATEWAY_PORT}", als_target=f"unix:{self.socket}",
                           admin_socket=str(self.work / "envoy-admin.sock"),
                           upstream=f"{self.lab.upstream.ip}:{UPSTREAM_PORT}", node_id="demo-gateway")
        self.envoy = EnvoyProcess(spec, creds, self.work / "envoy", netns=self.lab.gateway_ns)
        self.envoy.wait_ready()
        self.say(f"[3/7] Envoy {envoy_version()} on :{GATEWAY_PORT} in {self.lab.gateway_ns}: "
                 "/jwt/* jwt_authn, /basic/* basic_auth, access log -> authwire (gRPC ALS)")

    # --- traffic ----------------------------------------------------------------------------------------
    def send_traffic(self, creds: DemoCredentials) -> list[Sent]:
        sent, errors = self.run_plan(traffic_plan(creds, self.rounds))
        counts = Counter(s.status for s in sent)
        self.say(f"[4/7] traffic: {len(sent)} requests from {len(self.lab.clients)} hosts "
                 f"({', '.join(f'{n}x {code}' for code, n in sorted(counts.items()))})")
        for error in errors[:5]:
            self.say(f"        request failed: {error}")
        return sent

    def run_plan(self, plan: dict[str, list[list[dict[str, str]]]], deadline_s: float = 30
                 ) -> tuple[list[Sent], list[str]]:
        """Each host of the plan runs its sessions (in parallel with the other hosts); what was sent."""
        procs: list[tuple[Host, subprocess.Popen]] = []
        for host in self.lab.clients:
            if not plan.get(host.name):
                continue
            body = {"base": f"http://{host.gateway_ip}:{GATEWAY_PORT}", "deadline_s": deadline_s,
                    "user_agent": f"authwire-demo/{host.name}", "sessions": plan[host.name]}
            proc = subprocess.Popen(self.lab.argv(host.netns, [sys.executable, "-m", "authwire.demo.traffic"]),
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, start_new_session=True)
            self.children.append(proc)
            proc.stdin.write(json.dumps(body))  # tokens go through a pipe, never a file
            proc.stdin.close()
            procs.append((host, proc))
        sent: list[Sent] = []
        errors: list[str] = []
        for host, proc in procs:
            stdout = proc.stdout.read()
            proc.wait(timeout=deadline_s + 30)
            for line in stdout.splitlines():
                item = json.loads(line)
                if "error" in item:
                    errors.append(f"{host.name}: {item['error']}")
                else:
                    sent.append(Sent(host.name, item["case"], item["path"], item["status"], item["local_port"],
                                     item.get("local_ip", ""), item.get("time", 0.0)))
        return sent, errors

    def wait_for_records(self, expected: int, timeout: float = 20, limit: int = 1000
                         ) -> list[record_pb2.EnrichedRecord]:
        stub = query_pb2_grpc.QueryStub(self.channel)
        deadline = time.monotonic() + timeout
        while True:
            records = list(stub.Query(query_pb2.QueryRequest(limit=limit), timeout=10).records)
            if len(records) >= expected or time.monotonic() > deadline:
                return sorted(records, key=lambda r: (r.event.start_time.seconds, r.event.start_time.nanos))
            time.sleep(0.2)

    # --- detections ---------------------------------------------------------------------------------------
    def send_attacks(self, creds: DemoCredentials) -> list[Sent]:
        """alice's session token is used from the laptop, then the scanner attacks (and replays that token)."""
        scanner = next(h for h in self.lab.clients if h.name == "scanner")
        scanner_ips = [scanner.ip, *self.lab.add_addresses(scanner, SCANNER_EXTRA_IPS)]
        stolen = "Bearer " + creds.token("alice", jti="demo-alice-session-1")
        first, _ = self.run_plan({"laptop": [[{"case": "jwt valid (alice's session)", "path": "/jwt/profile",
                                              "authorization": stolen}]]})
        sent, errors = self.run_plan(attack_plan(creds, stolen, scanner_ips))
        sent = first + sent
        counts = Counter(s.case for s in sent)
        self.say(f"[6/7] attacks: {len(sent)} requests; the scanner uses {len(scanner_ips)} source IPs with one TCP "
                 "stack: " + ", ".join(f"{n}x {case}" for case, n in counts.items()))
        for error in errors[:5]:
            self.say(f"        request failed: {error}")
        return sent

    def wait_for_alerts(self, timeout: float = 15) -> list[record_pb2.Alert]:
        """Alerts once every expected detection raised one and their updates have settled (or at timeout)."""
        stub = query_pb2_grpc.QueryStub(self.channel)
        deadline = time.monotonic() + timeout
        previous: list[record_pb2.Alert] = []
        while True:
            alerts = list(stub.Alerts(query_pb2.AlertsRequest(limit=100), timeout=5).alerts)
            complete = {a.detection for a in alerts} >= set(EXPECTED_DETECTIONS)
            if (complete and alerts == previous) or time.monotonic() > deadline:
                return alerts
            previous = alerts
            time.sleep(1.5 if complete else 0.2)  # updates are written at most every second

    def print_alerts(self, alerts: list[record_pb2.Alert]) -> None:
        from authwire.detect import render as alert_render
        from authwire.query.render import safe

        self.say(f"[7/7] {len(alerts)} alerts raised by the detections (one per key and window, updated while "
                 "it continues):\n")
        alert_render.alerts(alerts, "table", self.out, columns=("severity", "detection", "clients", "requests",
                                                               "key"))
        for alert in alerts:
            self.say(f"\n  {alert.detection} ({short_enum(record_pb2.AlertSeverity, alert.severity)}): "
                     f"{safe(alert.summary)}")
        missing = [d for d in EXPECTED_DETECTIONS if d not in {a.detection for a in alerts}]
        if missing:
            self.say(f"\n  (not raised this run: {', '.join(missing)}; see {self.output / 'authwire-serve.log'})")

    # --- report -----------------------------------------------------------------------------------------
    def print_records(self, records: list[record_pb2.EnrichedRecord], expected: int) -> None:
        hosts = {h.ip: h.name for h in self.lab.clients}
        self.say(f"[5/7] {len(records)} enriched records (of {expected} requests):\n")
        columns = ["host", "client", "path", "status", "auth", "outcome", "reason", "consumer", "join",
                   "ttl", "hops", "mss", "wscale", "os", "rtt_ms"]
        order = {h.name: i for i, h in enumerate(self.lab.clients)}
        rows = sorted((_row(r, hosts) for r in records), key=lambda row: order.get(row["host"], 99))
        widths = {c: max(len(c), *(len(row[c]) for row in rows)) if rows else len(c) for c in columns}
        self.say("  ".join(c.upper().ljust(widths[c]) for c in columns))
        for row in rows:
            self.say("  ".join(row[c].ljust(widths[c]) for c in columns))
        joins = Counter(short_enum(record_pb2.JoinStatus, r.join.status) for r in records)
        self.say(f"\njoins: {', '.join(f'{k} {v}' for k, v in joins.most_common())}")

    def print_commands(self) -> None:
        exe = Path(sys.executable).with_name("authwire")
        try:
            exe_text = str(exe.relative_to(Path.cwd()))
        except ValueError:
            exe_text = str(exe) if exe.exists() else "authwire"
        try:
            db = str(self.db.relative_to(Path.cwd()))
        except ValueError:
            db = str(self.db)
        self.say(f"\nThe records stay in {db} (and {Path(db).with_name('records.jsonl')}). Explore them:\n")
        for command, why in [
            ("query --limit 20", "newest records"),
            ("query --outcome failure --group-by client_ip,auth.reason", "who fails, and why"),
            ("query --group-by syn.signature,syn.os_hint,client_ip", "client TCP stacks by SYN"),
            ("query --reason bad_signature", "forged tokens"),
            ("query --method basic --outcome failure --format json --limit 1", "one full record as JSON"),
            ("alerts", "the alerts the detections raised"),
            ("alerts --detection stack_stuffing --format json", "one alert in full, as JSON"),
            (f"query --client-ip {self.lab.clients[2].ip}", f"one host: the {self.lab.clients[2].name}"),
        ]:
            verb = "alerts" if command.startswith("alerts") else "query"
            self.say(f"  {exe_text} {verb} --db {db} {command.removeprefix(verb).strip()}\n      # {why}")
        self.say(f"\nOr look at them in a browser: `{exe_text} web --db {db}` prints a one-time login link to the "
                 "web view (failures chart -> the scanner's SYN signature -> its IPs -> inspect page).")
        self.say(f"\nFor real use run `{exe_text} serve` beside your gateway: see README.md and "
                 "gateway-plugins/envoy/README.md.")

    # --- teardown ---------------------------------------------------------------------------------------
    def cleanup(self) -> list[str]:
        """Stop everything this demo started; return what could not be removed (empty = clean)."""
        problems: list[str] = []
        if self.envoy is not None:
            self.envoy.stop()
        if self.sidecar is not None and self.sidecar.poll() is None:
            self.sidecar.send_signal(signal.SIGTERM)  # serve detaches its tc filters on SIGTERM
            try:
                self.sidecar.wait(20)
            except subprocess.TimeoutExpired:
                problems.append("authwire serve ignored SIGTERM for 20 s; killed")
        if hasattr(self, "channel"):
            self.channel.close()
        for proc in self.children:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(5)
        self.lab.close()
        left = [n for n in lab.netns.listnetns() if n.startswith(f"{lab.PREFIX}{self.lab.tag}")]
        if left:
            problems.append(f"namespaces left: {', '.join(left)}")
        alive = [p.pid for p in self.children if p.poll() is None]
        if alive:
            problems.append(f"processes left: {alive}")
        shutil.rmtree(self.work, ignore_errors=True)
        return problems


def _row(r: record_pb2.EnrichedRecord, hosts: dict[str, str]) -> dict[str, str]:
    e, a, c = r.event, r.event.auth, r.connection
    has = r.HasField("connection") and r.connection.HasField("syn")
    rtt = c.handshake_rtt.seconds * 1e3 + c.handshake_rtt.nanos / 1e6
    return {
        "host": hosts.get(e.client.ip, "?"),
        "client": f"{e.client.ip}:{e.client.port}",
        "path": e.http.path,
        "status": str(e.http.status),
        "auth": short_enum(auth_event_pb2.AuthMethod, a.method),
        "outcome": short_enum(auth_event_pb2.AuthOutcome, a.outcome),
        "reason": short_enum(auth_event_pb2.FailureReason, a.reason) if a.reason else "",
        "consumer": a.consumer,
        "join": short_enum(record_pb2.JoinStatus, r.join.status),
        "ttl": str(c.syn.ttl) if has else "-",
        "hops": str(c.syn.hop_distance) if has else "-",
        "mss": str(c.syn.mss) if has else "-",
        "wscale": (str(c.syn.window_scale) if c.syn.window_scale >= 0 else "none") if has else "-",
        "os": (c.syn.os_hint or "-") if has else "-",
        "rtt_ms": f"{rtt:.3f}" if has and (c.handshake_rtt.seconds or c.handshake_rtt.nanos) else "-",
    }


def envoy_version() -> str:
    try:
        out = subprocess.run([str(envoy_binary()), "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "?"
    match = re.search(r"/(\d+\.\d+\.\d+)/", out.stdout)  # "envoy  version: <sha>/1.40.0/Clean/..."
    return match.group(1) if match else "?"


def preflight() -> str | None:
    """Why the demo cannot run here, or None."""
    missing = capabilities.missing_for_inspector()
    if not capabilities.has(capabilities.CAP_SYS_ADMIN):
        missing.append("CAP_SYS_ADMIN")
    if os.geteuid() != 0 or missing:
        why = f"missing {', '.join(missing)}" if missing else "not root"
        return f"the demo needs root (network namespaces, eBPF; {why}): run `sudo make run`"
    if shutil.which("ip") is None:
        return "needs iproute2 (`ip`): run `make setup`"
    try:
        envoy_binary()
    except EnvoyUnavailable as exc:
        return str(exc)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="authwire demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="demo-output",
                        help="directory for the store, JSONL and logs that stay after the demo (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=1, help="times each host repeats its traffic (1-20)")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds must be within 1..20")
    why = preflight()
    if why:
        print(f"authwire demo: {why}", file=sys.stderr)
        return 1
    stale = lab.leftover_namespaces()
    if stale:
        lab.remove_namespaces(stale)
        print(f"removed namespaces left by an earlier, killed run: {', '.join(stale)}")
    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)

    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    demo = Demo(output, args.rounds)
    status = 0
    try:
        creds = DemoCredentials()
        demo.build_lab()
        demo.start_upstream()
        demo.start_sidecar()
        demo.start_envoy(creds)
        sent = demo.send_traffic(creds)
        records = demo.wait_for_records(len(sent))
        demo.print_records(records, len(sent))
        sent += demo.send_attacks(creds)
        records = demo.wait_for_records(len(sent))
        alerts = demo.wait_for_alerts()
        demo.print_alerts(alerts)
        demo.print_commands()
        if len(records) < len(sent):
            print(f"authwire demo: only {len(records)} of {len(sent)} requests were recorded; see "
                  f"{output / 'authwire-serve.log'}", file=sys.stderr)
            status = 1
    except Interrupted as exc:
        print(f"\nauthwire demo: {exc}; cleaning up", file=sys.stderr)
        status = 130
    except (RuntimeError, OSError, grpc.RpcError) as exc:
        print(f"authwire demo: failed: {exc}", file=sys.stderr)
        status = 1
    finally:
        # A second Ctrl-C must not interrupt the cleanup itself.
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
        problems = demo.cleanup()
        for s, handler in previous.items():
            signal.signal(s, handler)
    if problems:
        print(f"authwire demo: cleanup incomplete: {'; '.join(problems)}", file=sys.stderr)
        return status or 1
    print("\nCleaned up: namespaces, veths, tc filters, Envoy, authwire serve and the clients are gone.")
    return status

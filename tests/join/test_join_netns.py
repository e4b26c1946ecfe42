"""The join, end to end with the real kernel: a test gateway (tests/join/gateway.py: JWT RS256/HS256, Basic,
AKSK) in a server namespace reports every request to `authwire serve` (kernel inspector on the server
veths) over gRPC; clients in namespaces with different TCP stacks send good and bad credentials over
many concurrent keep-alive connections. Each record must carry the facts of the connection its request
came on — checked against the client socket's own local port and the stack its namespace was given.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import os
import random
import select
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import communityid
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from authwire.demo.lab import Topology
from authwire.v1 import auth_event_pb2 as ae
from authwire.v1 import connection_pb2 as cp
from authwire.v1 import ingest_pb2, query_pb2, record_pb2
from support import AUTHWIRE, auth_event, require_root_bcc, start_sidecar, wait_until

sys.path.insert(0, str(Path(__file__).parent))
from gateway import basic_authorization, hmac_authorization  # noqa: E402
from httpclient import KeepAliveClient, socket_in_netns  # noqa: E402

pytestmark = pytest.mark.kernel

GATEWAY = Path(__file__).with_name("gateway.py")
PORT = 8080
JOIN_WAIT = 3.0


@dataclass(frozen=True)
class Stack:
    """What a client namespace's kernel puts in its SYNs, and what authwire must say about it."""

    name: str
    sysctls: dict[str, str]
    advmss: int | None
    ttl: int
    mss: int
    timestamps: bool
    sack: bool
    wscale: bool
    os_hint: str
    hop_distance: int


STACKS = [
    Stack("linux", {}, None, 64, 1460, True, True, True, "linux", 0),
    Stack("far", {"net.ipv4.ip_default_ttl": "57"}, 1200, 57, 1200, True, True, True, "linux", 7),
    Stack("bare", {"net.ipv4.tcp_timestamps": "0", "net.ipv4.tcp_sack": "0", "net.ipv4.tcp_window_scaling": "0"},
          None, 64, 1460, False, False, False, "linux", 0),
    Stack("ttl128", {"net.ipv4.ip_default_ttl": "128", "net.ipv4.tcp_timestamps": "0"}, 1000, 128, 1000,
          False, True, True, "unknown", 0),
    Stack("router", {"net.ipv4.ip_default_ttl": "255"}, 536, 255, 536, True, True, True, "network_device", 0),
]
FAILING_STACK = 3  # sends mostly bad credentials: the stack `--group-by` must name first


# -- credentials: the client side of the gateway's schemes -----------------------------------------------

@dataclass
class Creds:
    rsa_private: bytes
    rsa_other: bytes  # a key the gateway does not know: forged RS256 tokens
    hs_secret: str
    path: Path

    @classmethod
    def make(cls, directory: Path) -> Creds:
        def pem(key) -> bytes:
            return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        hs_secret = base64.b64encode(os.urandom(32)).decode()
        creds = {
            "jwt": {"rs1": {"alg": "RS256", "public_key": public, "consumer": "alice"},
                    "hs1": {"alg": "HS256", "secret": hs_secret, "consumer": "bob"}},
            "basic": {"carol": {"password": "carol-pw-7f3a", "consumer": "carol"}},
            "hmac": {"AKID1": {"secret": "aksk-secret-91c2", "consumer": "dave"}},
        }
        path = directory / "creds.json"
        path.write_text(json.dumps(creds))
        return cls(pem(key), pem(other), hs_secret, path)

    def jwt(self, kid: str, *, expired: bool = False, forged: bool = False) -> str:
        now = int(time.time())
        claims = {"iss": "tests", "sub": "user-1", "iat": now - 10, "exp": now - 5 if expired else now + 600,
                  "jti": uuid.uuid4().hex}
        if kid == "hs1":
            return jwt.encode(claims, "not-the-secret" * 3 if forged else self.hs_secret, "HS256",
                              headers={"kid": kid})
        return jwt.encode(claims, self.rsa_other if forged else self.rsa_private, "RS256", headers={"kid": kid})


# case -> (path, status, method, outcome, reason, consumer)
CASES = {
    "jwt_rs_ok": ("/jwt/orders", 200, ae.AUTH_METHOD_JWT, ae.AUTH_OUTCOME_SUCCESS, 0, "alice"),
    "jwt_hs_ok": ("/jwt/orders", 200, ae.AUTH_METHOD_JWT, ae.AUTH_OUTCOME_SUCCESS, 0, "bob"),
    "jwt_expired": ("/jwt/orders", 401, ae.AUTH_METHOD_JWT, ae.AUTH_OUTCOME_FAILURE, ae.FAILURE_REASON_EXPIRED, ""),
    "jwt_forged": ("/jwt/orders", 401, ae.AUTH_METHOD_JWT, ae.AUTH_OUTCOME_FAILURE,
                   ae.FAILURE_REASON_BAD_SIGNATURE, ""),
    "jwt_unknown_kid": ("/jwt/orders", 401, ae.AUTH_METHOD_JWT, ae.AUTH_OUTCOME_FAILURE,
                        ae.FAILURE_REASON_UNKNOWN_KEY, ""),
    "jwt_missing": ("/jwt/orders", 401, ae.AUTH_METHOD_JWT, ae.AUTH_OUTCOME_FAILURE,
                    ae.FAILURE_REASON_MISSING_CREDENTIALS, ""),
    "basic_ok": ("/basic/users", 200, ae.AUTH_METHOD_BASIC, ae.AUTH_OUTCOME_SUCCESS, 0, "carol"),
    "basic_wrong": ("/basic/users", 401, ae.AUTH_METHOD_BASIC, ae.AUTH_OUTCOME_FAILURE,
                    ae.FAILURE_REASON_INVALID_CREDENTIALS, ""),
    "hmac_ok": ("/hmac/billing", 200, ae.AUTH_METHOD_HMAC, ae.AUTH_OUTCOME_SUCCESS, 0, "dave"),
    "hmac_bad_sig": ("/hmac/billing", 401, ae.AUTH_METHOD_HMAC, ae.AUTH_OUTCOME_FAILURE,
                     ae.FAILURE_REASON_BAD_SIGNATURE, ""),
    "hmac_skew": ("/hmac/billing", 401, ae.AUTH_METHOD_HMAC, ae.AUTH_OUTCOME_FAILURE,
                  ae.FAILURE_REASON_CLOCK_SKEW, ""),
    "hmac_unknown": ("/hmac/billing", 401, ae.AUTH_METHOD_HMAC, ae.AUTH_OUTCOME_FAILURE,
                     ae.FAILURE_REASON_UNKNOWN_KEY, ""),
    "none": ("/public/health", 200, ae.AUTH_METHOD_NONE, ae.AUTH_OUTCOME_NOT_ATTEMPTED, 0, ""),
}
GOOD = [c for c, v in CASES.items() if v[1] == 200]
BAD = [c for c, v in CASES.items() if v[1] == 401]
SECRETS = ("carol-pw-7f3a", "aksk-secret-91c2")


def headers_for(case: str, creds: Creds, method: str = "GET") -> dict[str, str]:
    path = CASES[case][0]
    date = str(int(time.time()))
    return {
        "jwt_rs_ok": lambda: {"Authorization": "Bearer " + creds.jwt("rs1")},
        "jwt_hs_ok": lambda: {"Authorization": "Bearer " + creds.jwt("hs1")},
        "jwt_expired": lambda: {"Authorization": "Bearer " + creds.jwt("rs1", expired=True)},
        "jwt_forged": lambda: {"Authorization": "Bearer " + creds.jwt("rs1", forged=True)},
        "jwt_unknown_kid": lambda: {"Authorization": "Bearer " + creds.jwt("nope")},
        "jwt_missing": lambda: {},
        "basic_ok": lambda: {"Authorization": basic_authorization("carol", "carol-pw-7f3a")},
        "basic_wrong": lambda: {"Authorization": basic_authorization("carol", "guess")},
        "hmac_ok": lambda: {"X-Date": date,
                            "Authorization": hmac_authorization("AKID1", "aksk-secret-91c2", method, path, date)},
        "hmac_bad_sig": lambda: {"X-Date": date,
                                 "Authorization": hmac_authorization("AKID1", "wrong", method, path, date)},
        "hmac_skew": lambda: {"X-Date": str(int(date) - 3600), "Authorization": hmac_authorization(
            "AKID1", "aksk-secret-91c2", method, path, str(int(date) - 3600))},
        "hmac_unknown": lambda: {"X-Date": date,
                                 "Authorization": hmac_authorization("AKID9", "x", method, path, date)},
        "none": lambda: {},
    }[case]()


# -- the lab: namespaces, sidecar with inspector, gateway ------------------------------------------------

@dataclass
class Lab:
    topo: Topology
    sidecar: object
    gateway: subprocess.Popen
    creds: Creds

    def client(self, i: int):
        return self.topo.client_list[i]

    async def connect(self, i: int, **options) -> KeepAliveClient:
        c = self.client(i)
        return await KeepAliveClient.connect(c.ns, c.server_ip4, PORT, **options)

    async def send(self, conn: KeepAliveClient, case: str, request_id: str, extra: dict | None = None):
        path, status = CASES[case][0], CASES[case][1]
        headers = {"X-Request-Id": request_id, "User-Agent": "join-test/1", **headers_for(case, self.creds)}
        headers.update(extra or {})
        response = await conn.request("GET", path, headers)
        assert response.status == status, (case, response.status, response.body)
        return response

    def records(self, request_ids: list[str], timeout: float = 30) -> dict[str, record_pb2.EnrichedRecord]:
        """Poll the sidecar until every request id is stored; return them by id."""
        wanted = set(request_ids)
        found: dict[str, record_pb2.EnrichedRecord] = {}
        stub = self.sidecar.query()

        def all_there() -> bool:
            for rid in list(wanted - found.keys()):
                resp = stub.Query(query_pb2.QueryRequest(filters=query_pb2.Filters(request_id=rid), limit=2),
                                  timeout=10)
                if resp.records:
                    found[rid] = resp.records[0]
            return wanted <= found.keys()

        wait_until(all_there, timeout, f"{len(wanted)} records in the store", interval=0.1)
        return found

    def counter(self, name: str, label: str = "") -> int:
        stats = self.sidecar.query().Stats(query_pb2.StatsRequest(), timeout=5)
        return sum(c.value for c in stats.counters if c.name == name and c.label == label)


def _read_ready(process: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"gateway exited {process.returncode} (see gateway.log)")
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            line = process.stdout.readline()
            if line.startswith("READY"):
                return line
    raise AssertionError("gateway did not print READY in time")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require_root_bcc()
    tmp = tmp_path_factory.mktemp("join")
    with Topology(clients=len(STACKS), client_sysctls=[s.sysctls for s in STACKS]) as topo:
        for stack, client in zip(STACKS, topo.client_list, strict=True):
            if stack.advmss:
                client.exec("ip", "route", "replace", f"{client.server_ip4.rsplit('.', 1)[0]}.0/24", "dev",
                            client.iface, "advmss", str(stack.advmss))
        ifaces = [a for iface in topo.server_ifaces for a in ("--iface", iface)]
        sidecar = start_sidecar(tmp, *ifaces, "--join-wait", str(JOIN_WAIT), netns=topo.server_ns, inspector=True)
        gateway = None
        try:
            stats = sidecar.query().Stats(query_pb2.StatsRequest(), timeout=5)
            assert stats.inspector_running, f"inspector did not start: {stats.inspector_status}"
            creds = Creds.make(tmp)
            gateway_log = open(tmp / "gateway.log", "w")  # noqa: SIM115 - closed with the process
            gateway = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{topo.server_ns}", "--", sys.executable, str(GATEWAY),
                 "--listen", f"[::]:{PORT}", "--sidecar", sidecar.address, "--creds", str(creds.path),
                 "--node", "join-gw"],
                stdout=subprocess.PIPE, stderr=gateway_log, text=True)
            _read_ready(gateway, 20)
            yield Lab(topo, sidecar, gateway, creds)
        finally:
            if gateway is not None:
                gateway.terminate()
                try:
                    gateway.wait(10)
                except subprocess.TimeoutExpired:
                    gateway.kill()
                    gateway.wait()
            sidecar.stop()


def reference_community_id(client: tuple[str, int], server: tuple[str, int]) -> str:
    tpl = communityid.FlowTuple.make_tcp(client[0], server[0], client[1], server[1])
    return communityid.CommunityID().calc(tpl)


# -- the tests -----------------------------------------------------------------------------------------

CONNS_PER_STACK = 24
REQUESTS_PER_CONN = 4


def test_every_record_joins_its_own_connection(lab: Lab) -> None:
    rng = random.Random(41)
    expected: dict[str, dict] = {}

    async def one_connection(stack_index: int, n: int) -> None:
        conn = await lab.connect(stack_index)
        try:
            for r in range(1, REQUESTS_PER_CONN + 1):
                bad_share = 0.8 if stack_index == FAILING_STACK else 0.3
                case = rng.choice(BAD if rng.random() < bad_share else GOOD)
                rid = f"m-{stack_index}-{n}-{r}-{uuid.uuid4().hex[:8]}"
                await lab.send(conn, case, rid)
                expected[rid] = dict(stack=stack_index, conn=(stack_index, n), local=conn.local, number=r,
                                     case=case)
        finally:
            await conn.close()

    async def load() -> None:
        await asyncio.gather(*(one_connection(i, n) for i in range(len(STACKS)) for n in range(CONNS_PER_STACK)))

    asyncio.run(load())
    records = lab.records(list(expected))
    uid_of_conn: dict[tuple[int, int], str] = {}
    indexes: dict[tuple[int, int], list[int]] = {}
    for rid, want in expected.items():
        rec = records[rid]
        stack, client = STACKS[want["stack"]], lab.client(want["stack"])
        path, status, method, outcome, reason, consumer = CASES[want["case"]]
        assert rec.join.status == record_pb2.JOIN_STATUS_EXACT, (rid, rec.join)
        c = rec.connection
        # The right connection: the client socket's own address and port, and the gateway's address.
        assert (c.client.ip, c.client.port) == (client.ip4, want["local"][1]), rid
        assert (c.server.ip, c.server.port) == (client.server_ip4, PORT), rid
        # The gateway listens dual-stack and reports ::ffff:10.77.x.y; the record holds plain IPv4.
        assert (rec.event.client.ip, rec.event.client.port) == (client.ip4, want["local"][1])
        # The stack its namespace was given.
        s = c.syn
        assert (s.ttl, s.mss, s.timestamps, s.sack_permitted, s.window_scale >= 0) == (
            stack.ttl, stack.mss, stack.timestamps, stack.sack, stack.wscale), (stack.name, s)
        assert (s.os_hint, s.hop_distance) == (stack.os_hint, stack.hop_distance), (stack.name, s)
        assert s.signature.startswith(f"4:{s.initial_ttl}:{stack.mss}:"), s.signature
        assert c.community_id == reference_community_id((client.ip4, want["local"][1]),
                                                        (client.server_ip4, PORT))
        # The right outcome and reason.
        a = rec.event.auth
        assert (rec.event.http.status, a.method, a.outcome, a.reason, a.consumer) == (
            status, method, outcome, reason, consumer), (want["case"], a)
        # Enrichment.
        assert rec.event.connection_requests == want["number"]
        indexes.setdefault(want["conn"], []).append(rec.join.kernel_request_index)
        assert c.HasField("handshake_rtt") and c.HasField("syn_time") and c.uid
        assert rec.join.connection_age.ToNanoseconds() > 0
        assert not rec.join.behind_proxy
        prev = uid_of_conn.setdefault(want["conn"], c.uid)
        assert prev == c.uid, f"requests of one client connection joined to two connections: {rid}"
        blob = rec.SerializeToString()
        assert not any(secret.encode() in blob for secret in SECRETS)
    assert len(set(uid_of_conn.values())) == len(uid_of_conn), "two client connections share one uid"
    # The kernel-side request index numbers each connection's reports 1..n in join order (the gateway's
    # own counter is checked above; reports woken together may join in either order).
    assert all(sorted(v) == list(range(1, REQUESTS_PER_CONN + 1)) for v in indexes.values()), indexes
    # One signature per stack, and distinct across stacks.
    sig_of_stack: dict[int, set[str]] = {}
    for rid, want in expected.items():
        sig_of_stack.setdefault(want["stack"], set()).add(records[rid].connection.syn.signature)
    assert all(len(v) == 1 for v in sig_of_stack.values()), sig_of_stack
    assert len({next(iter(v)) for v in sig_of_stack.values()}) == len(STACKS)
    # Linux with default sysctls over a 1500-byte MTU signs as fingerprint.py's docstring says.
    assert sig_of_stack[0] == {"4:64:1460:m*44:10:MSTNW:df"}, sig_of_stack
    assert lab.counter("join", "EXACT") >= len(expected)


def test_tuple_reuse_with_different_stacks_never_misjoins(lab: Lab) -> None:
    port = 20000 + os.getpid() % 20000
    settings = [dict(ttl=50, mss=1100), dict(), dict(ttl=33, mss=900), dict(), dict(ttl=50, mss=1100), dict()]
    expected: dict[str, tuple[int, dict]] = {}

    async def run() -> None:
        for i, opts in enumerate(settings):
            conn = await lab.connect(0, bind_port=port, **opts)
            assert conn.local[1] == port
            for r in range(2):
                rid = f"reuse-{i}-{r}-{uuid.uuid4().hex[:8]}"
                await lab.send(conn, "basic_ok" if r else "jwt_forged", rid)
                expected[rid] = (i, opts)
            await conn.close(reset=True)  # RST: no TIME_WAIT, the next connect reuses the tuple at once

    asyncio.run(run())
    records = lab.records(list(expected))
    uid_of: dict[int, str] = {}
    for rid, (i, opts) in expected.items():
        rec = records[rid]
        assert rec.join.status == record_pb2.JOIN_STATUS_EXACT, rid
        assert rec.connection.client.port == port
        assert rec.connection.syn.ttl == opts.get("ttl", 64), (rid, rec.connection.syn)
        assert rec.connection.syn.mss == opts.get("mss", 1460), (rid, rec.connection.syn)
        assert uid_of.setdefault(i, rec.connection.uid) == rec.connection.uid
    assert len(set(uid_of.values())) == len(settings), "back-to-back connections on one tuple shared a uid"


def test_late_reports_join_the_closed_connection(lab: Lab) -> None:
    expected: dict[str, tuple[int, int]] = {}

    async def run() -> list[KeepAliveClient]:
        conns = [await lab.connect(1) for _ in range(5)]
        for n, conn in enumerate(conns):
            for r in range(1, 3):
                rid = f"late-{n}-{r}-{uuid.uuid4().hex[:8]}"
                await lab.send(conn, "hmac_ok", rid, {"X-Hold-Report": "1"})
                expected[rid] = (n, conn.local[1])
        for conn in conns:
            await conn.close()
        return conns

    asyncio.run(run())
    client = lab.client(1)
    # The reports are sent only once the kernel has seen every one of these connections close.
    ports = {port for _, port in expected.values()}

    def all_closed() -> bool:
        closed = 0
        for port in ports:
            cands = lab.sidecar.query().Connections(
                query_pb2.ConnectionsRequest(client_ip=client.ip4, include_closed=True), timeout=5).connections
            closed += any(c.client.port == port and c.HasField("close_time") for c in cands)
        return closed == len(ports)

    wait_until(all_closed, 10, "the kernel to report the connections closed")
    some = next(iter(expected))
    assert not lab.sidecar.query().Query(query_pb2.QueryRequest(
        filters=query_pb2.Filters(request_id=some)), timeout=10).records, "held report was sent early"
    assert asyncio.run(_release(lab)) >= len(expected)
    records = lab.records(list(expected))
    for rid, (_, port) in expected.items():
        rec = records[rid]
        assert rec.join.status == record_pb2.JOIN_STATUS_EXACT, rid
        assert rec.connection.client.port == port
        assert rec.connection.HasField("close_time")
        assert rec.connection.state in (cp.CONNECTION_STATE_CLOSED, cp.CONNECTION_STATE_CLOSING,
                                         cp.CONNECTION_STATE_RESET)
        assert rec.connection.close_time.ToNanoseconds() >= rec.event.start_time.ToNanoseconds()
        assert rec.connection.syn.ttl == STACKS[1].ttl


async def _release(lab: Lab) -> int:
    conn = await lab.connect(0)
    try:
        response = await conn.request("POST", "/__gateway/release")
        assert response.status == 200
        return json.loads(response.body)["released"]
    finally:
        await conn.close()


def _report_async(lab: Lab, events: list[ae.AuthEvent]):
    return lab.sidecar.ingest().Report.future(ingest_pb2.ReportRequest(events=events), timeout=30)


def test_early_report_waits_for_its_connection(lab: Lab) -> None:
    client = lab.client(2)
    port = 15000 + os.getpid() % 5000
    event = auth_event(f"early-{uuid.uuid4().hex[:8]}", client=(client.ip4, port),
                       server=(client.server_ip4, PORT), start=time.time() + 2.0)
    started = lab.counter("join.wait", "started")
    future = _report_async(lab, [event])
    # Connect only once the report is provably waiting in the joiner, so this really is "report first".
    wait_until(lambda: lab.counter("join.wait", "started") > started, 10, "the report to start waiting")
    assert not future.done()
    sock = socket_in_netns(client.ns, bind_port=port)
    try:
        sock.settimeout(5)
        sock.connect((client.server_ip4, PORT))
        response = future.result(timeout=30)
        assert response.accepted == 1, response
    finally:
        sock.close()
    rec = lab.records([event.request_id])[event.request_id]
    assert rec.join.status == record_pb2.JOIN_STATUS_EXACT
    assert rec.connection.client.port == port and rec.connection.syn.ttl == STACKS[2].ttl
    assert 0 < rec.join.waited.ToNanoseconds() < JOIN_WAIT * 1e9


def test_no_connection_never_joins_an_older_connection(lab: Lab) -> None:
    client = lab.client(0)
    port = 12000 + os.getpid() % 3000

    async def one_closed_connection() -> str:
        conn = await lab.connect(0, bind_port=port)
        rid = f"old-{uuid.uuid4().hex[:8]}"
        await lab.send(conn, "basic_ok", rid)
        await conn.close(reset=True)
        return rid

    old_rid = asyncio.run(one_closed_connection())
    old = lab.records([old_rid])[old_rid]
    assert old.join.status == record_pb2.JOIN_STATUS_EXACT
    wait_until(lambda: any(c.client.port == port and c.HasField("close_time") for c in lab.sidecar.query().Connections(
        query_pb2.ConnectionsRequest(client_ip=client.ip4, include_closed=True), timeout=5).connections),
        10, "the old connection to be reported closed")
    # A report on the same tuple for a request that started after that connection ended (a newer connection
    # the kernel never saw), and one on a tuple nobody ever used.
    reused = auth_event(f"reused-{uuid.uuid4().hex[:8]}", client=(client.ip4, port), server=(client.server_ip4, PORT))
    unseen = auth_event(f"unseen-{uuid.uuid4().hex[:8]}", client=(client.ip4, port + 1),
                        server=(client.server_ip4, PORT))
    # And the same, as a dual-stack gateway reports it: an IPv4-mapped IPv6 address.
    mapped = auth_event(f"mapped-{uuid.uuid4().hex[:8]}", client=("::ffff:" + client.ip4, port),
                        server=("::ffff:" + client.server_ip4, PORT),
                        start=old.event.start_time.ToNanoseconds() / 1e9)
    response = lab.sidecar.ingest().Report(ingest_pb2.ReportRequest(events=[reused, unseen, mapped]), timeout=30)
    assert response.accepted == 3, response
    got = lab.records([reused.request_id, unseen.request_id, mapped.request_id])
    for rid in (reused.request_id, unseen.request_id):
        assert got[rid].join.status == record_pb2.JOIN_STATUS_NO_CONNECTION, got[rid]
        assert not got[rid].HasField("connection")
        assert got[rid].join.waited.ToNanoseconds() >= JOIN_WAIT * 1e9 * 0.9
    # A late report of the old request's time still finds the old connection, mapped address or not.
    assert got[mapped.request_id].join.status == record_pb2.JOIN_STATUS_EXACT
    assert got[mapped.request_id].connection.uid == old.connection.uid


def test_behind_proxy_keeps_forwarded_for_apart(lab: Lab) -> None:
    async def run() -> tuple[str, tuple[str, int]]:
        conn = await lab.connect(4)
        rid = f"proxy-{uuid.uuid4().hex[:8]}"
        try:
            await lab.send(conn, "jwt_hs_ok", rid, {"X-Forwarded-For": "203.0.113.9, 10.0.0.1"})
        finally:
            await conn.close()
        return rid, conn.local

    rid, local = asyncio.run(run())
    rec = lab.records([rid])[rid]
    assert rec.join.status == record_pb2.JOIN_STATUS_EXACT and rec.join.behind_proxy
    assert rec.event.forwarded_for == "203.0.113.9"
    # Kernel facts describe the TCP peer (the "proxy" namespace), never the forwarded client.
    assert (rec.connection.client.ip, rec.connection.client.port) == (lab.client(4).ip4, local[1])
    assert rec.connection.syn.os_hint == "network_device"


def test_cli_query_shows_network_facts_and_failing_stacks(lab: Lab) -> None:
    """The issue's "done when": a request from a custom TTL/MSS stack comes back from `authwire query
    --format json` joined EXACT with those facts, and --group-by names the stack that failed auth most."""
    since = datetime.datetime.now(datetime.UTC).isoformat()  # precise: earlier tests' records stay out
    far = STACKS.index(next(s for s in STACKS if s.name == "far"))
    rids: list[str] = []

    async def run() -> tuple[str, int]:
        conn = await lab.connect(far)
        rid = f"cli-{uuid.uuid4().hex[:8]}"
        await lab.send(conn, "hmac_ok", rid)
        rids.append(rid)
        local_port = conn.local[1]
        await conn.close()
        for stack, failures in ((FAILING_STACK, 6), (0, 2), (far, 1)):
            conn = await lab.connect(stack)
            for k in range(failures):
                rids.append(f"clifail-{stack}-{k}-{uuid.uuid4().hex[:8]}")
                await lab.send(conn, "basic_wrong", rids[-1])
            await conn.close()
        return rid, local_port

    rid, local_port = asyncio.run(run())
    lab.records(rids)
    out = subprocess.run([AUTHWIRE, "query", "--format", "json", "--request-id", rid, "--server",
                          lab.sidecar.address], capture_output=True, text=True, timeout=60, check=True).stdout
    record = json.loads(out.splitlines()[0])
    assert record["join"]["status"] == "JOIN_STATUS_EXACT"
    syn = record["connection"]["syn"]
    assert (syn["ttl"], syn["mss"], syn["hop_distance"], syn["os_hint"]) == (57, 1200, 7, "linux")
    assert record["connection"]["client"]["port"] == local_port
    # Filter on the network facts themselves, through the CLI.
    sig = syn["signature"]
    out = subprocess.run([AUTHWIRE, "query", "--format", "json", "--syn-signature", sig, "--hop-distance", "7",
                          "--os", "Linux", "--join-status", "exact", "--since", since, "--server",
                          lab.sidecar.address], capture_output=True, text=True, timeout=60, check=True).stdout
    assert rid in {json.loads(line)["event"]["request_id"] for line in out.splitlines()}
    # Which stacks failed auth most?
    out = subprocess.run([AUTHWIRE, "query", "--format", "json", "--outcome", "failure", "--since", since,
                          "--group-by", "syn.signature,syn.os_hint", "--server", lab.sidecar.address],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    groups = [json.loads(line) for line in out.splitlines()]
    failing = lab.records([r for r in rids if r.startswith(f"clifail-{FAILING_STACK}-")][:1])
    top_signature = next(iter(failing.values())).connection.syn.signature
    assert groups[0]["syn.signature"] == top_signature and groups[0]["count"] == 6, groups
    assert groups[0]["syn.os_hint"] == STACKS[FAILING_STACK].os_hint
    assert [g["count"] for g in groups] == [6, 2, 1], groups


def test_ipv6_client_joins_with_its_own_facts(lab: Lab) -> None:
    client = lab.client(1)  # hop limit is per-socket here: IPv6 does not use ip_default_ttl

    async def run() -> tuple[str, tuple]:
        conn = await KeepAliveClient.connect(client.ns, client.server_ip6, PORT, ttl=61)
        rid = f"v6-{uuid.uuid4().hex[:8]}"
        try:
            await lab.send(conn, "jwt_rs_ok", rid)
        finally:
            await conn.close()
        return rid, conn.local

    rid, local = asyncio.run(run())
    rec = lab.records([rid])[rid]
    c = rec.connection
    assert rec.join.status == record_pb2.JOIN_STATUS_EXACT
    assert (c.client.ip, c.client.port, c.server.ip) == (client.ip6, local[1], client.server_ip6)
    assert (c.syn.ip_version, c.syn.ttl, c.syn.hop_distance, c.syn.os_hint) == (6, 61, 3, "linux")
    assert c.syn.signature.startswith("6:64:") and not c.syn.df
    assert c.community_id == reference_community_id((client.ip6, local[1]), (client.server_ip6, PORT))


def test_cli_filters_on_rtt_retransmits_and_community_id(lab: Lab) -> None:
    """A request whose first data segment the server's netfilter drops (after tc ingress saw it) is found
    by --retransmits-gt and by its Community ID; RTT bounds include/exclude it. Through the CLI."""
    client = lab.client(0)
    port = 25000 + os.getpid() % 5000
    since = datetime.datetime.now(datetime.UTC).isoformat()  # precise: earlier tests' records stay out
    table = f"awjoin{os.getpid()}"
    rule = (f"add table inet {table}\n"
            f"add chain inet {table} in {{ type filter hook input priority 0; }}\n"
            f"add rule inet {table} in ip saddr {client.ip4} tcp sport {port} tcp dport {PORT} "
            f"meta length > 100 numgen inc mod 2 == 0 drop\n")
    subprocess.run(["ip", "netns", "exec", lab.topo.server_ns, "nft", "-f", "-"], input=rule, text=True,
                   check=True, timeout=10)
    try:
        async def run() -> str:
            conn = await lab.connect(0, bind_port=port)
            rid = f"lossy-{uuid.uuid4().hex[:8]}"
            try:
                await lab.send(conn, "basic_ok", rid)  # its first copy is dropped: TCP retransmits it
            finally:
                await conn.close()
            return rid

        rid = asyncio.run(run())
    finally:
        subprocess.run(["ip", "netns", "exec", lab.topo.server_ns, "nft", "delete", "table", "inet", table],
                       check=False, timeout=10)
    rec = lab.records([rid])[rid]
    assert rec.join.status == record_pb2.JOIN_STATUS_EXACT
    assert rec.connection.to_server.retransmits >= 1, rec.connection

    def cli(*args: str) -> set[str]:
        out = subprocess.run([AUTHWIRE, "query", "--format", "json", "--since", since, *args, "--server",
                              lab.sidecar.address], capture_output=True, text=True, timeout=60, check=True).stdout
        return {json.loads(line)["event"]["request_id"] for line in out.splitlines()}

    assert cli("--retransmits-gt", "0") == {rid}
    assert cli("--community-id", rec.connection.community_id) == {rid}
    assert rid in cli("--max-rtt", "1s") and rid not in cli("--min-rtt", "1s")

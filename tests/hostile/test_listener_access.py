"""Local access control and listener ownership (issue 11 items 5, 6): a real `authwire serve` each time.

- every TCP listener (gRPC, gRPC-Web), loopback included, needs the bearer token for anything but health;
  unix sockets rely on their file mode (0660 for gRPC);
- token_file = off refuses TCP listeners at start, naming them;
- the CLI sends the token on TCP (--token-file / AUTHWIRE_TOKEN_FILE); Envoy sends it as initial metadata;
- a second sidecar on the same unix socket or TCP port is refused, naming the address, and the first keeps
  serving; a regular file at the socket path is never removed.
"""

from __future__ import annotations

import http.client
import os
import stat
import struct
import subprocess
import urllib.error
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authwire.demo.credentials import DemoCredentials
from authwire.demo.envoy_runner import EnvoyProcess, EnvoyUnavailable, GatewaySpec, envoy_binary
from authwire.v1 import ingest_pb2, ingest_pb2_grpc, query_pb2, query_pb2_grpc
from support import AUTHWIRE, auth_event, free_port, require, start_sidecar, wait_until


@pytest.fixture(scope="module")
def tcp_sidecar(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("access")
    port, web_port = free_port(), free_port()
    s = start_sidecar(tmp, "--listen", f"127.0.0.1:{port}", "--grpc-web-listen", f"127.0.0.1:{web_port}")
    s.tcp = f"127.0.0.1:{port}"
    s.web_port = web_port
    try:
        yield s
    finally:
        s.kill()


def stats(sidecar) -> dict[tuple[str, str], int]:
    return {(c.name, c.label): c.value for c in sidecar.query().Stats(query_pb2.StatsRequest(), timeout=10).counters}


def test_grpc_over_tcp_needs_the_token_for_ingest_and_query_but_not_for_health(tcp_sidecar):
    before = stats(tcp_sidecar).get(("access.denied", "grpc"), 0)
    with grpc.insecure_channel(tcp_sidecar.tcp) as channel:
        with pytest.raises(grpc.RpcError) as err:
            ingest_pb2_grpc.IngestStub(channel).Report(ingest_pb2.ReportRequest(
                events=[auth_event("forged", consumer="admin")]), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        for wrong in ([], [("authorization", "Bearer wrong")], [("authorization", tcp_sidecar.token())]):
            with pytest.raises(grpc.RpcError) as err:
                query_pb2_grpc.QueryStub(channel).Query(query_pb2.QueryRequest(), metadata=wrong, timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING
        good = [("authorization", f"Bearer {tcp_sidecar.token()}")]
        assert ingest_pb2_grpc.IngestStub(channel).Report(ingest_pb2.ReportRequest(
            events=[auth_event("with-token")]), metadata=good, timeout=10).accepted == 1
    # the unix socket needs no token; the forged report never arrived
    ids = {r.event.request_id for r in tcp_sidecar.query().Query(query_pb2.QueryRequest(limit=100)).records}
    assert "with-token" in ids and "forged" not in ids
    assert stats(tcp_sidecar)[("access.denied", "grpc")] - before == 4
    assert tcp_sidecar.token() not in tcp_sidecar.log_text()


def test_grpc_web_over_tcp_needs_the_token(tcp_sidecar):
    body = ingest_pb2.ReportRequest(events=[auth_event("gw-forged")]).SerializeToString()
    frame = struct.pack(">BI", 0, len(body)) + body
    for headers, status in (({}, "16"), ({"Authorization": "Bearer nope"}, "16"),
                            (tcp_sidecar.auth_header(), "0")):
        conn = http.client.HTTPConnection("127.0.0.1", tcp_sidecar.web_port, timeout=10)
        conn.request("POST", "/authwire.v1.Ingest/Report", body=frame,
                     headers={"Content-Type": "application/grpc-web+proto", **headers})
        response = conn.getresponse()
        response.read()
        assert response.getheader("grpc-status", "0") == status, headers
        conn.close()


def test_cli_sends_the_token_on_tcp(tcp_sidecar, tmp_path):
    token_file = tcp_sidecar.db.parent / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    env = {k: v for k, v in os.environ.items() if k != "AUTHWIRE_TOKEN_FILE"}
    ok = subprocess.run([AUTHWIRE, "stats", "--server", tcp_sidecar.tcp, "--token-file", str(token_file)],
                        capture_output=True, text=True, timeout=60, env=env)
    assert ok.returncode == 0 and "ingest.received" in ok.stdout, ok.stderr
    via_env = subprocess.run([AUTHWIRE, "stats", "--server", tcp_sidecar.tcp], capture_output=True, text=True,
                             timeout=60, env={**env, "AUTHWIRE_TOKEN_FILE": str(token_file)})
    assert via_env.returncode == 0, via_env.stderr
    denied = subprocess.run([AUTHWIRE, "stats", "--server", tcp_sidecar.tcp], capture_output=True, text=True,
                            timeout=60, env=env)
    assert denied.returncode == 2 and "UNAUTHENTICATED" in denied.stderr
    assert "Traceback" not in denied.stderr


def test_unix_socket_mode_and_no_token_needed_there(tcp_sidecar):
    path = tcp_sidecar.address.removeprefix("unix:")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    assert tcp_sidecar.cli("stats").returncode == 0


def _serve(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([AUTHWIRE, "serve", "--no-inspector", "--db", str(tmp_path / "b.db"),
                           "--http-listen", "off", *args], capture_output=True, text=True, timeout=60)


def test_token_off_refuses_tcp_listeners_naming_them(tmp_path):
    port = free_port()
    result = _serve(tmp_path, "--token-file", "off", "--listen", f"127.0.0.1:{port}", "--grpc-web-listen", "off")
    assert result.returncode == 2 and f"listen 127.0.0.1:{port}" in result.stderr, result.stderr
    result = _serve(tmp_path, "--token-file", "off", "--listen", f"unix:{tmp_path}/a.sock",
                    "--grpc-web-listen", f"127.0.0.1:{port}")
    assert result.returncode == 2 and f"grpc_web_listen 127.0.0.1:{port}" in result.stderr, result.stderr


def test_token_off_with_unix_sockets_only_serves(tmp_path):
    sidecar = start_sidecar(tmp_path, "--token-file", "off")
    try:
        assert sidecar.ingest().Report(ingest_pb2.ReportRequest(events=[auth_event("off-1")])).accepted == 1
        assert not (tmp_path / "token").exists()
    finally:
        sidecar.kill()


def test_a_second_sidecar_on_the_same_socket_or_port_is_refused_and_the_first_keeps_serving(tcp_sidecar, tmp_path):
    unix = _serve(tmp_path, "--listen", tcp_sidecar.address, "--grpc-web-listen", "off")
    assert unix.returncode == 2 and tcp_sidecar.address in unix.stderr and "in use" in unix.stderr, unix.stderr
    tcp = _serve(tmp_path, "--listen", f"unix:{tmp_path}/other.sock", "--listen", tcp_sidecar.tcp,
                 "--grpc-web-listen", "off")
    assert tcp.returncode == 2 and tcp_sidecar.tcp in tcp.stderr, tcp.stderr
    web = _serve(tmp_path, "--listen", f"unix:{tmp_path}/third.sock",
                 "--grpc-web-listen", f"127.0.0.1:{tcp_sidecar.web_port}")
    assert web.returncode == 2 and f"127.0.0.1:{tcp_sidecar.web_port}" in web.stderr, web.stderr
    # the first one is untouched: its socket is still there and answers
    assert os.path.exists(tcp_sidecar.address.removeprefix("unix:"))
    assert tcp_sidecar.ingest().Report(ingest_pb2.ReportRequest(events=[auth_event("still-1")]),
                                       timeout=10).accepted == 1


def test_a_regular_file_at_the_socket_path_is_never_removed(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me\n")
    result = _serve(tmp_path, "--listen", f"unix:{victim}", "--grpc-web-listen", "off")
    assert result.returncode == 2 and "not a socket" in result.stderr, result.stderr
    assert victim.read_text() == "keep me\n"


def test_a_stale_socket_of_a_killed_sidecar_is_replaced(tmp_path):
    first = start_sidecar(tmp_path)
    first.kill()
    assert os.path.exists(first.address.removeprefix("unix:"))  # SIGKILL leaves it behind
    second = start_sidecar(tmp_path, db=first.db)
    second.kill()


@pytest.mark.gateway
def test_envoy_sends_the_token_as_initial_metadata_to_a_tcp_listener(tmp_path):
    try:
        envoy_binary()
    except EnvoyUnavailable as exc:
        require(False, str(exc))
    port = free_port()
    sidecar = start_sidecar(tmp_path, "--listen", f"127.0.0.1:{port}")
    envoys = []
    try:
        for name, token in (("with", sidecar.token()), ("without", None)):
            gw = free_port()
            spec = GatewaySpec(listen=f"127.0.0.1:{gw}", als_target=f"127.0.0.1:{port}", als_token=token,
                               admin_socket=str(tmp_path / f"{name}.sock"), node_id=f"envoy-{name}")
            envoy = EnvoyProcess(spec, DemoCredentials(), tmp_path / name)
            envoys.append(envoy)
            envoy.wait_ready()
            for i in range(3):
                try:
                    urllib.request.urlopen(urllib.request.Request(
                        f"http://127.0.0.1:{gw}/public/{i}", headers={"x-request-id": f"{name}-{i}"}), timeout=5)
                except urllib.error.HTTPError:
                    pass

        def ids() -> set[str]:
            return {r.event.request_id for r in sidecar.query().Query(query_pb2.QueryRequest(limit=100)).records}

        wait_until(lambda: {"with-0", "with-1", "with-2"} <= ids(), 20, "Envoy's records sent with the token")
        wait_until(lambda: stats(sidecar).get(("access.denied", "grpc"), 0) >= 1, 20, "the tokenless ALS denied")
        assert not {i for i in ids() if i.startswith("without-")}
    finally:
        for envoy in envoys:
            envoy.stop()
        sidecar.kill()


def test_socket_group_limits_both_unix_sockets_to_that_group(tmp_path):
    import grp

    group = grp.getgrnam("daemon")
    sidecar = start_sidecar(tmp_path, "--socket-group", "daemon", "--grpc-web-listen", f"unix:{tmp_path}/gw.sock")
    try:
        for path in (sidecar.address.removeprefix("unix:"), str(tmp_path / "gw.sock")):
            st = os.stat(path)
            assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, group.gr_gid), path
    finally:
        sidecar.kill()

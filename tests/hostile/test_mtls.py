"""Optional mTLS on the TCP listeners (gRPC, gRPC-Web): a client certificate signed by --tls-client-ca
stands in for the bearer token; without one the TLS handshake fails; with TLS but no client CA the token is
still required. A real `authwire serve`; certificates made here with `cryptography`."""

from __future__ import annotations

import datetime as dt
import http.client
import ipaddress
import ssl
import struct
import subprocess

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from authwire.v1 import ingest_pb2, ingest_pb2_grpc, query_pb2, query_pb2_grpc
from support import AUTHWIRE, auth_event, free_port, start_sidecar


def _cert(subject: str, issuer_key, issuer_name, key, ca: bool = False, san_ip: str | None = None):
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san_ip:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(san_ip))]),
                                        critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path, cert=None, key=None):
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("authwire test CA", ca_key, None, ca_key, ca=True)
    server_key, client_key, rogue_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    server = _cert("authwire", ca_key, ca.subject, server_key, san_ip="127.0.0.1")
    client = _cert("gateway-1", ca_key, ca.subject, client_key)
    rogue = _cert("rogue", rogue_key, None, rogue_key)  # self-signed: not from the CA
    return {"ca": _write(d / "ca.pem", ca), "cert": _write(d / "server.pem", server),
            "key": _write(d / "server.key", key=server_key), "client": _write(d / "client.pem", client),
            "client_key": _write(d / "client.key", key=client_key), "rogue": _write(d / "rogue.pem", rogue),
            "rogue_key": _write(d / "rogue.key", key=rogue_key)}


@pytest.fixture(scope="module")
def mtls_sidecar(tmp_path_factory, pki):
    tmp = tmp_path_factory.mktemp("mtls")
    port, web = free_port(), free_port()
    s = start_sidecar(tmp, "--listen", f"127.0.0.1:{port}", "--grpc-web-listen", f"127.0.0.1:{web}",
                      "--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"]),
                      "--tls-client-ca", str(pki["ca"]))
    s.tcp, s.web_port = f"127.0.0.1:{port}", web
    try:
        yield s
    finally:
        s.kill()


def _creds(pki, cert="client", key="client_key"):
    return grpc.ssl_channel_credentials(pki["ca"].read_bytes(), pki[key].read_bytes() if key else None,
                                        pki[cert].read_bytes() if cert else None)


def test_a_client_certificate_from_the_ca_replaces_the_token(mtls_sidecar, pki):
    with grpc.secure_channel(mtls_sidecar.tcp, _creds(pki)) as channel:
        assert ingest_pb2_grpc.IngestStub(channel).Report(ingest_pb2.ReportRequest(
            events=[auth_event("mtls-1")]), timeout=10).accepted == 1
        assert query_pb2_grpc.QueryStub(channel).Query(query_pb2.QueryRequest(limit=5), timeout=10).records


@pytest.mark.parametrize("cert, key", [(None, None), ("rogue", "rogue_key")])
def test_no_or_a_foreign_client_certificate_cannot_connect(mtls_sidecar, pki, cert, key):
    with grpc.secure_channel(mtls_sidecar.tcp, _creds(pki, cert, key)) as channel:
        with pytest.raises(grpc.RpcError) as err:
            query_pb2_grpc.QueryStub(channel).Query(query_pb2.QueryRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    with grpc.insecure_channel(mtls_sidecar.tcp) as channel:  # plaintext is not spoken at all
        with pytest.raises(grpc.RpcError):
            query_pb2_grpc.QueryStub(channel).Query(query_pb2.QueryRequest(), timeout=5)


def _web_post(sidecar, pki, cert: str | None, key: str | None) -> str:
    ctx = ssl.create_default_context(cafile=str(pki["ca"]))
    if cert:
        ctx.load_cert_chain(str(pki[cert]), str(pki[key]))
    body = ingest_pb2.ReportRequest(events=[auth_event("mtls-web")]).SerializeToString()
    conn = http.client.HTTPSConnection("127.0.0.1", sidecar.web_port, timeout=10, context=ctx)
    conn.request("POST", "/authwire.v1.Ingest/Report", body=struct.pack(">BI", 0, len(body)) + body,
                 headers={"Content-Type": "application/grpc-web+proto"})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.getheader("grpc-status", "0")


def test_grpc_web_over_mtls(mtls_sidecar, pki):
    assert _web_post(mtls_sidecar, pki, "client", "client_key") == "0"
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        _web_post(mtls_sidecar, pki, None, None)


def test_cli_speaks_mtls(mtls_sidecar, pki):
    result = subprocess.run([AUTHWIRE, "stats", "--server", mtls_sidecar.tcp, "--tls-ca", str(pki["ca"]),
                             "--tls-cert", str(pki["client"]), "--tls-key", str(pki["client_key"])],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "ingest.received" in result.stdout, result.stderr


def test_tls_without_a_client_ca_still_needs_the_token(tmp_path, pki):
    port = free_port()
    s = start_sidecar(tmp_path, "--listen", f"127.0.0.1:{port}", "--tls-cert", str(pki["cert"]),
                      "--tls-key", str(pki["key"]))
    try:
        creds = grpc.ssl_channel_credentials(pki["ca"].read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
            stub = query_pb2_grpc.QueryStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                stub.Query(query_pb2.QueryRequest(), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            stub.Query(query_pb2.QueryRequest(), metadata=[("authorization", f"Bearer {s.token()}")], timeout=10)
    finally:
        s.kill()


def test_token_off_with_mtls_serves_tcp(tmp_path, pki):
    port = free_port()
    s = start_sidecar(tmp_path, "--token-file", "off", "--listen", f"127.0.0.1:{port}", "--tls-cert",
                      str(pki["cert"]), "--tls-key", str(pki["key"]), "--tls-client-ca", str(pki["ca"]))
    try:
        with grpc.secure_channel(f"127.0.0.1:{port}", _creds(pki)) as channel:
            assert query_pb2_grpc.QueryStub(channel).Stats(query_pb2.StatsRequest(), timeout=10)
    finally:
        s.kill()

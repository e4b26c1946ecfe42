"""Tracepoint facts belong to the watched connection's own socket, not to whatever socket elsewhere on the
host has the same 4-tuple (issue 10 item 7): tracepoints fire for every network namespace."""

from __future__ import annotations

import socket

import pytest
from kernel_running import running_inspector, wait_connection

from authwire.demo.lab import Topology
from authwire.v1 import connection_pb2
from support import require_root_bcc, wait_until

pytestmark = pytest.mark.kernel

PORT = 8080
CLIENT_PORT = 47001
ST = connection_pb2


def _connect(topo: Topology, server: socket.socket) -> tuple[socket.socket, socket.socket]:
    client = topo.clients[0]
    sock = client.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((client.ip4, CLIENT_PORT))
    sock.settimeout(5)
    sock.connect((client.server_ip4, PORT))
    peer, _ = server.accept()
    peer.settimeout(5)
    return sock, peer


def _open_and_close_twin(twin: Topology, twin_server: socket.socket) -> None:
    """The same 4-tuple in the twin namespaces: connect, talk, close (FIN both ways, sockets -> CLOSE)."""
    sock, peer = _connect(twin, twin_server)
    sock.sendall(b"twin")
    assert peer.recv(4) == b"twin"
    peer.sendall(b"back")
    assert sock.recv(4) == b"back"
    sock.close()
    assert peer.recv(1) == b""
    peer.close()


def test_same_tuple_in_another_namespace_does_not_touch_the_watched_connection(program):
    require_root_bcc()
    # Both topologies use the same addresses (10.77.0.2 -> 10.77.0.1): one 4-tuple, two namespaces.
    with Topology(clients=1) as watched, Topology(clients=1) as twin, running_inspector(program, watched) as insp:
        client = watched.clients[0]
        src, dst = (client.ip4, CLIENT_PORT), (client.server_ip4, PORT)
        server = watched.server_socket(PORT)
        twin_server = twin.server_socket(PORT)
        sock, peer = _connect(watched, server)
        try:
            conn = wait_connection(insp, src, dst, state=ST.CONNECTION_STATE_ESTABLISHED)
            # Idle after the handshake: the server's socket has sent nothing through tc egress yet, so its
            # tracepoint facts wait aside (keyed by that socket), and the twin's are never taken for them.
            _open_and_close_twin(twin, twin_server)
            wait_until(lambda: insp.counters()["tracepoint_pending"] >= 4, 5, "the twin's socket facts")
            conn = wait_connection(insp, src, dst)
            assert conn.state == ST.CONNECTION_STATE_ESTABLISHED
            assert conn.server_socket_state not in ("CLOSE", "FIN_WAIT1", "TIME_WAIT", "LAST_ACK")
            assert conn.client_socket_state == ""   # the client's socket is in another namespace too

            # The watched server speaks: tc egress binds its socket, and the facts kept for it apply.
            peer.sendall(b"hello")
            assert sock.recv(5) == b"hello"
            conn = wait_until(lambda: (c := wait_connection(insp, src, dst)).server_socket_state and c, 5,
                              "the watched server socket's state")
            assert conn.server_socket_state == "ESTABLISHED"

            # Bound now: the twin's facts are recognised as another socket's and counted, not applied.
            foreign = insp.counters()["tracepoint_foreign"]
            _open_and_close_twin(twin, twin_server)
            wait_until(lambda: insp.counters()["tracepoint_foreign"] > foreign, 5, "the twin's facts, counted")
            conn = wait_connection(insp, src, dst)
            assert conn.state == ST.CONNECTION_STATE_ESTABLISHED
            assert conn.server_socket_state == "ESTABLISHED"
            assert conn.to_client.stack_retransmits == conn.to_server.stack_retransmits == 0

            # And the watched connection's own close still shows: the orphaned server socket goes FIN_WAIT1
            # -> FIN_WAIT2 -> CLOSE (a time-wait sock takes over its FIN_WAIT2 timer).
            peer.close()
            assert sock.recv(1) == b""
            wait_until(lambda: wait_connection(insp, src, dst).server_socket_state == "CLOSE", 5,
                       "the watched server socket's own close")
        finally:
            sock.close()
            peer.close()
            server.close()
            twin_server.close()

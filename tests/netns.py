"""Reusable network-namespace topology for tests: one server namespace, N client namespaces, one veth each.

    with Topology(clients=2, client_sysctls=[{"net.ipv4.tcp_timestamps": "0"}, {}]) as topo:
        srv = topo.server_socket(port=8080)                # listening socket inside the server netns
        c = topo.clients[0]
        sock = c.socket(socket.AF_INET)                    # socket inside client 0's netns
        sock.connect((c.server_ip4, 8080))
        topo.server_ifaces                                 # veth names inside the server netns

Client i's link: client side `cli{i}` (10.77.{i}.2/24, fd77:{i+1}::2/64) <-> server side `srv{i}`
(10.77.{i}.1/24, fd77:{i+1}::1/64), inside their namespaces, so nothing touches the host's network. Names
of namespaces include the pid and a counter so parallel or leftover runs never collide. Leaving the
`with` block (also on failure) deletes every namespace it made, which removes their veths and tc filters.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import socket
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_serial = itertools.count()
PREFIX = "awt"


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=30)


def in_netns(ns: str, fn: Callable[[], T]) -> T:
    """Run fn in a thread that joined namespace ns (setns affects only the calling thread)."""
    result: list = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def ns_socket(ns: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket that lives in namespace ns (usable from any thread afterwards)."""
    return in_netns(ns, lambda: socket.socket(family, kind))


@dataclass
class Client:
    index: int
    ns: str
    iface: str
    ip4: str
    ip6: str
    server_ip4: str
    server_ip6: str

    def socket(self, family: int = socket.AF_INET) -> socket.socket:
        return ns_socket(self.ns, family)

    def exec(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run("ip", "netns", "exec", self.ns, *args, check=check)


@dataclass
class Topology:
    clients: int | list[Client] = 1
    client_sysctls: list[dict[str, str]] | None = None
    server_sysctls: dict[str, str] = field(default_factory=dict)
    mtu: int = 1500
    server_ns: str = ""
    _made: list[str] = field(default_factory=list)

    def __enter__(self) -> Topology:
        count = self.clients if isinstance(self.clients, int) else len(self.clients)
        tag = f"{os.getpid()}-{next(_serial)}"
        self.server_ns = f"{PREFIX}-s-{tag}"
        try:
            self._add_ns(self.server_ns)
            made: list[Client] = []
            for i in range(count):
                ns = f"{PREFIX}-c{i}-{tag}"
                self._add_ns(ns)
                cli, srv = f"cli{i}", f"srv{i}"
                run("ip", "-n", ns, "link", "add", cli, "mtu", str(self.mtu), "type", "veth",
                    "peer", "name", srv, "netns", self.server_ns, "mtu", str(self.mtu))
                client = Client(i, ns, cli, f"10.77.{i}.2", f"fd77:{i + 1}::2", f"10.77.{i}.1", f"fd77:{i + 1}::1")
                run("ip", "-n", ns, "addr", "add", f"{client.ip4}/24", "dev", cli)
                run("ip", "-n", ns, "addr", "add", f"{client.ip6}/64", "dev", cli, "nodad")
                run("ip", "-n", self.server_ns, "addr", "add", f"{client.server_ip4}/24", "dev", srv)
                run("ip", "-n", self.server_ns, "addr", "add", f"{client.server_ip6}/64", "dev", srv, "nodad")
                run("ip", "-n", ns, "link", "set", cli, "up")
                run("ip", "-n", self.server_ns, "link", "set", srv, "up")
                sysctls = (self.client_sysctls or [{}] * count)[i] if self.client_sysctls else {}
                for k, v in sysctls.items():
                    run("ip", "netns", "exec", ns, "sysctl", "-qw", f"{k}={v}")
                made.append(client)
            for k, v in self.server_sysctls.items():
                run("ip", "netns", "exec", self.server_ns, "sysctl", "-qw", f"{k}={v}")
            self.clients = made
        except BaseException:
            self.close()
            raise
        return self

    def _add_ns(self, name: str) -> None:
        run("ip", "netns", "add", name)
        self._made.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")

    @property
    def client_list(self) -> list[Client]:
        assert isinstance(self.clients, list)
        return self.clients

    @property
    def server_ifaces(self) -> list[str]:
        return [f"srv{c.index}" for c in self.client_list]

    def server_socket(self, port: int = 0, family: int = socket.AF_INET, backlog: int = 64) -> socket.socket:
        """A listening TCP socket in the server namespace on every address (port 0 = any free port)."""
        def make() -> socket.socket:
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
            s.listen(backlog)
            return s
        return in_netns(self.server_ns, make)

    def server_exec(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run("ip", "netns", "exec", self.server_ns, *args, check=check)

    def close(self) -> None:
        for name in reversed(self._made):
            run("ip", "netns", "del", name, check=False)
        self._made.clear()

    def __exit__(self, *exc: object) -> None:
        self.close()


def leftover_namespaces(prefix: str = PREFIX) -> list[str]:
    """Namespaces of this module still present (tests assert none remain from their own pid)."""
    out = run("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix + "-")]

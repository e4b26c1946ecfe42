"""Network-namespace labs: the one place authwire builds test hosts (demo, tests and benches).

Two shapes, built from the same primitives below (namespace, veth, route, sysctl, teardown):

- `Lab` — the demo's world: a gateway host, client hosts with distinct TCP stacks (per-namespace sysctls
  for initial TTL, window scaling, SACK, timestamps; link MTU sets the MSS: MTU - 40 for IPv4), optionally
  routers between a client and the gateway (each decrements the TTL the gateway sees), and an upstream.
  Client i's link to the gateway is 10.<net>.<i>.0/24 (gateway .1, client .2); a client `hops` routers away
  sits on 10.<net>.<100+10i>.0/24 instead; the upstream is 10.<net>.200.2 behind .200.1.
- `Topology` — the kernel tests' world: one server namespace and N client namespaces, one veth each,
  dual-stack: client i is `cli{i}` (10.77.{i}.2/24, fd77:{i+1}::2/64) <-> `srv{i}` (10.77.{i}.1/24,
  fd77:{i+1}::1/64) in the server namespace, plus sockets made inside a namespace.

Each client has its own veth to the gateway/server namespace, so the kernel inspector there sees every
client's SYN exactly as that client's stack sent it. Names include the pid (and a counter) so parallel or
leftover runs never collide; close() (also on failure) removes every namespace it made, which removes their
veths and tc filters too. Nothing here touches the host's own network.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import socket
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from pyroute2 import IPRoute, NetNS, netns

PREFIX = "awl"  # authwire lab; every namespace made here starts with it
T = TypeVar("T")
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_serial = itertools.count()


# --- primitives -------------------------------------------------------------------------------------
def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """A bounded command (ip, tc, sysctl ...) with captured output."""
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=30)


def new_namespace(name: str, made: list[str]) -> None:
    """Create a named network namespace with lo up; record it in `made` for teardown."""
    netns.create(name)
    made.append(name)
    with NetNS(name) as ns:
        ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")


def veth(ns_a: str, if_a: str, addrs_a: list[str], ns_b: str, if_b: str, addrs_b: list[str], mtu: int) -> None:
    """A veth pair between two namespaces with the given "ip/prefix" addresses on each end, up.

    IPv6 addresses skip duplicate address detection (accept_dad=0 before they are added), so they are
    usable at once instead of after ~1-2 s of tentative state.
    """
    with IPRoute() as ipr:
        ipr.link("add", ifname=if_a, kind="veth", peer={"ifname": if_b, "net_ns_fd": ns_b})
        ipr.link("set", index=ipr.link_lookup(ifname=if_a)[0], net_ns_fd=ns_a)
    for ns_name, ifname, addrs in ((ns_a, if_a, addrs_a), (ns_b, if_b, addrs_b)):
        if any(":" in a for a in addrs):
            sysctl(ns_name, f"net/ipv6/conf/{ifname}/accept_dad", "0")
        with NetNS(ns_name) as ns:
            i = ns.link_lookup(ifname=ifname)[0]
            for addr in addrs:
                ip, prefix = addr.split("/")
                ns.addr("add", index=i, address=ip, prefixlen=int(prefix))
            ns.link("set", index=i, state="up", mtu=mtu)


def route(ns_name: str, dst: str, gateway: str) -> None:
    with NetNS(ns_name) as ns:
        ns.route("add", dst=dst, gateway=gateway)


def sysctl(ns_name: str, key: str, value: str) -> None:
    """Write /proc/sys/<key> (slashes or dots) inside a namespace."""
    # setns() moves only this thread; /proc/sys/net then shows that namespace's settings.
    key = key.replace(".", "/") if "/" not in key else key
    netns.pushns(ns_name)
    try:
        with open(f"/proc/sys/{key}", "w") as f:
            f.write(value)
    finally:
        netns.popns()


def remove_namespaces(names: list[str]) -> None:
    for name in reversed(names):
        with contextlib.suppress(OSError, FileNotFoundError):
            netns.remove(name)


def call_in_netns(ns: str, fn: Callable[[], T]) -> T:
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
    return call_in_netns(ns, lambda: socket.socket(family, kind))


def nsenter_argv(ns_name: str, command: list[str]) -> list[str]:
    """argv that runs command in a named network namespace, keeping the host's mounts.

    Not `ip netns exec`: it also enters a new mount namespace and remounts /sys, which hides tracefs,
    debugfs and bpffs from the kernel inspector (bcc then finds no tracepoints).
    """
    return ["nsenter", f"--net=/run/netns/{ns_name}", "--", *command]


@dataclass(frozen=True)
class ClientStack:
    """How one client host's TCP/IP stack shapes its SYN."""

    name: str
    ttl: int = 64
    mtu: int = 1500              # advertised MSS = mtu - 40
    window_scaling: bool = True
    sack: bool = True
    timestamps: bool = True
    hops: int = 0                # routers between the host and the gateway (each decrements the TTL)
    description: str = ""

    @property
    def mss(self) -> int:
        return self.mtu - 40


@dataclass
class Host:
    name: str          # short label, e.g. "client1"
    netns: str         # namespace name
    ip: str
    gateway_ip: str    # the gateway's address on this host's link
    gateway_iface: str  # the gateway-side veth (where the inspector attaches)
    stack: ClientStack | None = None


@dataclass
class Lab:
    tag: str = field(default_factory=lambda: str(os.getpid()))
    net: int = 77  # second octet of the 10.x.0.0/16 the lab uses
    gateway_ns: str = ""
    clients: list[Host] = field(default_factory=list)
    upstream: Host | None = None
    _namespaces: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.gateway_ns = f"{PREFIX}{self.tag}gw"

    # --- building ---------------------------------------------------------------------------------
    def create_gateway(self) -> None:
        self._new_ns(self.gateway_ns)
        self._sysctl(self.gateway_ns, "net/ipv4/ip_forward", "1")

    def add_client(self, stack: ClientStack) -> Host:
        """A client host `stack.hops` routers away from the gateway (0 = on the gateway's link)."""
        index = len(self.clients) + 1
        short = f"c{index}"
        host_ns = f"{PREFIX}{self.tag}{short}"
        self._new_ns(host_ns)
        routers = [f"{PREFIX}{self.tag}{short}r{j}" for j in range(1, stack.hops + 1)]
        for router in routers:
            self._new_ns(router)
            self._sysctl(router, "net/ipv4/ip_forward", "1")
        chain = [host_ns, *routers]
        # Links inside the chain: chain[j] (.2) <-> chain[j+1] (.1) on 10.<net>.<100 + 10*index + j>.0/24;
        # the last element's link to the gateway is 10.<net>.<index>.0/24 like a directly attached host.
        def subnet(j: int) -> str:
            return f"10.{self.net}.{100 + 10 * index + j}"

        for j in range(len(chain) - 1):
            self._veth(chain[j], f"{PREFIX}{self.tag}{short}x{j}", f"{subnet(j)}.2",
                       chain[j + 1], f"{PREFIX}{self.tag}{short}y{j}", f"{subnet(j)}.1", stack.mtu)
            self._route(chain[j], "0.0.0.0/0", f"{subnet(j)}.1")
        for k in range(2, len(chain)):  # routers not on the host's subnet: the way back to it
            self._route(chain[k], f"{subnet(0)}.0/24", f"{subnet(k - 1)}.2")
        gw_if = f"{PREFIX}{self.tag}g{short}"
        gw_ip, last_ip = f"10.{self.net}.{index}.1", f"10.{self.net}.{index}.2"
        self._veth(self.gateway_ns, gw_if, gw_ip, chain[-1], f"{PREFIX}{self.tag}{short}", last_ip, stack.mtu)
        self._route(chain[-1], "0.0.0.0/0", gw_ip)
        if routers:
            self._route(self.gateway_ns, f"{subnet(0)}.0/24", last_ip)
        host_ip = f"{subnet(0)}.2" if routers else last_ip
        host = Host(stack.name, host_ns, host_ip, gw_ip, gw_if, stack)
        self._sysctl(host_ns, "net/ipv4/ip_default_ttl", str(stack.ttl))
        self._sysctl(host_ns, "net/ipv4/tcp_window_scaling", "1" if stack.window_scaling else "0")
        self._sysctl(host_ns, "net/ipv4/tcp_sack", "1" if stack.sack else "0")
        self._sysctl(host_ns, "net/ipv4/tcp_timestamps", "1" if stack.timestamps else "0")
        self.clients.append(host)
        return host

    def add_addresses(self, host: Host, count: int) -> list[str]:
        """`count` more IPv4 addresses for a client on the gateway's link (10.<net>.<i>.10 and up): one host,
        one TCP stack, many source IPs, as a NAT pool or an attacker rotating addresses has."""
        if host.stack is None or host.stack.hops or not 1 <= count <= 200:
            raise ValueError("extra addresses: only for a directly attached client, 1..200 of them")
        index = self.clients.index(host) + 1
        prefix = host.ip.rpartition(".")[0]
        added = [f"{prefix}.{10 + j}" for j in range(count)]
        with NetNS(host.netns) as ns:
            i = ns.link_lookup(ifname=f"{PREFIX}{self.tag}c{index}")[0]
            for ip in added:
                ns.addr("add", index=i, address=ip, prefixlen=24)
        return added

    def add_upstream(self) -> Host:
        ns_name = f"{PREFIX}{self.tag}up"
        self._new_ns(ns_name)
        gw_if, gw_ip, ip = f"{PREFIX}{self.tag}gup", f"10.{self.net}.200.1", f"10.{self.net}.200.2"
        self._veth(self.gateway_ns, gw_if, gw_ip, ns_name, f"{PREFIX}{self.tag}up", ip, 1500)
        self._route(ns_name, "0.0.0.0/0", gw_ip)
        self.upstream = Host("upstream", ns_name, ip, gw_ip, gw_if)
        return self.upstream

    def _new_ns(self, name: str) -> None:
        new_namespace(name, self._namespaces)

    @staticmethod
    def _veth(ns_a: str, if_a: str, ip_a: str, ns_b: str, if_b: str, ip_b: str, mtu: int) -> None:
        veth(ns_a, if_a, [f"{ip_a}/24"], ns_b, if_b, [f"{ip_b}/24"], mtu)

    _route = staticmethod(route)
    _sysctl = staticmethod(sysctl)

    # --- using --------------------------------------------------------------------------------------
    @property
    def gateway_ifaces(self) -> list[str]:
        return [h.gateway_iface for h in self.clients]

    @staticmethod
    def argv(ns_name: str, command: list[str]) -> list[str]:
        return nsenter_argv(ns_name, command)

    def client_by_ip(self, ip: str) -> Host | None:
        return next((h for h in self.clients if h.ip == ip), None)

    # --- tearing down -------------------------------------------------------------------------------
    def close(self) -> None:
        """Remove every namespace this lab made (their veths and tc filters go with them)."""
        remove_namespaces(self._namespaces)
        self._namespaces.clear()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def leftover_namespaces(prefix: str = PREFIX) -> list[str]:
    """Lab namespaces whose creating process is gone (a crashed run): name = prefix + pid + suffix."""
    stale = []
    for name in netns.listnetns():
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix):]
        pid = rest[:len(rest) - len(rest.lstrip("0123456789"))]
        if pid and not os.path.exists(f"/proc/{pid}"):
            stale.append(name)
    return stale


def processes_in_namespace(ns_name: str) -> list[int]:
    """Pids still running inside a named namespace (`ip netns pids`)."""
    result = subprocess.run(["ip", "netns", "pids", ns_name], capture_output=True, text=True)
    return [int(p) for p in result.stdout.split()]


# --- the kernel tests' topology -----------------------------------------------------------------------
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
    """One server namespace, N client namespaces (see the module docstring for addresses).

        with Topology(clients=2, client_sysctls=[{"net.ipv4.tcp_timestamps": "0"}, {}]) as topo:
            srv = topo.server_socket(port=8080)        # listening socket inside the server netns
            sock = topo.clients[0].socket()             # socket inside client 0's netns
            topo.server_ifaces                          # veth names inside the server netns
    """

    clients: int | list[Client] = 1
    client_sysctls: list[dict[str, str]] | None = None
    server_sysctls: dict[str, str] = field(default_factory=dict)
    mtu: int = 1500
    server_ns: str = ""
    _made: list[str] = field(default_factory=list)

    def __enter__(self) -> Topology:
        count = self.clients if isinstance(self.clients, int) else len(self.clients)
        tag = f"{os.getpid()}t{next(_serial)}"
        self.server_ns = f"{PREFIX}{tag}s"
        try:
            new_namespace(self.server_ns, self._made)
            made: list[Client] = []
            for i in range(count):
                ns = f"{PREFIX}{tag}c{i}"
                new_namespace(ns, self._made)
                client = Client(i, ns, f"cli{i}", f"10.77.{i}.2", f"fd77:{i + 1}::2",
                                f"10.77.{i}.1", f"fd77:{i + 1}::1")
                veth(ns, client.iface, [f"{client.ip4}/24", f"{client.ip6}/64"],
                     self.server_ns, f"srv{i}", [f"{client.server_ip4}/24", f"{client.server_ip6}/64"], self.mtu)
                for k, v in ((self.client_sysctls or [{}] * count)[i] if self.client_sysctls else {}).items():
                    sysctl(ns, k, v)
                made.append(client)
            for k, v in self.server_sysctls.items():
                sysctl(self.server_ns, k, v)
            self.clients = made
        except BaseException:
            self.close()
            raise
        return self

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
        return call_in_netns(self.server_ns, make)

    def server_exec(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run("ip", "netns", "exec", self.server_ns, *args, check=check)

    def close(self) -> None:
        remove_namespaces(self._made)
        self._made.clear()

    def __exit__(self, *exc: object) -> None:
        self.close()


def namespaces_of_this_process(prefix: str = PREFIX) -> list[str]:
    """Namespaces this process made and still holds (tests assert none remain after a failure)."""
    return [n for n in netns.listnetns() if n.startswith(f"{prefix}{os.getpid()}")]

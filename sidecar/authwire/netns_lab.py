"""A small network-namespace lab: a gateway host, client hosts with distinct TCP stacks, an upstream.

Used by `authwire demo` and by the Envoy end-to-end tests (the demo cannot import from tests/). Each
client host has its own veth link to the gateway namespace, so the gateway side has one interface per
client and the kernel inspector sees every client's SYN exactly as that client's stack sent it. A client's
stack differs by per-namespace sysctls (initial TTL, window scaling, SACK, timestamps) and by the link MTU
(which sets the MSS it advertises: MTU - 40 for IPv4).

Addresses: client i's link to the gateway is 10.<net>.<i>.0/24 (gateway .1, client .2). A client `hops`
routers away sits on 10.<net>.<100+10i>.0/24 instead, the routers in between (each decrements the TTL the
gateway sees); the last router holds 10.<net>.<i>.2. The upstream is 10.<net>.200.2 behind .200.1.
Names include a tag (the pid by default) so parallel or leftover runs never collide; close() removes
every namespace it made, which also removes their veths and tc filters.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from dataclasses import dataclass, field

from pyroute2 import IPRoute, NetNS, netns

PREFIX = "awl"  # authwire lab; distinct from other tests' namespace names


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

    def add_upstream(self) -> Host:
        ns_name = f"{PREFIX}{self.tag}up"
        self._new_ns(ns_name)
        gw_if, gw_ip, ip = f"{PREFIX}{self.tag}gup", f"10.{self.net}.200.1", f"10.{self.net}.200.2"
        self._veth(self.gateway_ns, gw_if, gw_ip, ns_name, f"{PREFIX}{self.tag}up", ip, 1500)
        self._route(ns_name, "0.0.0.0/0", gw_ip)
        self.upstream = Host("upstream", ns_name, ip, gw_ip, gw_if)
        return self.upstream

    def _new_ns(self, name: str) -> None:
        netns.create(name)
        self._namespaces.append(name)
        with NetNS(name) as ns:
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")

    @staticmethod
    def _veth(ns_a: str, if_a: str, ip_a: str, ns_b: str, if_b: str, ip_b: str, mtu: int) -> None:
        """A veth pair between two namespaces, /24 addresses on both ends, up."""
        with IPRoute() as ipr:
            ipr.link("add", ifname=if_a, kind="veth", peer={"ifname": if_b, "net_ns_fd": ns_b})
            ipr.link("set", index=ipr.link_lookup(ifname=if_a)[0], net_ns_fd=ns_a)
        for ns_name, ifname, ip in ((ns_a, if_a, ip_a), (ns_b, if_b, ip_b)):
            with NetNS(ns_name) as ns:
                i = ns.link_lookup(ifname=ifname)[0]
                ns.addr("add", index=i, address=ip, prefixlen=24)
                ns.link("set", index=i, state="up", mtu=mtu)

    @staticmethod
    def _route(ns_name: str, dst: str, gateway: str) -> None:
        with NetNS(ns_name) as ns:
            ns.route("add", dst=dst, gateway=gateway)

    @staticmethod
    def _sysctl(ns_name: str, key: str, value: str) -> None:
        # setns() moves only this thread; /proc/sys/net then shows that namespace's settings.
        netns.pushns(ns_name)
        try:
            with open(f"/proc/sys/{key}", "w") as f:
                f.write(value)
        finally:
            netns.popns()

    # --- using --------------------------------------------------------------------------------------
    @property
    def gateway_ifaces(self) -> list[str]:
        return [h.gateway_iface for h in self.clients]

    @staticmethod
    def argv(ns_name: str, command: list[str]) -> list[str]:
        return in_netns(ns_name, command)

    def client_by_ip(self, ip: str) -> Host | None:
        return next((h for h in self.clients if h.ip == ip), None)

    # --- tearing down -------------------------------------------------------------------------------
    def close(self) -> None:
        """Remove every namespace this lab made (their veths and tc filters go with them)."""
        for name in reversed(self._namespaces):
            with contextlib.suppress(OSError, FileNotFoundError):
                netns.remove(name)
        self._namespaces.clear()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def in_netns(ns_name: str, command: list[str]) -> list[str]:
    """Run command in a named network namespace, keeping the host's mounts.

    Not `ip netns exec`: it also enters a new mount namespace and remounts /sys, which hides tracefs,
    debugfs and bpffs from the kernel inspector (bcc then finds no tracepoints).
    """
    return ["nsenter", f"--net=/run/netns/{ns_name}", "--", *command]


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


def remove_namespaces(names: list[str]) -> None:
    for name in names:
        with contextlib.suppress(OSError, FileNotFoundError):
            netns.remove(name)


def processes_in_namespace(ns_name: str) -> list[int]:
    """Pids still running inside a named namespace (`ip netns pids`)."""
    result = subprocess.run(["ip", "netns", "pids", ns_name], capture_output=True, text=True)
    return [int(p) for p in result.stdout.split()]

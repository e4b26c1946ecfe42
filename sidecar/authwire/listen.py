"""Listen addresses: the one parser for every listener (gRPC, gRPC-Web, HTTP) and what is local.

`unix:/path` or `HOST:PORT` / `[V6]:PORT`. The access rule (authwire.access) needs to know whether a
listener is reachable only from this host: unix sockets rely on their file mode, loopback TCP still needs
the token (any local user can connect), anything else needs the token or mTLS and refuses to start without.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True)
class ListenAddress:
    text: str               # as configured, for messages
    kind: str               # "unix" or "tcp"
    path: str = ""          # unix
    host: str = ""          # tcp, without brackets
    port: int = 0           # tcp; 0 = any free port

    @property
    def is_unix(self) -> bool:
        return self.kind == "unix"

    @property
    def is_loopback(self) -> bool:
        """True for 127.0.0.0/8, ::1 and `localhost`; False for wildcard and every other address."""
        if self.kind != "tcp":
            return False
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_listen_address(address: str, setting: str) -> ListenAddress:
    """Parse one listen address; raises ValueError naming the setting and the address."""
    if address.startswith("unix:"):
        path = address[len("unix:"):]
        if not path:
            raise ValueError(f"{setting} {address!r}: empty unix socket path")
        return ListenAddress(address, "unix", path=path)
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"{setting} {address!r}: want HOST:PORT, [V6]:PORT or unix:/path")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"{setting} {address!r}: port {port} outside 0..65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise ValueError(f"{setting} {address!r}: empty host (use 0.0.0.0 or [::] for every address)")
    return ListenAddress(address, "tcp", host=host, port=port)

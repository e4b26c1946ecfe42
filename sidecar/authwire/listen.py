"""Listen addresses: the one parser for every listener (gRPC, gRPC-Web, HTTP) and what is local.

`unix:/path` or `HOST:PORT` / `[V6]:PORT`. The access rule (authwire.access) needs to know whether a
listener is reachable only from this host: unix sockets rely on their file mode, loopback TCP still needs
the token (any local user can connect), anything else needs the token or mTLS and refuses to start without.
"""

from __future__ import annotations

import errno
import fcntl
import grp
import ipaddress
import os
import stat
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
        return self.kind == "tcp" and is_loopback_host(self.host)


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 or `localhost` (a host name, not resolved: only that one name is trusted)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
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


class ListenerInUse(OSError):
    """Another process holds this listen address; the message names it."""


class ListenerLock:
    """An exclusive claim on one unix socket path, held for the life of the process.

    A lock file beside the socket (`PATH.lock`, flock'd, never removed: removing a lock file races with
    the next taker) decides who owns PATH, so a second `authwire serve` cannot delete a running one's
    socket. Only a socket is ever unlinked at PATH (the stale one of a crashed run), never another file.
    TCP needs no file: no listener sets SO_REUSEPORT, so the kernel refuses a second bind of the same
    host:port (wildcard included) and the bind error names the address.
    """

    def __init__(self, address: ListenAddress, setting: str) -> None:
        self.address = address
        self._fd: int | None = None
        if not address.is_unix:
            return
        path = address.path
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        lock_path = path + ".lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ListenerInUse(errno.EADDRINUSE, f"{setting} {address.text}: in use by another authwire serve "
                                f"(it holds {lock_path}); stop it or choose another path") from None
        self._fd = fd
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            self.release()
            raise ListenerInUse(errno.EEXIST, f"{setting} {address.text}: {path} exists and is not a socket; "
                                "not removing it (choose another path or remove it yourself)")
        os.unlink(path)  # a stale socket: we hold the lock, so no live sidecar is behind it

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def claim(address: str, setting: str) -> ListenerLock:
    """Parse address and claim it (see ListenerLock); raises ValueError or ListenerInUse naming it."""
    return ListenerLock(parse_listen_address(address, setting), setting)


def set_socket_access(path: str, mode: int, group: str = "") -> None:
    """chmod a unix socket; with group (name or number) also chgrp it and allow no one else (mode & 0o770).

    The socket's file mode is the access rule on a unix socket: connect() needs write permission.
    """
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise ValueError(f"socket_group {group!r}: no such group") from None
        os.chown(path, -1, gid)
        mode &= 0o770
    os.chmod(path, mode)

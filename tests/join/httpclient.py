"""Test clients that live in a client network namespace: each socket is created inside the namespace
(so its SYN carries that namespace's stack: TTL, MSS, TCP options sysctls) and then driven from the
test's own asyncio loop. A minimal HTTP/1.1 keep-alive client on top, so the test knows exactly which
local port each request left from.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import struct
import threading
from dataclasses import dataclass, field

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def socket_in_netns(netns: str, family: int = socket.AF_INET, *, ttl: int | None = None,
                    mss: int | None = None, bind_port: int | None = None, bind_ip: str = "") -> socket.socket:
    """A TCP socket created inside network namespace `netns` (setns in a short-lived thread: the
    namespace is per thread, the socket keeps it for life). Optional per-socket TTL / MSS / fixed port."""
    out: dict[str, object] = {}

    def work() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({netns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            s = socket.socket(family, socket.SOCK_STREAM)
            if ttl is not None:
                if family == socket.AF_INET:
                    s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
                else:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
            if mss is not None:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
            if bind_port is not None:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((bind_ip, bind_port))
            out["sock"] = s
        except BaseException as exc:  # handed to the caller's thread
            out["error"] = exc

    t = threading.Thread(target=work, name=f"setns-{netns}")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out["sock"]  # type: ignore[return-value]


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class KeepAliveClient:
    """One keep-alive HTTP/1.1 connection from a namespace."""

    netns: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    local: tuple[str, int]
    sent: int = 0
    request_ids: list[str] = field(default_factory=list)

    @classmethod
    async def connect(cls, netns: str, host: str, port: int, **socket_options) -> KeepAliveClient:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket_in_netns(netns, family, **socket_options)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (host, port)), 10)
        except BaseException:
            sock.close()
            raise
        reader, writer = await asyncio.open_connection(sock=sock)
        local = sock.getsockname()[:2]
        return cls(netns, reader, writer, (local[0], local[1]))

    async def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                      body: bytes = b"") -> Response:
        head = [f"{method} {path} HTTP/1.1", "Host: api.test", "Connection: keep-alive",
                f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await self.writer.drain()
        self.sent += 1
        status_line = await asyncio.wait_for(self.reader.readline(), 20)
        if not status_line:
            raise ConnectionError("server closed the connection")
        status = int(status_line.split()[1])
        response_headers: dict[str, str] = {}
        while True:
            line = (await self.reader.readline()).decode().rstrip("\r\n")
            if not line:
                break
            name, _, value = line.partition(":")
            response_headers[name.strip().lower()] = value.strip()
        length = int(response_headers.get("content-length", "0"))
        data = await self.reader.readexactly(length) if length else b""
        return Response(status, response_headers, data)

    async def close(self, reset: bool = False) -> None:
        """Close; reset=True sends RST (SO_LINGER 0), leaving no TIME_WAIT so the port is free at once."""
        sock = self.writer.get_extra_info("socket")
        if reset and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass

"""A real Debian nginx + ngx_lua as a child process: temp prefix, temp config, one process, loopback port.

Used by the gateway tests and bench/plugin_overhead.py. `daemon off; master_process off` keeps nginx one
process that is ours to kill; the caller stops it in a finally.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from support import free_port

ROOT = Path(__file__).resolve().parents[2]
LUA_DIR = ROOT / "gateway-plugins" / "lua"
ADAPTER_DIRS = (ROOT / "gateway-plugins" / "apisix", ROOT / "gateway-plugins" / "kong")
STANDINS = Path(__file__).resolve().parent / "standins"
TEST_LUA = Path(__file__).resolve().parent / "lua"
MODULES = Path("/usr/lib/nginx/modules")
LUA_MODULES = ("ndk_http_module.so", "ngx_http_lua_module.so")
ERROR_LEVELS = ("[error]", "[crit]", "[alert]", "[emerg]")
# authwire.event.packed_map(): every variable the event needs but Host and User-Agent in one (uri last)
PACKED_MAP = ("map $request_id $authwire_vars { volatile; default \"$realip_remote_addr|$realip_remote_port|"
              "$remote_addr|$remote_port|$server_addr|$server_port|$connection|$connection_requests|$request_id|"
              "$request_method|$status|$request_length|$bytes_sent|$uri\"; }")


def missing() -> str | None:
    """Why nginx + ngx_lua cannot run here, or None."""
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        return "needs nginx (apt-get install nginx libnginx-mod-http-lua lua-resty-core lua-cjson)"
    for module in LUA_MODULES:
        if not (MODULES / module).exists():
            return f"needs {MODULES / module} (apt-get install libnginx-mod-http-lua)"
    return None


@dataclass
class Nginx:
    process: subprocess.Popen
    prefix: Path
    port: int

    @property
    def error_log(self) -> Path:
        return self.prefix / "logs" / "error.log"

    def log_text(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""

    def error_lines(self) -> list[str]:
        return [line for line in self.log_text().splitlines() if any(lv in line for lv in ERROR_LEVELS)]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: lets timers flush
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def render(http_body: str, prefix: Path, port: int, *, error_level: str = "notice",
           worker_connections: int = 1024) -> str:
    lua_path = ";".join(f"{d}/?.lua" for d in (LUA_DIR, *ADAPTER_DIRS, STANDINS, TEST_LUA, prefix / "lua")) + ";;"
    loads = "\n".join(f"load_module {MODULES / m};" for m in LUA_MODULES)
    temp = "\n".join(f"  {kind}_temp_path {prefix}/tmp/{kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""{loads}
daemon off;
master_process off;
worker_processes 1;
error_log {prefix}/logs/error.log {error_level};
pid {prefix}/logs/nginx.pid;
events {{ worker_connections {worker_connections}; }}
http {{
  access_log off;
{temp}
  lua_package_path "{lua_path}";
  # APISIX and Kong both turn cosocket error logging off; our reporter logs failures itself, rate-limited
  lua_socket_log_errors off;
{http_body.replace("{port}", str(port))}
}}
"""


def start_nginx(prefix: Path, http_body: str, *, lua_files: dict[str, str] | None = None,
                error_level: str = "notice", ready_timeout: float = 10) -> Nginx:
    """Start nginx with `http_body` inside http {} ("{port}" is replaced by the listen port).

    lua_files: name -> source written under prefix/lua/ (on lua_package_path), e.g. per-test settings.
    """
    for sub in ("logs", "tmp", "lua", "conf"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    for name, source in (lua_files or {}).items():
        (prefix / "lua" / name).write_text(source)
    last_error = ""
    for _attempt in range(3):  # the free port can be taken between our probe and nginx's bind
        port = free_port()
        conf = prefix / "conf" / "nginx.conf"
        conf.write_text(render(http_body, prefix, port, error_level=error_level))
        log = open(prefix / "logs" / "stderr.log", "ab")
        process = subprocess.Popen(["nginx", "-p", str(prefix), "-c", str(conf)], stdout=log, stderr=log)
        log.close()
        server = Nginx(process, prefix, port)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return server
            except OSError:
                time.sleep(0.02)
        server.stop()
        last_error = (prefix / "logs" / "stderr.log").read_text(errors="replace") + server.log_text()
        if "Address already in use" not in last_error:
            break
    raise AssertionError(f"nginx did not start:\n{last_error[-3000:]}")


_STATUS = re.compile(rb"^HTTP/1\.[01] (\d{3})")


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """(head, what followed it) of one HTTP message read from sock: up to the blank line, or to EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def http_request(port: int, path: str, headers: dict[str, str] | None = None, *,
                 sock: socket.socket | None = None, close: bool = True,
                 host: str | None = None) -> tuple[int, bytes, tuple[str, int]]:
    """One HTTP/1.1 request on `sock` (or a new connection). Returns (status, body, client's own address).

    The client's address comes from getsockname(): what the gateway must report as the TCP peer.
    """
    own = sock is None
    if sock is None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        lines = [f"GET {path} HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}", "User-Agent: authwire-test/1"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if close:
            lines.append("Connection: close")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head, body = read_head(sock)
        match = _STATUS.match(head)
        assert match, f"not an HTTP response: {head[:100]!r}"
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        if length:
            while len(body) < int(length.group(1)):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
        elif re.search(rb"(?im)^transfer-encoding:\s*chunked", head):
            while not body.endswith(b"0\r\n\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
            body = _dechunk(body)
        return int(match.group(1)), body, sock.getsockname()[:2]
    finally:
        if own and close:
            sock.close()


def _dechunk(raw: bytes) -> bytes:
    out, pos = b"", 0
    while True:
        end = raw.index(b"\r\n", pos)
        size = int(raw[pos:end].split(b";")[0], 16)
        if size == 0:
            return out
        out += raw[end + 2:end + 2 + size]
        pos = end + 2 + size + 2


def kill_leftover(pid_file: Path) -> None:
    """Best effort: kill the nginx whose pid file is ours (never by name)."""
    try:
        os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        pass

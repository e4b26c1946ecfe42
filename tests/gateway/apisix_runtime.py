"""A real Apache APISIX 3.18 (the runtime in ../shared/apisix) as a child of a test or bench.

The runtime is found through AUTHWIRE_APISIX_HOME (default: ../shared/apisix next to the repository
checkout; .ci/run sets it). `bin/apisix-run start|reload|stop` boots it in standalone mode under a short
temp prefix: routes, consumers and global rules come from an apisix.yaml that the caller passes as a dict.
The Control API is off unless asked for (its default 127.0.0.1:9090 collides with Prometheus); every port
is a free one. The upstream is a `server` block in the same nginx (http_configuration_snippet), so one
process tree serves both.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_LUA_PATH = f"{ROOT}/gateway-plugins/apisix/?.lua;{ROOT}/gateway-plugins/lua/?.lua"
HOW_TO_GET = ("a real APISIX 3.18 runtime: set AUTHWIRE_APISIX_HOME to the bundle (the repository's ../shared/apisix, "
              "see its README.md: Debian packages in lib/debian-packages.txt, `bin/apisix-run check`)")
# error.log lines the runtime always has (../shared/apisix/README.md "Known limitations")
EXPECTED_ERRORS = ("failed to enable privileged_agent", "setrlimit(RLIMIT_NOFILE")
ERROR_LEVELS = ("[error]", "[crit]", "[alert]", "[emerg]")
UPSTREAM_SNIPPET = """
server {{
  listen {ip}:{port};
  access_log off;
  keepalive_requests 100000;
  location / {{ content_by_lua_block {{ ngx.say("upstream ok") }} }}
}}
"""


def home() -> Path:
    value = os.environ.get("AUTHWIRE_APISIX_HOME")
    return Path(value) if value else ROOT.parent / "shared" / "apisix"


def missing() -> str | None:
    """Why a real APISIX cannot run here, or None."""
    run = home() / "bin" / "apisix-run"
    if not run.exists():
        return f"no {run}: needs {HOW_TO_GET}"
    check = subprocess.run([str(run), "check"], capture_output=True, text=True, timeout=60)
    if check.returncode != 0:
        return f"{run} check failed:\n{check.stdout}{check.stderr}"
    return None


def free_port(ip: str = "127.0.0.1", netns_argv: list[str] | None = None) -> int:
    """A free TCP port (in the caller's namespace: inside another one the kernel picks it the same way)."""
    import socket

    if netns_argv:
        out = subprocess.run([*netns_argv, "python3", "-c",
                              "import socket; s=socket.socket(); s.bind(('0.0.0.0',0)); print(s.getsockname()[1])"],
                             capture_output=True, text=True, check=True, timeout=30)
        return int(out.stdout)
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


@dataclass
class Apisix:
    """A running APISIX under `prefix` (apisix-run's prefix)."""

    prefix: Path
    workdir: Path
    port: int
    upstream: str
    control_port: int | None
    netns_argv: list[str] = field(default_factory=list)

    @property
    def error_log(self) -> Path:
        return self.prefix / "logs" / "error.log"

    def log_text(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""

    def error_lines(self) -> list[str]:
        return [line for line in self.log_text().splitlines()
                if any(lv in line for lv in ERROR_LEVELS) and not any(e in line for e in EXPECTED_ERRORS)]

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [*self.netns_argv, str(home() / "bin" / "apisix-run"), *args, "--prefix", str(self.prefix)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise AssertionError(f"apisix-run {args[0]} failed ({result.returncode}):\n{result.stdout}"
                                 f"{result.stderr}")

    def reload(self, routes: dict) -> None:
        """Install new routes/consumers/global rules (standalone re-read, ~1-1.5 s)."""
        path = self.workdir / "apisix.yaml"
        write_routes(path, routes)
        self._run("reload", "--routes", str(path))

    def stop(self) -> None:
        try:
            self._run("stop", timeout=30)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


def write_routes(path: Path, routes: dict) -> None:
    path.write_text(yaml.safe_dump(routes, sort_keys=False) + "#END\n")


def config_yaml(port: int, upstream_port: int, *, listen_ip: str = "127.0.0.1", plugins: list[str],
                control_port: int | None = None, http_snippet: str = "", error_level: str = "warn") -> dict:
    apisix: dict = {"node_listen": [{"ip": listen_ip, "port": port}], "ssl": {"enable": False},
                    "enable_control": control_port is not None, "extra_lua_path": PLUGIN_LUA_PATH}
    if control_port is not None:
        apisix["control"] = {"ip": "127.0.0.1", "port": control_port}
    return {
        "apisix": apisix,
        "nginx_config": {
            "error_log_level": error_level,
            "http_configuration_snippet": http_snippet + UPSTREAM_SNIPPET.format(ip="127.0.0.1",
                                                                                  port=upstream_port),
        },
        "plugins": plugins,
    }


DEFAULT_PLUGINS = ["real-ip", "key-auth", "basic-auth", "jwt-auth", "hmac-auth", "multi-auth", "tcp-logger",
                   "http-logger", "authwire"]


def start_apisix(routes: dict | None = None, *, plugins: list[str] | None = None, control: bool = False,
                 http_snippet: str = "", config: dict | None = None, listen_ip: str = "127.0.0.1",
                 netns_argv: list[str] | None = None, error_level: str = "warn") -> Apisix:
    """Start APISIX with `routes` (an apisix.yaml as a dict; "{upstream}" in strings is replaced by the
    upstream's host:port). `config` is laid over the generated config.yaml (listen ports, upstream, Control
    API): its top-level keys win, dicts merged one level; with both, `plugins` extends config's list."""
    workdir = Path(tempfile.mkdtemp(prefix="aw-apx-", dir="/tmp"))  # short: worker_events.sock < 108 bytes
    prefix = workdir / "p"
    netns_argv = netns_argv or []
    port, upstream_port = free_port(netns_argv=netns_argv), free_port(netns_argv=netns_argv)
    control_port = free_port(netns_argv=netns_argv) if control else None
    upstream = f"127.0.0.1:{upstream_port}"
    conf = config_yaml(port, upstream_port, listen_ip=listen_ip, plugins=plugins or DEFAULT_PLUGINS,
                       control_port=control_port, http_snippet=http_snippet, error_level=error_level)
    for key, value in (config or {}).items():  # e.g. the README's config.yaml block: its keys win
        if isinstance(value, dict) and isinstance(conf.get(key), dict):
            conf[key] = {**conf[key], **value}
        else:
            conf[key] = value
    if plugins and config and "plugins" in config:
        conf["plugins"] = [*config["plugins"], *(p for p in plugins if p not in config["plugins"])]
    (workdir / "config.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    write_routes(workdir / "apisix.yaml", substitute(routes or {"routes": []}, upstream))
    gw = Apisix(prefix, workdir, port, upstream, control_port, netns_argv)
    try:
        gw._run("start", "--config", str(workdir / "config.yaml"), "--routes", str(workdir / "apisix.yaml"),
                "--timeout", "30", timeout=90)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return gw


def substitute(value, upstream: str):
    """Replace "{upstream}" in every string of a nested dict/list."""
    if isinstance(value, dict):
        return {substitute(k, upstream): substitute(v, upstream) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, upstream) for v in value]
    if isinstance(value, str):
        return value.replace("{upstream}", upstream)
    return value


def upstream(address: str) -> dict:
    return {"type": "roundrobin", "nodes": {address: 1}}

"""compose/: the docker-compose deployments are consistent (no Docker engine runs here, so this is the check).

For each of envoy/, apisix/, kong/: the YAML parses; the sidecar is built from compose/Dockerfile, shares the
gateway's network namespace, has the privileges and mounts the kernel inspector needs; its command is a
valid `authwire serve` command line (parsed by authwire's own CLI and config loader); the address the
gateway sends to is one authwire listens on; every mounted file exists and lands where the gateway config
looks for it; the plugin config uses only fields the plugin's schema defines; ports and upstream names
agree across files.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from authwire import cli
from authwire import config as config_mod

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "compose"
PLUGINS = ROOT / "gateway-plugins"
GATEWAYS = {"envoy": "envoy", "apisix": "apisix", "kong": "kong"}  # directory -> gateway service name
KERNEL_MOUNTS = {"/lib/modules", "/usr/src", "/sys/kernel/tracing", "/sys/kernel/debug", "/sys/fs/bpf"}


def load(directory: str) -> dict:
    return yaml.safe_load((COMPOSE / directory / "docker-compose.yml").read_text())


def mounts(service: dict, base: Path) -> dict[str, Path | str]:
    """target -> resolved path (relative bind mounts) or the source as written (volumes, host paths)."""
    out: dict[str, Path | str] = {}
    for spec in service.get("volumes", []):
        source, target = spec.split(":")[:2]
        out[target] = (base / source).resolve() if source.startswith(".") else source
    return out


def serve_config(command: list[str]) -> config_mod.Config:
    """The sidecar's command, parsed exactly as `authwire` would parse it."""
    args = cli.build_parser().parse_args(command)
    assert args.command == "serve"
    return config_mod.load(args, environ={})


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


@pytest.mark.parametrize("directory", sorted(GATEWAYS))
def test_sidecar_service_shares_the_gateway_namespace_with_kernel_privileges(directory):
    doc = load(directory)
    base = COMPOSE / directory
    services = doc["services"]
    gateway = GATEWAYS[directory]
    assert {"authwire", gateway, "upstream"} <= set(services)
    sidecar = services["authwire"]
    assert (base / sidecar["build"]["context"]).resolve() == ROOT
    assert (ROOT / sidecar["build"]["dockerfile"]) == COMPOSE / "Dockerfile"
    assert sidecar["network_mode"] == f"service:{gateway}"
    assert gateway in sidecar.get("depends_on", [])
    assert "ports" not in sidecar, "authwire's ports are reached inside the gateway's namespace only"
    if not sidecar.get("privileged"):
        assert {"BPF", "PERFMON", "NET_ADMIN"} <= set(sidecar["cap_add"])
        assert "seccomp=unconfined" in sidecar["security_opt"]
    m = mounts(sidecar, base)
    assert KERNEL_MOUNTS <= set(m)
    assert m["/var/lib/authwire"] in doc["volumes"], "records must outlive the container"
    config = serve_config(sidecar["command"])
    assert config.db.startswith("/var/lib/authwire/") and config.jsonl.startswith("/var/lib/authwire/")
    assert "unix:/run/authwire/authwire.sock" in config.listen, "`authwire query` in the container needs it"
    assert not config.no_inspector


@pytest.mark.parametrize("directory", sorted(GATEWAYS))
def test_every_bind_mount_source_exists(directory):
    base = COMPOSE / directory
    generated = {COMPOSE / "envoy" / "keys" / "jwks.json", COMPOSE / "envoy" / "keys" / "htpasswd"}
    for name, service in load(directory)["services"].items():
        for target, source in mounts(service, base).items():
            if not isinstance(source, Path):  # a named volume or a host path (kernel mounts)
                continue
            if source in generated:
                # made by the documented first step, not checked in (demo keys)
                assert "python -m authwire.demo.credentials keys" in (base / "README.md").read_text()
                continue
            assert source.exists(), f"{directory}/{name}: {source} (mounted at {target}) does not exist"


def test_envoy_sends_its_access_log_where_authwire_listens():
    doc = load("envoy")
    envoy = doc["services"]["envoy"]
    m = mounts(envoy, COMPOSE / "envoy")
    config_path = envoy["command"][envoy["command"].index("-c") + 1]
    assert m[config_path] == PLUGINS / "envoy" / "envoy.yaml"
    bootstrap = yaml.safe_load((PLUGINS / "envoy" / "envoy.yaml").read_text())
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    als = clusters["authwire"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    config = serve_config(doc["services"]["authwire"]["command"])
    if "pipe" in als:  # authwire's unix socket, in a volume both services mount at the same path
        target = f"unix:{als['pipe']['path']}"
        socket_dir = str(Path(als["pipe"]["path"]).parent)
        for service in (envoy, doc["services"]["authwire"]):
            assert any(v.split(":")[1] == socket_dir for v in service["volumes"] if v.count(":") >= 1)
    else:
        target = f"{als['socket_address']['address']}:{als['socket_address']['port_value']}"
    assert target in config.listen  # same namespace, so 127.0.0.1 is authwire's
    assert config.grpc_web_listen == []
    # the consumer header Envoy logs is the one authwire reads
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    logged = hcm["access_log"][0]["typed_config"]["additional_request_headers_to_log"]
    assert logged == [config.consumer_header]
    # key files land where jwt_authn and basic_auth read them
    text = (PLUGINS / "envoy" / "envoy.yaml").read_text()
    for target in ("/etc/envoy/jwks.json", "/etc/envoy/htpasswd"):
        assert target in m and f"filename: {target}" in text
    # the published port is Envoy's listener; the upstream cluster names the upstream service
    listener = bootstrap["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
    assert f"{listener}:{listener}" in envoy["ports"]
    up = clusters["upstream"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert up["socket_address"]["address"] == "upstream"


def _lua_search_dirs(package_path: str, gateway: dict, base: Path) -> list[Path]:
    """Host directories behind the `<dir>/?.lua` entries of a Lua search path."""
    m = mounts(gateway, base)
    dirs = []
    for entry in filter(None, package_path.split(";")):
        assert entry.endswith("/?.lua"), entry
        target = entry[: -len("/?.lua")]
        assert target in m, f"{target} is on the Lua path but nothing is mounted there"
        dirs.append(m[target])
    return dirs


def _resolve(module: str, dirs: list[Path]) -> Path | None:
    rel = module.replace(".", "/") + ".lua"
    return next((d / rel for d in dirs if (d / rel).exists()), None)


def _requires_resolve(lua_file: Path, dirs: list[Path]) -> None:
    for module in re.findall(r'require\("(authwire\.[\w.]+)"\)', lua_file.read_text()):
        assert _resolve(module, dirs), f"{lua_file.name} requires {module}, not found on the mounted Lua path"


def _apisix_schema_fields(lua_file: Path) -> set[str]:
    """Properties of the plugin's schema table (`name = { type = ...`, one level in)."""
    return set(re.findall(r"^    (\w+) = \{ type =", lua_file.read_text(), re.M))


def _kong_config_fields(lua_file: Path) -> set[str]:
    """Fields of the `config` record (`{ name = { ... } }` / `{ name = typedefs.x }` entries)."""
    text = lua_file.read_text()
    config = text[text.index("{ config = "):]
    return set(re.findall(r"^\s+\{ (\w+) = (?:\{|typedefs\.)", config, re.M))


def test_apisix_standalone_loads_the_mounted_plugin_and_reports_to_grpc_web():
    base = COMPOSE / "apisix"
    doc = load("apisix")
    gateway = doc["services"]["apisix"]
    m = mounts(gateway, base)
    conf = yaml.safe_load((base / "config.yaml").read_text())
    assert conf["deployment"]["role_data_plane"]["config_provider"] == "yaml"
    assert m["/usr/local/apisix/conf/config.yaml"] == base / "config.yaml"
    assert m["/usr/local/apisix/conf/apisix.yaml"] == base / "apisix.yaml"
    dirs = _lua_search_dirs(conf["apisix"]["extra_lua_path"], gateway, base)
    plugin = _resolve("apisix.plugins.authwire", dirs)
    assert plugin == PLUGINS / "apisix" / "apisix" / "plugins" / "authwire.lua"
    _requires_resolve(plugin, dirs)

    routes_text = (base / "apisix.yaml").read_text()
    assert routes_text.rstrip().endswith("#END"), "APISIX standalone reads apisix.yaml only up to #END"
    routes = yaml.safe_load(routes_text)
    used = {name for r in routes["routes"] for name in r.get("plugins", {})}
    used |= {name for g in routes["global_rules"] for name in g["plugins"]}
    assert "authwire" in used and used <= set(conf["plugins"]), "config.yaml's plugins: must list them all"
    authwire_conf = routes["global_rules"][0]["plugins"]["authwire"]
    assert set(authwire_conf) <= _apisix_schema_fields(plugin), "fields the plugin's schema does not define"
    config = serve_config(doc["services"]["authwire"]["command"])
    assert authwire_conf["sidecar"] in config.grpc_web_listen
    assert 9180 not in {port_of(a) for a in config.listen if not a.startswith("unix:")}, \
        "9180 is APISIX's Admin API port in the shared namespace"
    assert f"{conf['apisix']['node_listen']}:{conf['apisix']['node_listen']}" in gateway["ports"]
    for route in routes["routes"]:
        assert list(route["upstream"]["nodes"]) == ["upstream:80"]


def test_kong_dbless_loads_the_mounted_plugin_and_reports_to_grpc_web():
    base = COMPOSE / "kong"
    doc = load("kong")
    gateway = doc["services"]["kong"]
    env = gateway["environment"]
    m = mounts(gateway, base)
    assert env["KONG_DATABASE"] == "off"
    assert m[env["KONG_DECLARATIVE_CONFIG"]] == base / "kong.yml"
    assert "authwire" in env["KONG_PLUGINS"].split(",")
    dirs = _lua_search_dirs(env["KONG_LUA_PACKAGE_PATH"].rstrip(";"), gateway, base)
    handler = _resolve("kong.plugins.authwire.handler", dirs)
    schema = _resolve("kong.plugins.authwire.schema", dirs)
    assert handler == PLUGINS / "kong" / "kong" / "plugins" / "authwire" / "handler.lua"
    assert schema is not None
    _requires_resolve(handler, dirs)
    _requires_resolve(schema, dirs)

    declarative = yaml.safe_load((base / "kong.yml").read_text())
    plugin = next(p for p in declarative["plugins"] if p["name"] == "authwire")
    assert set(plugin["config"]) <= _kong_config_fields(schema), "fields the plugin's schema does not define"
    config = serve_config(doc["services"]["authwire"]["command"])
    assert plugin["config"]["sidecar"] in config.grpc_web_listen
    proxy_port = port_of(env["KONG_PROXY_LISTEN"])
    assert f"{proxy_port}:{proxy_port}" in gateway["ports"]
    assert declarative["services"][0]["url"] == "http://upstream:80"


def test_plugin_defaults_match_the_sidecar_defaults():
    """A plugin left at its default sidecar address reaches authwire left at its default gRPC-Web one."""
    default_web = config_mod.Config().grpc_web_listen
    apisix = (PLUGINS / "apisix" / "apisix" / "plugins" / "authwire.lua").read_text()
    kong = (PLUGINS / "kong" / "kong" / "plugins" / "authwire" / "schema.lua").read_text()
    assert re.search(r'sidecar = \{[^}]*default = "([^"]+)"', apisix).group(1) in default_web
    assert re.search(r'sidecar = \{[^}]*default = "([^"]+)"', kong).group(1) in default_web


def test_dockerfile_builds_the_package_on_debian_bcc():
    text = (COMPOSE / "Dockerfile").read_text()
    assert re.search(r"^FROM debian:bookworm", text, re.M)
    assert "python3-bpfcc" in text and "--system-site-packages" in text
    for source in re.findall(r"^COPY (\S+)", text, re.M):
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    # The default command is a valid serve command line with the documented ports.
    cmd = re.search(r"^CMD (\[.*?\])\s*$", text, re.M | re.S).group(1)
    config = serve_config(yaml.safe_load(cmd.replace("\\\n", " ")))
    assert "127.0.0.1:9180" in config.listen and config.grpc_web_listen == ["127.0.0.1:9181"]
    exposed = {int(p) for p in shlex.split(re.search(r"^EXPOSE (.*)$", text, re.M).group(1))}
    assert exposed == {9180, 9181}


def _readme_table_fields(readme: str) -> set[str]:
    """Field names in the README's configuration table (first column, `config.` prefix dropped)."""
    fields = set()
    for row in re.findall(r"^\| (`[^|]+) \|", readme, re.M):
        for name in re.findall(r"`(?:config\.)?([\w.]+)`", row):
            fields.add(name)
            fields.add(name.split(".")[0])  # queue.max_batch_size documents `queue`
    return fields


@pytest.mark.parametrize("gateway", ["apisix", "kong"])
def test_compose_follows_the_plugin_readme(gateway):
    """Mount layout, Lua search path, plugin list, default address and config fields as the plugin's README
    documents them (gateway-plugins/<gateway>/README.md)."""
    readme = (PLUGINS / gateway / "README.md").read_text()
    base = COMPOSE / gateway
    service = load(gateway)["services"][gateway]
    # README: "mount this repository's gateway-plugins at /opt/authwire"; compose mounts the two subtrees.
    assert re.search(r"`gateway-plugins`\s+at\s+`/opt/authwire`", readme)
    for target, source in mounts(service, base).items():
        if target.startswith("/opt/authwire/"):
            assert source == PLUGINS / target.removeprefix("/opt/authwire/"), target
    if gateway == "apisix":
        conf = yaml.safe_load((base / "config.yaml").read_text())
        assert f'extra_lua_path: "{conf["apisix"]["extra_lua_path"]}"' in readme
        plugin_conf = yaml.safe_load((base / "apisix.yaml").read_text())["global_rules"][0]["plugins"]["authwire"]
    else:
        env = service["environment"]
        assert f"lua_package_path = {env['KONG_LUA_PACKAGE_PATH']}" in readme
        assert f"plugins = {env['KONG_PLUGINS']}" in readme
        declarative = yaml.safe_load((base / "kong.yml").read_text())
        plugin_conf = next(p for p in declarative["plugins"] if p["name"] == "authwire")["config"]
    default = re.search(r"\| `(?:config\.)?sidecar` \| `([^`]+)` \|", readme).group(1)
    # compose uses the documented default address, or the unix-socket address the README documents beside it
    assert plugin_conf["sidecar"] == default or f'"sidecar": "{plugin_conf["sidecar"]}"' in readme, \
        "compose's sidecar address is one the plugin README documents"
    assert set(plugin_conf) <= _readme_table_fields(readme), "every field compose sets is documented"

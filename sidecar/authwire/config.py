"""Settings of `authwire serve`: defaults < TOML file (--config) < environment (AUTHWIRE_*) < flags.

Every field is one flag (`--grace-period`), one env var (`AUTHWIRE_GRACE_PERIOD`, lists comma-separated) and
one TOML key (`grace_period`). The fields below are the single list of them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authwire.listen import parse_listen_address

DEFAULT_SOCKET = "/run/authwire/authwire.sock"
DEFAULT_SERVER = f"unix:{DEFAULT_SOCKET}"


class ConfigError(ValueError):
    """A setting has a value authwire cannot use; the message names the setting."""


def _opt(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class Config:
    listen: list[str] = _opt([DEFAULT_SERVER], "gRPC listen address: unix:/path or HOST:PORT (repeatable)")
    grpc_web_listen: list[str] = _opt(
        ["127.0.0.1:9181"], "gRPC-Web (HTTP/1.1) listen address for OpenResty plugins, 'off' to disable")
    db: str = _opt("/var/lib/authwire/authwire.db", "SQLite store path")
    jsonl: str = _opt("", "also append every record to this JSONL file (rotated); empty = off")
    jsonl_max_bytes: int = _opt(100 * 1024 * 1024, "rotate the JSONL file at this size")
    jsonl_keep: int = _opt(5, "rotated JSONL files to keep")
    retention_age: str = _opt("7d", "delete records older than this (e.g. 12h, 7d; 0 = keep)")
    retention_bytes: int = _opt(0, "delete oldest records while the store is bigger (0 = no limit)")
    iface: list[str] = _opt([], "interface for the kernel inspector (repeatable; default: every UP "
                                "non-loopback interface plus lo)")
    max_flows: int = _opt(65536, "kernel flow table size (LRU; oldest flows evicted beyond it)")
    no_inspector: bool = _opt(False, "run without the kernel inspector (records join as INSPECTOR_OFF)")
    grace_period: float = _opt(30.0, "seconds a closed connection stays joinable for late reports")
    join_wait: float = _opt(0.3, "seconds a report waits for its connection's kernel event")
    consumer_header: str = _opt("x-consumer", "Envoy: request header or metadata key naming the consumer")
    log_level: str = _opt("info", "debug, info, warning or error")
    # --- access (hardening): tokens, TLS, limits ---
    token_file: str = _opt("", "bearer token file for TCP listeners (created 0600 if missing; "
                               "default: 'token' beside the store; 'off': no token, unix sockets only)")
    tls_cert: str = _opt("", "PEM certificate (chain) for TLS on the TCP gRPC and gRPC-Web listeners")
    tls_key: str = _opt("", "PEM private key of tls_cert")
    tls_client_ca: str = _opt("", "PEM CA bundle: TCP clients must present a certificate it signed (mTLS), "
                                  "which then stands in for the bearer token")
    socket_group: str = _opt("", "group (name or gid) given the unix sockets, which are then 0660: e.g. the "
                                 "gateway workers' group, so no other local user can connect")
    grpc_max_message_bytes: int = _opt(4 * 1024 * 1024, "gRPC: largest request message accepted")
    grpc_max_concurrent_rpcs: int = _opt(256, "gRPC: calls handled at once, all connections together "
                                              "(more get RESOURCE_EXHAUSTED)")
    grpc_max_streams_per_connection: int = _opt(64, "gRPC: concurrent streams per HTTP/2 connection")
    grpc_idle_timeout: float = _opt(300.0, "gRPC: seconds an idle connection is kept")
    grpc_web_max_body_bytes: int = _opt(4 * 1024 * 1024, "gRPC-Web: largest request body accepted")
    grpc_web_max_connections: int = _opt(256, "gRPC-Web: open connections at once (more are closed)")
    grpc_web_max_in_flight: int = _opt(32, "gRPC-Web: request bodies read or handled at once")
    grpc_web_header_timeout: float = _opt(10.0, "gRPC-Web: seconds for a request's headers; also the "
                                                "keep-alive idle limit")
    grpc_web_body_timeout: float = _opt(30.0, "gRPC-Web: seconds for a request's body")
    #
    # --- HTTP listener, metrics and export (operations) ---
    http_listen: list[str] = _opt(["127.0.0.1:9182"], "HTTP listen address (metrics, health, JSON API, "
                                                      "web view): HOST:PORT or unix:/path; 'off' disables")
    otlp_endpoint: str = _opt("", "export every record (and alert) as an OTLP log to this collector's OTLP/gRPC "
                                  "receiver, HOST:PORT; empty = off")
    otlp_insecure: bool = _opt(False, "plaintext gRPC to a non-loopback OTLP endpoint (default: TLS there; "
                                      "loopback endpoints are plaintext unless a CA or client cert is given)")
    otlp_ca_file: str = _opt("", "PEM CA bundle to verify the OTLP collector (default: system roots)")
    otlp_cert_file: str = _opt("", "PEM client certificate for mTLS to the OTLP collector (with --otlp-key-file)")
    otlp_key_file: str = _opt("", "PEM private key of --otlp-cert-file")
    otlp_headers: list[str] = _opt([], "KEY=VALUE gRPC metadata sent with every OTLP export (repeatable; "
                                       "e.g. authorization=Bearer ...); values are never logged")
    otlp_queue_records: int = _opt(50_000, "records held for OTLP export while the collector is slow or down; "
                                           "beyond this, new ones are dropped and counted")
    otlp_batch_records: int = _opt(1000, "records per OTLP Export call")
    otlp_timeout: float = _opt(10.0, "seconds one OTLP Export call may take")
    otlp_compression: str = _opt("none", "OTLP gRPC compression: none or gzip")
    #
    # --- detections ---
    detections: list[str] = _opt(["stack_stuffing", "credential_replay", "ua_stack_mismatch",
                                  "keepalive_stuffing"], "detections to run on committed records ('off' = none)")
    detect_queue: int = _opt(100_000, "records queued for the detections at most (more are dropped, counted)")
    detect_max_keys: int = _opt(10_000, "keys (stacks, credentials, clients, connections) each detection "
                                        "remembers at most (LRU; forgetting is counted)")
    stack_stuffing_window: str = _opt("10m", "stack_stuffing: sliding window")
    stack_stuffing_min_failures: int = _opt(20, "stack_stuffing: failed auths from one TCP stack, at least")
    stack_stuffing_min_ips: int = _opt(10, "stack_stuffing: distinct source IPs among them, at least")
    stack_stuffing_min_credentials: int = _opt(10, "stack_stuffing: distinct credentials tried, at least")
    stack_stuffing_min_failure_ratio: float = _opt(0.8, "stack_stuffing: failures / auths of the failing IPs, at least")
    credential_replay_window: str = _opt("1h", "credential_replay: how long a credential's usual position "
                                               "is remembered")
    credential_replay_concurrent: str = _opt("5m", "credential_replay: original position used this recently "
                                                   "= concurrent use (critical)")
    ua_stack_mismatch_window: str = _opt("1h", "ua_stack_mismatch: one alert per client and outcome per window")
    ua_stack_mismatch_max_new_per_minute: int = _opt(30, "ua_stack_mismatch: new alerts per minute at most "
                                                         "(more are counted, not raised)")
    keepalive_stuffing_window: str = _opt("10m", "keepalive_stuffing: sliding window")
    keepalive_stuffing_min_failures: int = _opt(20, "keepalive_stuffing: failed auths on one connection, at least")
    keepalive_stuffing_min_credentials: int = _opt(3, "keepalive_stuffing: distinct credentials among them")
    detect_block: list[str] = _opt([], "detections whose alerts put their source IPs in the kernel block "
                                       "list, as NAME or NAME:TTL (e.g. stack_stuffing:15m); default TTL 10m")
    #
    # --- kernel response (enforce) ---
    enforce: bool = _opt(False, "really drop new SYNs from block-listed source IPs (tc ingress); off: the "
                                "inspector only observes and counts what it would have dropped")
    block_allow: list[str] = _opt([], "CIDRs never put in the block list (repeatable; loopback never is)")
    #
    # -- store and JSONL files (cost) --
    data_group: str = _opt("", "group allowed to read the store and JSONL files (created 0640); "
                               "empty: owner only (0600)")

    @classmethod
    def fields(cls) -> list[dataclasses.Field]:
        return list(dataclasses.fields(cls))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per Config field. Defaults are None so we can tell 'not given' from 'given'."""
    parser.add_argument("--config", metavar="FILE", help="TOML file with any of the settings below")
    for f in Config.fields():
        flag = "--" + f.name.replace("_", "-")
        env = "AUTHWIRE_" + f.name.upper()
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f"{f.metadata['help']} (env {env}; default {default!r})"
        if f.type == "bool":
            parser.add_argument(flag, action="store_true", default=None, help=help_text)
        elif f.type.startswith("list"):
            parser.add_argument(flag, action="append", default=None, metavar="VALUE", help=help_text)
        else:
            parser.add_argument(flag, default=None, metavar="VALUE", help=help_text)


def _coerce(f: dataclasses.Field, value: Any, origin: str) -> Any:
    try:
        if f.type == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(f"not a boolean: {value!r}")
        if f.type.startswith("list"):
            items = value.split(",") if isinstance(value, str) else list(value)
            return [str(i).strip() for i in items if str(i).strip()]
        if f.type == "int":
            return int(value)
        if f.type == "float":
            return float(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{origin}: bad value for {f.name}: {exc}") from None


def load(args: argparse.Namespace | None = None, environ: dict[str, str] | None = None) -> Config:
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    known = {f.name: f for f in Config.fields()}
    config_file = getattr(args, "config", None) or environ.get("AUTHWIRE_CONFIG")
    if config_file:
        try:
            data = tomllib.loads(Path(config_file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"--config {config_file}: {exc}") from None
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ConfigError(f"--config {config_file}: unknown setting {key!r}")
            values[name] = _coerce(known[name], value, config_file)
    for name, f in known.items():
        env = "AUTHWIRE_" + name.upper()
        if env in environ:
            values[name] = _coerce(f, environ[env], env)
    if args is not None:
        for name, f in known.items():
            value = getattr(args, name, None)
            if value is not None:
                values[name] = _coerce(f, value, "--" + name.replace("_", "-"))
    config = Config(**values)
    config.grpc_web_listen = [a for a in config.grpc_web_listen if a.lower() not in ("off", "none")]
    config.http_listen = [a for a in config.http_listen if a.lower() not in ("off", "none")]
    _check(config)
    return config


def _check(config: Config) -> None:
    if not config.listen:
        raise ConfigError("listen: at least one gRPC listen address is required")
    if config.max_flows < 16:
        raise ConfigError(f"max_flows: {config.max_flows} is too small (minimum 16)")
    if config.grace_period < 0 or config.join_wait < 0:
        raise ConfigError("grace_period and join_wait must be >= 0 seconds")
    if config.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"log_level: {config.log_level!r} is not debug, info, warning or error")
    parse_duration(config.retention_age)
    for name in ("grpc_max_message_bytes", "grpc_max_concurrent_rpcs", "grpc_max_streams_per_connection",
                 "grpc_web_max_body_bytes", "grpc_web_max_connections", "grpc_web_max_in_flight"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name}: {getattr(config, name)} must be at least 1")
    for name in ("grpc_idle_timeout", "grpc_web_header_timeout", "grpc_web_body_timeout"):
        if not getattr(config, name) > 0:
            raise ConfigError(f"{name}: {getattr(config, name)} must be more than 0 seconds")
    from authwire.detect.settings import check as check_detections  # detect imports this module

    check_detections(config)
    from authwire.export.otlp_settings import OtlpSettingError, from_config
    try:
        from_config(config)
    except OtlpSettingError as exc:
        raise ConfigError(str(exc)) from None
    from authwire.kernel.blocklist import parse_allow_list  # kernel response (enforce)
    try:
        parse_allow_list(config.block_allow)
    except ValueError as exc:
        raise ConfigError(f"block_allow: {exc}") from None
    for setting in ("listen", "grpc_web_listen", "http_listen"):
        for address in getattr(config, setting):
            try:
                parse_listen_address(address, setting)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None


def token_path(config: Config) -> Path:
    """Where the bearer token lives: --token-file, or 'token' beside the store."""
    return Path(config.token_file) if config.token_file else Path(config.db).parent / "token"


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """'15m' -> 900.0 seconds. A bare number is seconds."""
    text = text.strip().lower()
    for unit in sorted(_UNITS, key=len, reverse=True):
        if text.endswith(unit):
            number = text[: -len(unit)]
            break
    else:
        number, unit = text, "s"
    try:
        value = float(number)
    except ValueError:
        raise ConfigError(f"not a duration: {text!r} (use e.g. 30s, 15m, 12h, 7d)") from None
    if value < 0:
        raise ConfigError(f"negative duration: {text!r}")
    return value * _UNITS[unit]

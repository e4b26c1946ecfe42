"""The OTLP export settings, checked before anything starts: every message names the setting at fault.

Kept apart from the exporter so that config loading does not import grpc channels or the OTLP protos.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authwire.listen import is_loopback_host

# gRPC metadata keys: lower-case token characters; "-bin" keys carry binary values we never send.
_HEADER_KEY = re.compile(r"^[0-9a-z_.-]+$")
_RESERVED_HEADERS = {"content-type", "te", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding",
                     "user-agent", "host", ":authority"}
COMPRESSIONS = ("none", "gzip")


class OtlpSettingError(ValueError):
    """A bad OTLP setting; the message names it (the value too, except for header values: secrets)."""


@dataclass(frozen=True)
class OtlpSettings:
    endpoint: str                       # as configured, for messages
    host: str
    port: int
    tls: bool
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    queue_records: int = 50_000
    batch_records: int = 1000
    timeout: float = 10.0
    compression: str = "none"

    @property
    def target(self) -> str:
        """The gRPC target (IPv6 literals bracketed)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_endpoint(text: str) -> tuple[str, int]:
    """'collector:4317' / '[::1]:4317' -> (host, port); raises OtlpSettingError naming otlp_endpoint."""
    if "://" in text:
        raise OtlpSettingError(f"otlp_endpoint {text!r}: give HOST:PORT of the collector's OTLP/gRPC receiver "
                               f"(no scheme; TLS is chosen by --otlp-insecure / --otlp-ca-file)")
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not host:
        raise OtlpSettingError(f"otlp_endpoint {text!r}: want HOST:PORT or [V6]:PORT (e.g. collector:4317)")
    port = int(port_text)
    if not 0 < port <= 65535:
        raise OtlpSettingError(f"otlp_endpoint {text!r}: port {port} outside 1..65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise OtlpSettingError(f"otlp_endpoint {text!r}: {host!r} is not an IPv6 address") from None
    elif ":" in host or not re.fullmatch(r"[A-Za-z0-9._-]+", host):
        raise OtlpSettingError(f"otlp_endpoint {text!r}: {host!r} is not a host name or address "
                               f"(IPv6 goes in brackets)")
    return host, port


def parse_headers(items: list[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or not _HEADER_KEY.match(key) or key.endswith("-bin"):
            raise OtlpSettingError(f"otlp_headers: {key or item[:40]!r} is not KEY=VALUE with a gRPC metadata key "
                                   f"(lower-case letters, digits, - _ .)")
        if key in _RESERVED_HEADERS or key.startswith("grpc-"):
            raise OtlpSettingError(f"otlp_headers: {key!r} is set by gRPC itself")
        if any(ord(c) < 0x20 or ord(c) > 0x7E for c in value):
            raise OtlpSettingError(f"otlp_headers: the value of {key!r} has non-printable characters")
        out.append((key, value.strip()))
    return tuple(out)


def from_config(config: Any) -> OtlpSettings | None:
    """The settings, or None when export is off; checks everything but name resolution (see resolve)."""
    if not config.otlp_endpoint:
        return None
    host, port = parse_endpoint(config.otlp_endpoint)
    tls = bool(config.otlp_ca_file or config.otlp_cert_file) or not (config.otlp_insecure or is_loopback_host(host))
    if config.otlp_insecure and (config.otlp_ca_file or config.otlp_cert_file):
        raise OtlpSettingError("otlp_insecure: cannot be combined with otlp_ca_file / otlp_cert_file")
    if bool(config.otlp_cert_file) != bool(config.otlp_key_file):
        raise OtlpSettingError("otlp_cert_file and otlp_key_file: give both (a client certificate and its key)")
    for setting in ("otlp_ca_file", "otlp_cert_file", "otlp_key_file"):
        path = getattr(config, setting)
        if path and not Path(path).is_file():
            raise OtlpSettingError(f"{setting} {path}: no such file")
    if config.otlp_queue_records < 1 or config.otlp_batch_records < 1:
        raise OtlpSettingError("otlp_queue_records and otlp_batch_records must be >= 1")
    if config.otlp_timeout <= 0:
        raise OtlpSettingError("otlp_timeout must be > 0 seconds")
    if config.otlp_compression not in COMPRESSIONS:
        raise OtlpSettingError(f"otlp_compression {config.otlp_compression!r}: one of {', '.join(COMPRESSIONS)}")
    return OtlpSettings(config.otlp_endpoint, host, port, tls, config.otlp_ca_file, config.otlp_cert_file,
                        config.otlp_key_file, parse_headers(config.otlp_headers), config.otlp_queue_records,
                        min(config.otlp_batch_records, config.otlp_queue_records), config.otlp_timeout,
                        config.otlp_compression)


def resolve(settings: OtlpSettings) -> None:
    """Refuse an endpoint whose host does not resolve (a typo), at start, naming it. A collector that is
    merely down is not refused: export retries and counts what it drops."""
    try:
        socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise OtlpSettingError(f"otlp_endpoint {settings.endpoint}: cannot resolve {settings.host!r}: "
                               f"{exc.strerror or exc}") from None

"""The one parser of record filters: `authwire query --client-ip ...` and `GET /v1/records?client_ip=...`.

Each filter is a FilterSpec: its name (the query parameter; the CLI flag is `--name` with `-`), what it
means, the JSON Schema of its text (the OpenAPI document is generated from it, so the document and the
parser cannot drift apart) and how its text becomes a `query_pb2.Filters` field. The text is checked
against exactly that schema first (`pattern`, `enum`, integer bounds), then converted, so what the
document calls valid is what the server accepts, and nothing else.

The CLI is forgiving about spelling (`--outcome FAILURE`, `--method key-auth`, `--os Linux`); it
normalises the text with `cli_spelling()` and then calls the same parser.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from authwire.join.fingerprint import OS_HINTS
from authwire.records import short_enum
from authwire.store.record_store import GROUP_ALIASES, GROUP_FIELDS, MAX_LIMIT
from authwire.v1 import auth_event_pb2, query_pb2, record_pb2

MAX_TEXT = 256          # longest accepted free-text filter value (ids, names, signatures)
MAX_GROUP_FIELDS = 5
DEFAULT_LIMIT = 100
SHOWN = 40              # at most this many characters of a bad value are quoted back (repr-escaped)
_INT64_MAX = 2**63 - 1


class FilterError(ValueError):
    """A parameter that cannot be used: names the parameter and says why (never the raw value)."""

    def __init__(self, parameter: str, reason: str) -> None:
        super().__init__(f"{parameter}: {reason}")
        self.parameter = parameter
        self.reason = reason


_UNSHOWN = re.compile(r"[^A-Za-z0-9 ._:/+-]")


def shown(text: str) -> str:
    """A bad value as it may be quoted in an error: at most SHOWN characters, each outside [A-Za-z0-9 ._:/+-]
    shown as '?' (no markup, quotes or control characters reach a terminal, a log or a page)."""
    return "'" + _UNSHOWN.sub("?", text[:SHOWN]) + ("...'" if len(text) > SHOWN else "'")


# --- value grammars (ECMA-262 and Python `re` read these the same way) --------------------------------

_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_V4 = rf"{_OCTET}(\.{_OCTET}){{3}}"
_H = r"[0-9a-fA-F]{1,4}"
_V6 = ("(" + "|".join([
    rf"({_H}:){{7}}{_H}",
    rf"({_H}:){{1,7}}:",
    rf"({_H}:){{1,6}}:{_H}",
    rf"({_H}:){{1,5}}(:{_H}){{1,2}}",
    rf"({_H}:){{1,4}}(:{_H}){{1,3}}",
    rf"({_H}:){{1,3}}(:{_H}){{1,4}}",
    rf"({_H}:){{1,2}}(:{_H}){{1,5}}",
    rf"{_H}:(:{_H}){{1,6}}",
    rf":((:{_H}){{1,7}}|:)",
    rf"::(ffff(:0{{1,4}})?:)?{_V4}",
    rf"({_H}:){{1,4}}:{_V4}",
]) + ")")
IP_PATTERN = rf"^({_V4}|{_V6})$"
CIDR_PATTERN = rf"^({_V4}(/(3[0-2]|[12]?[0-9]))?|{_V6}(/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$"
_DURATION = r"[0-9]{1,9}(\.[0-9]{1,9})?(ms|s|m|h|d|w)?"
_DATE = (r"(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
         r"(T([01][0-9]|2[0-3]):[0-5][0-9](:([0-5][0-9]|60)(\.[0-9]{1,9})?)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?)?")
TIME_PATTERN = rf"^({_DURATION}|{_DATE})$"
RTT_PATTERN = r"^[0-9]{1,9}(\.[0-9]{1,9})?(us|ms|s)?$"
_INTEGER = re.compile(r"-?[0-9]{1,20}")
_UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_TIME_PARTS = re.compile(
    r"(?P<y>\d{4})-(?P<mo>\d\d)-(?P<d>\d\d)(T(?P<h>\d\d):(?P<mi>\d\d)(:(?P<s>\d\d)(\.(?P<f>\d+))?)?"
    r"(?P<z>Z|(?P<sign>[+-])(?P<oh>\d\d):(?P<om>\d\d))?)?")


def check_pattern(name: str, pattern: str, text: str, what: str) -> None:
    if re.fullmatch(pattern.removeprefix("^").removesuffix("$"), text) is None:
        raise FilterError(name, f"{shown(text)} is not {what}")


def _number_with_unit(text: str) -> tuple[float, str]:
    match = re.fullmatch(r"([0-9.]+)([a-z]*)", text)
    assert match is not None  # the pattern was checked first
    return float(match.group(1)), match.group(2)


def parse_time(name: str, text: str, now: float) -> int:
    """'15m' (that long ago) or an ISO 8601 / RFC 3339 time (UTC when no offset) -> epoch ns, clamped to
    0..2^63-1. Day numbers past the month's end roll over (2026-02-30 = 2026-03-02), as timegm counts."""
    check_pattern(name, TIME_PATTERN, text, "a duration ago (15m, 2h, 7d) or an ISO time (2026-01-31T12:00:00Z)")
    parts = _TIME_PARTS.fullmatch(text)
    if parts is None:
        value, unit = _number_with_unit(text)
        ns = int(now * 1e9) - int(value * _UNIT_S[unit or "s"] * 1e9)
    else:
        g = parts.groupdict()
        seconds = calendar.timegm((int(g["y"]), int(g["mo"]), int(g["d"]), int(g["h"] or 0), int(g["mi"] or 0),
                                   int(g["s"] or 0), 0, 0, 0))
        if g["sign"]:
            offset = int(g["oh"]) * 3600 + int(g["om"]) * 60
            seconds -= offset if g["sign"] == "+" else -offset
        ns = seconds * 1_000_000_000 + int((g["f"] or "0").ljust(9, "0")[:9])
    return min(max(ns, 0), _INT64_MAX)


def parse_rtt_us(name: str, text: str) -> int:
    """'5ms', '0.2s', '800us', or a bare number of milliseconds -> microseconds."""
    check_pattern(name, RTT_PATTERN, text, "a duration (800us, 5ms, 0.2s; a bare number is milliseconds)")
    value, unit = _number_with_unit(text)
    return int(round(value * _UNIT_S[unit or "ms"] * 1e6))


def parse_int(name: str, text: str, low: int, high: int) -> int:
    if _INTEGER.fullmatch(text) is None:
        raise FilterError(name, f"{shown(text)} is not an integer")
    value = int(text)
    if not low <= value <= high:
        raise FilterError(name, f"{value} is outside {low}..{high}")
    return value


def parse_text(name: str, text: str) -> str:
    if not text:
        raise FilterError(name, "empty value")
    if len(text) > MAX_TEXT:
        raise FilterError(name, f"longer than {MAX_TEXT} characters")
    return text


def _enum_names(enum) -> list[str]:
    return [short_enum(enum, v.number) for v in enum.DESCRIPTOR.values if v.number != 0]


def parse_choice(name: str, text: str, choices: list[str]) -> str:
    if text not in choices:
        raise FilterError(name, f"unknown value {shown(text)} (known: {', '.join(choices)})")
    return text


# --- the filters ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FilterSpec:
    name: str                                   # query parameter; CLI flag --name-with-dashes
    help: str
    schema: dict[str, Any]                      # JSON Schema of the parameter's text
    apply: Callable[[query_pb2.Filters, str, float], None]
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _string(name: str, field: str, help: str) -> FilterSpec:
    def apply(f: query_pb2.Filters, text: str, now: float) -> None:
        setattr(f, field, parse_text(name, text))
    return FilterSpec(name, help, {"type": "string", "minLength": 1, "maxLength": MAX_TEXT}, apply)


def _enum(name: str, field: str, enum, help: str) -> FilterSpec:
    choices = _enum_names(enum)

    def apply(f: query_pb2.Filters, text: str, now: float) -> None:
        parse_choice(name, text, choices)
        prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.DESCRIPTOR.name).upper() + "_"
        setattr(f, field, enum.Value(prefix + text.upper()))
    return FilterSpec(name, f"{help}: {', '.join(choices)}", {"type": "string", "enum": choices}, apply)


def _time(name: str, field: str, help: str) -> FilterSpec:
    def apply(f: query_pb2.Filters, text: str, now: float) -> None:
        getattr(f, field).FromNanoseconds(parse_time(name, text, now))
    return FilterSpec(name, help, {"type": "string", "pattern": TIME_PATTERN}, apply)


def _rtt(name: str, field: str, help: str) -> FilterSpec:
    def apply(f: query_pb2.Filters, text: str, now: float) -> None:
        setattr(f, field, parse_rtt_us(name, text))
    return FilterSpec(name, help, {"type": "string", "pattern": RTT_PATTERN}, apply)


def _integer(name: str, field: str, low: int, high: int, help: str) -> FilterSpec:
    def apply(f: query_pb2.Filters, text: str, now: float) -> None:
        setattr(f, field, parse_int(name, text, low, high))
    return FilterSpec(name, help, {"type": "integer", "minimum": low, "maximum": high}, apply, metavar="N")


def _client_ip(f: query_pb2.Filters, text: str, now: float) -> None:
    import ipaddress

    check_pattern("client_ip", CIDR_PATTERN, text, "an IP address or CIDR (10.0.0.7, 10.0.0.0/8, 2001:db8::/32)")
    ipaddress.ip_network(text, strict=False)  # cannot fail once the pattern matched (tests/web: property)
    f.client_ip = text


FILTERS: list[FilterSpec] = [
    _time("since", "since", "records at or after: a duration ago (15m, 2h, 7d) or an ISO time"),
    _time("until", "until", "records before: a duration ago (5m) or an ISO time"),
    _string("consumer", "consumer", "consumer name"),
    _string("credential", "credential_id", "credential id (key id, username, access key; never a secret)"),
    FilterSpec("client_ip", "TCP peer IP or CIDR, e.g. 10.0.0.0/8", {"type": "string", "pattern": CIDR_PATTERN},
               _client_ip),
    _enum("outcome", "outcome", auth_event_pb2.AuthOutcome, "auth outcome"),
    _enum("method", "method", auth_event_pb2.AuthMethod, "auth method"),
    _enum("reason", "reason", auth_event_pb2.FailureReason, "failure reason"),
    _string("route", "route_id", "gateway route id"),
    _integer("status", "status", 100, 599, "HTTP status"),
    _string("request_id", "request_id", "request id"),
    _string("community_id", "community_id", "Community ID v1 of the connection"),
    FilterSpec("os", f"OS hint: {', '.join(OS_HINTS)}", {"type": "string", "enum": list(OS_HINTS)},
               lambda f, text, now: setattr(f, "os_hint", parse_choice("os", text, list(OS_HINTS)))),
    _rtt("min_rtt", "min_rtt_us", "handshake RTT at least, e.g. 5ms"),
    _rtt("max_rtt", "max_rtt_us", "handshake RTT at most, e.g. 50ms"),
    _integer("retransmits_gt", "retransmits_gt", 0, 2**32 - 1, "more than N retransmitted segments"),
    _integer("hop_distance", "hop_distance", 0, 255, "hops between client and gateway (from the SYN's TTL)"),
    _string("syn_signature", "syn_signature", "exact SYN signature (see group_by=syn.signature)"),
    _enum("join_status", "join_status", record_pb2.JoinStatus, "how the record was joined"),
]
BY_NAME = {spec.name: spec for spec in FILTERS}


def _parse(specs: Mapping[str, FilterSpec], message: Any, values: Mapping[str, str], now: float | None) -> Any:
    now = time.time() if now is None else now
    for name, text in values.items():
        spec = specs.get(name)
        if spec is None:
            raise FilterError(name, "unknown filter")
        spec.apply(message, text, now)
    return message


def parse_filters(values: Mapping[str, str], now: float | None = None) -> query_pb2.Filters:
    """Filter name -> text (only the given ones) -> Filters. Raises FilterError naming the first bad one."""
    return _parse(BY_NAME, query_pb2.Filters(), values, now)


# --- limit and group_by (the other query parameters) ---------------------------------------------------

LIMIT_SCHEMA = {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}
GROUP_NAMES = sorted({*GROUP_FIELDS, *GROUP_ALIASES}, key=lambda n: (-len(n), n))  # longest first: no prefix match
_GROUP_NAME = "(" + "|".join(re.escape(n) for n in GROUP_NAMES) + ")"
GROUP_BY_PATTERN = rf"^ *{_GROUP_NAME} *(, *{_GROUP_NAME} *){{0,{MAX_GROUP_FIELDS - 1}}}$"


def parse_limit(text: str, name: str = "limit") -> int:
    return parse_int(name, text, 1, MAX_LIMIT)


def parse_group_by(text: str) -> list[str]:
    """'client_ip, auth.outcome' -> ['client_ip', 'auth.outcome'] (aliases kept: the store resolves them)."""
    fields = [part.strip() for part in text.split(",")]
    for field in fields:
        if field not in GROUP_FIELDS and field not in GROUP_ALIASES:
            raise FilterError("group_by", f"unknown field {shown(field)} (known: {', '.join(GROUP_FIELDS)})")
    if len(fields) > MAX_GROUP_FIELDS:
        raise FilterError("group_by", f"at most {MAX_GROUP_FIELDS} fields")
    return fields


# --- the CLI's forgiving spelling ---------------------------------------------------------------------

_CLI_ENUMS = {"outcome": auth_event_pb2.AuthOutcome, "method": auth_event_pb2.AuthMethod,
              "reason": auth_event_pb2.FailureReason, "join_status": record_pb2.JoinStatus,
              "severity": record_pb2.AlertSeverity}


def cli_spelling(name: str, text: str) -> str:
    """What a person typed -> the canonical text: enum values in any case, `-` for `_`, with or without
    the enum's prefix (`AUTH_OUTCOME_FAILURE`); OS hints, severities and detection names in any case."""
    if name in ("os", "detection"):
        return text.strip().lower()
    enum = _CLI_ENUMS.get(name)
    if enum is None:
        return text
    canonical = text.strip().lower().replace("-", "_")
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.DESCRIPTOR.name).lower() + "_"
    return canonical.removeprefix(prefix)


# --- alert filters (`authwire alerts`, GET /v1/alerts) -----------------------------------------------

def _alert_detections(f: query_pb2.AlertFilters, text: str, now: float) -> None:
    from authwire.detect.settings import DETECTIONS

    names = [n.strip() for n in text.split(",")]
    for name in names:
        parse_choice("detection", name, list(DETECTIONS))
    f.detections.extend(names)


def _alert_severity(f: query_pb2.AlertFilters, text: str, now: float) -> None:
    parse_choice("severity", text, _enum_names(record_pb2.AlertSeverity))
    f.min_severity = record_pb2.AlertSeverity.Value("ALERT_SEVERITY_" + text.upper())


def _alert_ip(f: query_pb2.AlertFilters, text: str, now: float) -> None:
    check_pattern("client_ip", IP_PATTERN, text, "an IP address (10.0.0.7, 2001:db8::7)")
    f.client_ip = text


def _detection_pattern() -> str:
    from authwire.detect.settings import DETECTIONS

    name = "(" + "|".join(DETECTIONS) + ")"
    return rf"^ *{name} *(, *{name} *)*$"


ALERT_FILTERS: list[FilterSpec] = [
    _time("since", "since", "alerts last matched at or after: 15m, 2h, 7d (ago) or an ISO time"),
    _time("until", "until", "alerts first matched before: 5m (ago) or an ISO time"),
    FilterSpec("detection", "any of these detections (comma-separated)",
               {"type": "string", "pattern": _detection_pattern()}, _alert_detections, metavar="NAME[,NAME]"),
    FilterSpec("severity", "at least this severity: " + ", ".join(_enum_names(record_pb2.AlertSeverity)),
               {"type": "string", "enum": _enum_names(record_pb2.AlertSeverity)}, _alert_severity),
    FilterSpec("client_ip", "alerts naming this client IP", {"type": "string", "pattern": IP_PATTERN}, _alert_ip),
    _string("key", "key", "exact alert key, e.g. conn=C1f2..."),
    _string("id", "id", "one alert by id"),
]
ALERT_BY_NAME = {spec.name: spec for spec in ALERT_FILTERS}


def parse_alert_filters(values: Mapping[str, str], now: float | None = None) -> query_pb2.AlertFilters:
    """Alert filter name -> text -> AlertFilters (as parse_filters)."""
    return _parse(ALERT_BY_NAME, query_pb2.AlertFilters(), values, now)

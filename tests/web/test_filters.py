"""The one filter parser at its boundary: what each documented grammar matches is accepted (and means what it
says), what it does not match is refused, naming the parameter (hypothesis)."""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authwire.query import filters

NOW = 1_800_000_000.0


def _py(pattern: str) -> str:
    return pattern.removeprefix("^").removesuffix("$")


@settings(max_examples=300, deadline=None)
@given(st.from_regex(re.compile(_py(filters.CIDR_PATTERN)), fullmatch=True))
def test_every_documented_cidr_is_an_ip_network(text):
    f = filters.parse_filters({"client_ip": text}, NOW)
    assert f.client_ip == text
    ipaddress.ip_network(text, strict=False)


@settings(max_examples=300, deadline=None)
@given(st.ip_addresses())
def test_every_ip_address_is_accepted(address):
    assert filters.parse_filters({"client_ip": str(address)}, NOW).client_ip == str(address)


@settings(max_examples=300, deadline=None)
@given(st.from_regex(re.compile(_py(filters.TIME_PATTERN)), fullmatch=True))
def test_every_documented_time_parses(text):
    f = filters.parse_filters({"since": text}, NOW)
    assert 0 <= f.since.ToNanoseconds() < 2**63


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30))
def test_anything_else_is_refused_naming_the_parameter(text):
    for name, pattern in [("since", filters.TIME_PATTERN), ("client_ip", filters.CIDR_PATTERN),
                          ("min_rtt", filters.RTT_PATTERN)]:
        if re.fullmatch(_py(pattern), text):
            continue
        with pytest.raises(filters.FilterError) as err:
            filters.parse_filters({name: text}, NOW)
        assert err.value.parameter == name
        assert "<" not in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("text, ns", [
    ("15m", int((NOW - 900) * 1e9)),
    ("1.5h", int((NOW - 5400) * 1e9)),
    ("2026-01-31T12:00:00Z", 1769860800 * 10**9),
    ("2026-01-31T12:00:00.25+01:00", 1769857200 * 10**9 + 250_000_000),
    ("2026-01-31", 1769817600 * 10**9),
    ("999999999w", 0),  # longer ago than the epoch: clamped
])
def test_times(text, ns):
    assert filters.parse_filters({"since": text}, NOW).since.ToNanoseconds() == ns


@pytest.mark.parametrize("name, text", [("client_ip", "999.1.1.1"), ("client_ip", "10.0.0.0/33"),
                                        ("since", "yesterday-ish"), ("status", "-1"), ("status", "600"),
                                        ("hop_distance", "1.5"), ("outcome", "FAILURE"), ("consumer", ""),
                                        ("consumer", "x" * 257), ("min_rtt", "5 ms"), ("bogus", "1")])
def test_bad_values(name, text):
    with pytest.raises(filters.FilterError) as err:
        filters.parse_filters({name: text}, NOW)
    assert err.value.parameter == name


def test_cli_spelling_then_the_same_parser():
    assert filters.cli_spelling("outcome", "AUTH_OUTCOME_FAILURE") == "failure"
    assert filters.cli_spelling("method", "Key-Auth") == "key_auth"
    assert filters.cli_spelling("os", " Linux ") == "linux"
    f = filters.parse_filters({"method": filters.cli_spelling("method", "KEY-AUTH")}, NOW)
    assert f.method == 5


def test_group_by_and_limit():
    assert filters.parse_group_by("client_ip, auth.outcome") == ["client_ip", "auth.outcome"]
    for bad in ("", "client_ip,,", "x", ",".join(["client_ip"] * 6)):
        with pytest.raises(filters.FilterError):
            filters.parse_group_by(bad)
    assert re.fullmatch(_py(filters.GROUP_BY_PATTERN), "syn.signature,auth.outcome")
    assert filters.parse_limit("10000") == 10000
    with pytest.raises(filters.FilterError):
        filters.parse_limit("10001")


@settings(max_examples=300, deadline=None)
@given(st.from_regex(re.compile(_py(filters.IP_PATTERN)), fullmatch=True))
def test_every_documented_ip_is_an_address(text):
    ipaddress.ip_address(text)  # what /v1/inspect?ip= and /v1/connections?client_ip= accept

"""User space's half of the block list's safety: what may ever reach the kernel map (no kernel needed)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authwire import config as config_mod
from authwire.kernel.blocklist import MAX_REASON_CHARS, bounded_reason, check, parse_allow_list

ALLOW = parse_allow_list(["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"])


@given(st.one_of(st.text(max_size=80), st.ip_addresses().map(str)),
       st.one_of(st.floats(allow_nan=True), st.integers(-10, 10**9)))
def test_check_never_raises_and_never_admits_loopback_or_allowed(ip, ttl):
    normalized, why = check(ip, ttl, ALLOW)
    assert bool(normalized) != bool(why)
    if normalized:
        addr = ipaddress.ip_address(normalized)
        assert not addr.is_loopback and not addr.is_unspecified
        assert not any(addr.version == n.version and addr in n for n in ALLOW)
        assert str(addr) == normalized and 0 < float(ttl) <= 30 * 86400


@pytest.mark.parametrize("ip, why", [
    ("127.0.0.1", "loopback"), ("127.255.0.1", "loopback"), ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"), ("10.1.2.3", "allow_list"), ("::ffff:10.1.2.3", "allow_list"),
    ("2001:db8::5", "allow_list"), ("192.0.2.7", "allow_list"), ("999.1.1.1", "invalid_ip"), ("", "invalid_ip"),
])
def test_check_refusals(ip, why):
    assert check(ip, 60, ALLOW) == ("", why)


def test_check_normalizes():
    assert check("::ffff:198.51.100.4", 60, ALLOW) == ("198.51.100.4", "")
    assert check("2001:DB9:0::1", 60, ALLOW) == ("2001:db9::1", "")
    assert check("198.51.100.4", 0, ALLOW) == ("", "bad_ttl")
    assert check("198.51.100.4", float("nan"), ALLOW) == ("", "bad_ttl")


@given(st.text(max_size=1000))
def test_reason_is_bounded_and_printable(reason):
    out = bounded_reason(reason)
    assert len(out) <= MAX_REASON_CHARS and out.isprintable()


def test_config_keys(tmp_path):
    toml = tmp_path / "a.toml"
    toml.write_text('enforce = true\nblock_allow = ["10.0.0.0/8", "fd00::/8"]\n')
    cfg = config_mod.load(config_mod.argparse.Namespace(config=str(toml)), environ={})
    assert cfg.enforce is True and cfg.block_allow == ["10.0.0.0/8", "fd00::/8"]
    assert config_mod.load(None, environ={}).enforce is False   # observe-only by default
    toml.write_text('block_allow = ["10.0.0.0/33"]\n')
    with pytest.raises(config_mod.ConfigError, match="block_allow: '10.0.0.0/33' is not an IP network"):
        config_mod.load(config_mod.argparse.Namespace(config=str(toml)), environ={})

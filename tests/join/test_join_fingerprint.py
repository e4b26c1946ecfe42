"""The SYN signature and OS hint rules of authwire/fingerprint.py, on SYNs as each stack writes them."""

from __future__ import annotations

import pytest

from authwire.join import fingerprint
from authwire.v1.connection_pb2 import SynFingerprint

MSS, NOP, WS, SACK, TS, EOL = 2, 1, 3, 4, 8, 0


def syn(**kw) -> SynFingerprint:
    base = dict(ip_version=4, ttl=64, df=True, window=64240, mss=1460, window_scale=7, ts_val=12345)
    base.update(kw)
    return SynFingerprint(**base)


LINUX = dict(option_kinds=[MSS, SACK, TS, NOP, WS], sack_permitted=True, timestamps=True)
WINDOWS = dict(ttl=128, window=65535, window_scale=8, option_kinds=[MSS, NOP, WS, NOP, NOP, SACK],
               sack_permitted=True, timestamps=False, ts_val=0)
MACOS = dict(window=65535, window_scale=6, option_kinds=[MSS, NOP, WS, NOP, NOP, TS, SACK, EOL],
             sack_permitted=True, timestamps=True)
FREEBSD = dict(window=65535, window_scale=6, option_kinds=[MSS, NOP, WS, SACK, TS],
               sack_permitted=True, timestamps=True)
OPENBSD = dict(window=16384, window_scale=6, option_kinds=[MSS, NOP, NOP, SACK, NOP, WS, NOP, NOP, TS],
               sack_permitted=True, timestamps=True)


@pytest.mark.parametrize(
    "fields, ittl, hops, sig, hint",
    [
        (dict(LINUX), 64, 0, "4:64:1460:m*44:7:MSTNW:df", "linux"),
        (dict(LINUX, ttl=57), 64, 7, "4:64:1460:m*44:7:MSTNW:df", "linux"),
        (dict(LINUX, ip_version=6, df=False, mss=1440, window=64800), 64, 0,
         "6:64:1440:m*45:7:MSTNW:-", "linux"),
        # tcp_timestamps=0, tcp_sack=0, tcp_window_scaling=0: every Linux variant stays Linux-shaped.
        (dict(LINUX, option_kinds=[MSS, NOP, NOP, SACK, NOP, WS], timestamps=False, ts_val=0), 64, 0,
         "4:64:1460:m*44:7:MNNSNW:df", "linux"),
        (dict(LINUX, option_kinds=[MSS, NOP, NOP, TS, NOP, WS], sack_permitted=False), 64, 0,
         "4:64:1460:m*44:7:MNNTNW:df", "linux"),
        (dict(LINUX, option_kinds=[MSS], window_scale=-1, timestamps=False, sack_permitted=False,
              ts_val=0), 64, 0, "4:64:1460:m*44:-:M:df", "linux"),
        (dict(LINUX, ttl=120), 128, 8, "4:128:1460:m*44:7:MSTNW:df", "unknown"),
        (dict(LINUX, ttl=255), 255, 0, "4:255:1460:m*44:7:MSTNW:df", "network_device"),
        (dict(WINDOWS), 128, 0, "4:128:1460:65535:8:MNWNNS:df", "windows"),
        (dict(WINDOWS, ttl=113), 128, 15, "4:128:1460:65535:8:MNWNNS:df", "windows"),
        (dict(MACOS), 64, 0, "4:64:1460:65535:6:MNWNNTSE:df", "macos"),
        (dict(FREEBSD, ttl=60), 64, 4, "4:64:1460:65535:6:MNWST:df", "bsd"),
        (dict(OPENBSD), 64, 0, "4:64:1460:16384:6:MNNSNWNNT:df", "bsd"),
        (dict(ttl=30, option_kinds=[MSS], window=8192, window_scale=-1), 32, 2,
         "4:32:1460:8192:-:M:df", "unknown"),
        (dict(ttl=64, option_kinds=[], mss=0, window=1024, window_scale=-1), 64, 0,
         "4:64:-:1024:-:-:df", "unknown"),
    ],
)
def test_signature_and_hint_per_stack(fields, ittl, hops, sig, hint) -> None:
    s = syn(**fields)
    fingerprint.annotate(s)
    assert (s.initial_ttl, s.hop_distance, s.signature, s.os_hint) == (ittl, hops, sig, hint)
    assert s.os_hint in fingerprint.OS_HINTS


def test_quirks_in_documented_order_and_unknown_options_kept() -> None:
    s = syn(option_kinds=[MSS, SACK, TS, NOP, WS, 30], sack_permitted=True, timestamps=True, ts_val=0,
            tcp_ecn=True, ecn=1, ip_options_len=4, payload_bytes=10, window_scale=15)
    fingerprint.annotate(s)
    assert s.signature == "4:64:1460:m*44:15:MSTNWk30,:df,ecn,ipecn,ipopt,data,ts0,wsbig"
    # An unknown option kind breaks the Linux shape: no claim is made.
    assert s.os_hint == "unknown"


def test_no_syn_seen_is_unknown_and_empty() -> None:
    s = SynFingerprint()  # mid-stream connection: the inspector never saw its SYN
    fingerprint.annotate(s)
    assert (s.initial_ttl, s.hop_distance, s.signature, s.os_hint) == (0, 0, "", "unknown")


def test_initial_ttl_steps() -> None:
    assert [fingerprint.initial_ttl(t) for t in (1, 32, 33, 64, 65, 128, 129, 255)] == [
        32, 32, 64, 64, 128, 128, 255, 255]

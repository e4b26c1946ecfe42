"""The Python mirrors of bpf/inspector.h match what bcc compiled, and the BPF source ships in the package."""

from __future__ import annotations

import ctypes as ct
import importlib.resources

import pytest

from authwire.addresses import normalize_ip
from authwire.kernel import events as ev


def _layout(struct_type) -> list[tuple[str, int, int]]:
    out = []
    for name, ftype in struct_type._fields_:
        field = getattr(struct_type, name)
        out.append((name, field.offset, ct.sizeof(ftype)))
        if isinstance(ftype, type) and issubclass(ftype, ct.Structure):
            out += [(f"{name}.{n}", o, s) for n, o, s in _layout(ftype)]
    return out


@pytest.mark.kernel
def test_ctypes_mirrors_match_compiled_layout(program):
    flows = program.bpf[b"flows"]
    # bcc derives these ctypes types from the structs clang actually compiled.
    assert _layout(ev.AwKey) == _layout(flows.Key)
    assert ct.sizeof(ev.AwFlow) == ct.sizeof(flows.Leaf)
    compiled = {name: (off, size) for name, off, size in _layout(flows.Leaf)}
    for name, off, size in _layout(ev.AwFlow):
        if name.startswith(("dir", "syn.pad", "pad")) and name not in compiled:
            continue   # bcc may flatten arrays of structs / padding differently; sizes still checked
        assert compiled.get(name) == (off, size), name
    assert len(ev.COUNTER_NAMES) == len(program.bpf[b"counters"])
    from authwire.kernel.blocklist import AwAddr, AwBlock

    blocked = program.bpf[b"blocked"]
    assert _layout(AwBlock) == _layout(blocked.Leaf)
    assert ct.sizeof(AwAddr) == ct.sizeof(blocked.Key)


def test_key_normalization_is_direction_free():
    a = ev.make_key("10.0.0.2", 40000, "10.0.0.1", 80)
    b = ev.make_key("10.0.0.1", 80, "10.0.0.2", 40000)
    assert bytes(a) == bytes(b)
    mapped = ev.make_key("::ffff:10.0.0.2", 40000, "10.0.0.1", 80)
    assert bytes(mapped) == bytes(a)   # IPv4-mapped IPv6 is the same flow as plain IPv4
    assert normalize_ip("::ffff:192.0.2.1") == "192.0.2.1"
    assert normalize_ip("2001:db8::1") == "2001:db8::1"


def test_installed_package_ships_the_bpf_source():
    bpf = importlib.resources.files("authwire") / "bpf"
    source = (bpf / "inspector.c").read_text()
    header = (bpf / "inspector.h").read_text()
    assert "aw_tc_ingress" in source and "TRACEPOINT_PROBE(tcp, tcp_retransmit_skb)" in source
    assert "struct aw_flow" in header


def test_built_wheel_contains_the_bpf_source(tmp_path):
    """What pip installs (not just this checkout's symlink) carries bpf/inspector.c and inspector.h."""
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(root)], check=True, timeout=120, capture_output=True)
    wheel = next(tmp_path.glob("authwire-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "authwire/bpf/inspector.c" in names
    assert "authwire/bpf/inspector.h" in names

"""`authwire doctor`: can this host run the kernel inspector? Each failed check says the exact fix."""

from __future__ import annotations

import platform
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from authwire.kernel import capabilities


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _kernel() -> Check:
    release = platform.release()
    try:
        major, minor = (int(x) for x in release.split(".")[:2])
    except ValueError:
        return Check("kernel", False, f"cannot read version from {release!r}", "")
    ok = (major, minor) >= (5, 8)  # BPF ring buffer
    return Check("kernel", ok, release, "" if ok else "upgrade to Linux >= 5.8 (BPF ring buffer)")


def _btf() -> Check:
    ok = Path("/sys/kernel/btf/vmlinux").exists()
    return Check("btf", ok, "/sys/kernel/btf/vmlinux" + (" present" if ok else " missing"),
                 "" if ok else "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (optional for authwire)")


def _bcc() -> Check:
    try:
        import bcc  # noqa: F401
    except ImportError as exc:
        return Check("bcc", False, f"cannot import bcc: {exc}",
                     "apt-get install python3-bpfcc bpfcc-tools, and make the venv with "
                     "/usr/bin/python3 -m venv --system-site-packages (the PyPI 'bcc' is unrelated)")
    return Check("bcc", True, "importable")


def _headers() -> Check:
    build = Path(f"/lib/modules/{platform.release()}/build")
    if (build / "include").exists():
        return Check("kernel headers", True, f"{build} -> {build.resolve()}")
    if Path("/sys/kernel/kheaders.tar.xz").exists():
        return Check("kernel headers", True, "from /sys/kernel/kheaders.tar.xz (CONFIG_IKHEADERS)")
    return Check("kernel headers", False, f"{build} missing",
                 "apt-get install linux-headers-amd64 (or linux-headers-$(uname -r)); where the running "
                 "kernel has none, link them: run `make setup` (scripts/setup-system.sh)")


def _mount(name: str, path: str, fstype: str) -> Callable[[], Check]:
    def check() -> Check:
        mounted = any(line.split()[1] == path for line in Path("/proc/mounts").read_text().splitlines())
        return Check(name, mounted, f"{path} {'mounted' if mounted else 'not mounted'}",
                     "" if mounted else f"mount -t {fstype} {fstype} {path}")
    return check


def _capabilities() -> Check:
    missing = capabilities.missing_for_inspector()
    return Check("capabilities", not missing, "missing " + ", ".join(missing) if missing else "ok",
                 capabilities.FIX if missing else "")


def _clsact() -> Check:
    """Really add a clsact qdisc, in a throwaway network namespace so nothing of the host changes."""
    if not all(capabilities.has(c) for c in (capabilities.CAP_NET_ADMIN, capabilities.CAP_SYS_ADMIN)):
        return Check("tc clsact", False, "not checked (needs CAP_NET_ADMIN + CAP_SYS_ADMIN for a scratch "
                     "network namespace)", "run `authwire doctor` as root")
    ns = f"authwire-doctor-{uuid.uuid4().hex[:8]}"
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True, timeout=10)
        r = subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "clsact"],
                           capture_output=True, text=True, timeout=10)
        ok = r.returncode == 0
        return Check("tc clsact", ok, "supported" if ok else r.stderr.strip(),
                     "" if ok else "use a kernel with CONFIG_NET_SCH_INGRESS and CONFIG_NET_CLS_BPF")
    except (OSError, subprocess.SubprocessError) as exc:
        return Check("tc clsact", False, f"could not test: {exc}", "apt-get install iproute2")
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def _inspector() -> Check:
    """The real thing: compile + verify + attach authwire's program in a scratch namespace."""
    try:
        from authwire.kernel.loader import InspectorUnavailable, probe
    except ImportError as exc:
        return Check("inspector", False, f"not importable: {exc}", "reinstall authwire")
    try:
        return Check("inspector", True, probe())
    except InspectorUnavailable as exc:
        return Check("inspector", False, exc.reason, exc.fix)


CHECKS: list[Callable[[], Check]] = [
    _kernel, _btf, _bcc, _headers,
    _mount("tracefs", "/sys/kernel/tracing", "tracefs"),
    _mount("debugfs", "/sys/kernel/debug", "debugfs"),
    _mount("bpffs", "/sys/fs/bpf", "bpf"),
    _capabilities, _clsact, _inspector,
]


def run_checks() -> list[Check]:
    return [check() for check in CHECKS]


def print_report(checks: list[Check], out: TextIO) -> None:
    for c in checks:
        out.write(f"{'ok  ' if c.ok else 'FAIL'}  {c.name:<15} {c.detail}\n")
        if not c.ok and c.fix:
            out.write(f"      {'':<15} fix: {c.fix}\n")
    failed = [c.name for c in checks if not c.ok]
    out.write("all checks passed: the kernel inspector can run here\n" if not failed else
              f"{len(failed)} check(s) failed: {', '.join(failed)}; `authwire serve` still runs, "
              "with join status INSPECTOR_OFF\n")

"""The pseudo file systems the kernel inspector needs, mounted by serve itself when they are missing.

`ip netns exec NS authwire serve` (how a sidecar joins a gateway's network namespace outside containers)
runs in a fresh mount namespace with a new /sys that has no tracefs, debugfs or bpffs: bcc then finds no
tracepoints. Mounting them there only changes that private mount namespace (ip netns exec makes / a
slave), never the host's. bcc picks its tracefs path when it is imported, so this runs before
`import bcc`.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class PseudoFs:
    name: str
    fstype: str
    path: str

    @property
    def fix(self) -> str:
        return f"mount -t {self.fstype} {self.fstype} {self.path}"


# Order matters: debugfs first, so /sys/kernel/debug/tracing (tracefs' automount) exists as older tools
# expect; tracefs at its own path is what bcc uses when the debugfs one is absent.
NEEDED = (
    PseudoFs("debugfs", "debugfs", "/sys/kernel/debug"),
    PseudoFs("tracefs", "tracefs", "/sys/kernel/tracing"),
    PseudoFs("bpffs", "bpf", "/sys/fs/bpf"),
)


def mount_points(mountinfo: str = "/proc/self/mountinfo") -> set[str]:
    """Mount points of this process' mount namespace (field 5 of mountinfo, octal escapes decoded)."""
    points = set()
    for line in Path(mountinfo).read_text().splitlines():
        fields = line.split()
        if len(fields) > 4:
            points.add(fields[4].encode().decode("unicode_escape"))
    return points


def _mount(fs: PseudoFs) -> str:
    """mount(2) fs at its path; returns "" or the error text."""
    if not os.path.isdir(fs.path):
        return f"{fs.path} does not exist"
    if _libc.mount(fs.fstype.encode(), fs.path.encode(), fs.fstype.encode(), 0, None) != 0:
        return os.strerror(ctypes.get_errno())
    return ""


def ensure_mounted(needed: tuple[PseudoFs, ...] = NEEDED) -> tuple[list[str], list[tuple[PseudoFs, str]]]:
    """Mount whatever of `needed` is missing. Returns (names mounted now, [(fs, why it failed)])."""
    present = mount_points()
    mounted: list[str] = []
    failed: list[tuple[PseudoFs, str]] = []
    for fs in needed:
        if fs.path in present:
            continue
        error = _mount(fs)
        if error:
            failed.append((fs, error))
        else:
            mounted.append(fs.name)
    return mounted, failed

"""Which Linux capabilities this process has, and which the kernel inspector still lacks.

Capabilities, not the uid: a container granted CAP_BPF + CAP_PERFMON + CAP_NET_ADMIN can run the inspector
without root, and root with its capabilities dropped cannot.
"""

from __future__ import annotations

from pathlib import Path

CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 12, 21, 38, 39


def has(cap: int) -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> cap & 1)
    return False


def missing_for_inspector() -> list[str]:
    """Names of the capabilities the inspector needs and lacks (CAP_SYS_ADMIN stands in for BPF+PERFMON)."""
    missing = []
    if not has(CAP_SYS_ADMIN):
        missing += [name for name, cap in (("CAP_BPF", CAP_BPF), ("CAP_PERFMON", CAP_PERFMON)) if not has(cap)]
    if not has(CAP_NET_ADMIN):
        missing.append("CAP_NET_ADMIN")
    return missing


FIX = "run as root, or grant CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (docker: cap_add: [BPF, PERFMON, NET_ADMIN])"

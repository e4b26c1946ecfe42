"""`authwire doctor` reports every requirement of the kernel inspector, with a fix for each failure."""

from __future__ import annotations

import json
import subprocess

from support import AUTHWIRE, IN_CI

EXPECTED = {"kernel", "btf", "bcc", "kernel headers", "tracefs", "debugfs", "bpffs", "capabilities", "tc clsact",
            "inspector"}


def test_doctor_checks_everything_and_names_fixes():
    result = subprocess.run([AUTHWIRE, "doctor", "--format", "json"], capture_output=True, text=True, timeout=60)
    checks = json.loads(result.stdout)
    assert {c["name"] for c in checks} == EXPECTED
    failed = [c for c in checks if not c["ok"]]
    assert all(c["fix"] for c in failed), f"a failed check without a fix: {failed}"
    assert result.returncode == (1 if failed else 0)
    if IN_CI:  # CI machines are set up by `make test` itself: everything must pass there
        assert not failed, failed


def test_doctor_without_privileges_says_what_is_missing():
    # all capabilities dropped (still uid 0, so the venv stays readable wherever CI cloned it)
    result = subprocess.run(["setpriv", "--bounding-set=-all", "--inh-caps=-all", AUTHWIRE, "doctor"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL  capabilities" in result.stdout
    assert "CAP_BPF" in result.stdout and "fix:" in result.stdout
    assert "FAIL  tc clsact       not checked" in result.stdout
    assert "FAIL  inspector" in result.stdout

"""Kernel test fixtures: one compiled inspector per session, a fresh namespace topology per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from authwire.demo.lab import Topology
from support import require_root_bcc

SESSION_MAX_FLOWS = 128   # small on purpose: the eviction test overflows it with a few hundred flows


@pytest.fixture(scope="session")
def program():
    """inspector.c compiled and loaded once (~1.5 s); each test's inspector reuses it."""
    require_root_bcc()
    from authwire.kernel.loader import CompiledProgram

    compiled = CompiledProgram(SESSION_MAX_FLOWS)
    yield compiled
    compiled.close()


@pytest.fixture
def topo() -> Iterator[Topology]:
    require_root_bcc()
    with Topology(clients=1) as t:
        yield t

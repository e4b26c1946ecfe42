"""Kernel test fixtures: one compiled inspector per session, a fresh namespace topology per test."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from netns import Topology
from support import require_root_bcc, wait_until

SESSION_MAX_FLOWS = 128   # small on purpose: the eviction test overflows it with a few hundred flows


@pytest.fixture(scope="session")
def program():
    """inspector.c compiled and loaded once (~1.5 s); each test's inspector reuses it."""
    require_root_bcc()
    from authwire.kernel.loader import CompiledProgram

    compiled = CompiledProgram(SESSION_MAX_FLOWS)
    yield compiled
    compiled.close()


@contextlib.contextmanager
def running_inspector(program, topo: Topology, grace_period: float = 30.0) -> Iterator:
    """An inspector on the server side of every veth of topo; detached afterwards even on failure."""
    from authwire.config import Config
    from authwire.kernel import start_inspector

    config = Config(iface=topo.server_ifaces, max_flows=program.max_flows, grace_period=grace_period)
    inspector = start_inspector(config, None, netns=topo.server_ns, program=program)
    try:
        yield inspector
    finally:
        inspector.stop()


@pytest.fixture
def topo() -> Iterator[Topology]:
    require_root_bcc()
    with Topology(clients=1) as t:
        yield t


def wait_connection(inspector, client: tuple[str, int], server: tuple[str, int], *, state=None,
                    timeout: float = 5.0):
    """The newest connection on this tuple once it is reported (and in `state`, if given)."""
    def found():
        conns = inspector.table.candidates(client[0], client[1], server[0], server[1])
        if conns and (state is None or conns[0].state == state):
            return conns[0]
        return None
    return wait_until(found, timeout, f"connection {client} -> {server}" + (f" in state {state}" if state else ""))

"""Running an inspector in a test topology, and waiting for what it reports (imported by the kernel tests;
fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from authwire.demo.lab import Topology
from support import wait_until


@contextlib.contextmanager
def running_inspector(program, topo: Topology, grace_period: float = 30.0, *, iface: list[str] | None = None,
                      block_allow: list[str] | None = None) -> Iterator:
    """An inspector on the server side of every veth of topo (or `iface`); detached afterwards even on
    failure. It enforces its block list if the program was compiled to (program.enforce)."""
    from authwire.config import Config
    from authwire.kernel import start_inspector

    config = Config(iface=iface or topo.server_ifaces, max_flows=program.max_flows, grace_period=grace_period,
                    enforce=program.enforce, block_allow=block_allow or [])
    inspector = start_inspector(config, None, netns=topo.server_ns, program=program)
    try:
        yield inspector
    finally:
        inspector.stop()


def wait_connection(inspector, client: tuple[str, int], server: tuple[str, int], *, state=None,
                    timeout: float = 5.0):
    """The newest connection on this tuple once it is reported (and in `state`, if given)."""
    def found():
        conns = inspector.table.candidates(client[0], client[1], server[0], server[1])
        if conns and (state is None or conns[0].state == state):
            return conns[0]
        return None
    return wait_until(found, timeout, f"connection {client} -> {server}" + (f" in state {state}" if state else ""))

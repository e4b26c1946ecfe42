"""Loader behaviour around attach/detach: exact filters, qdisc cleanup, clear errors, netns fixture cleanup."""

from __future__ import annotations

import pytest
from pyroute2 import IPRoute

from authwire.config import Config
from authwire.demo.lab import Topology, run
from authwire.demo.lab import namespaces_of_this_process as leftover_namespaces
from authwire.kernel import InspectorUnavailable, start_inspector
from authwire.kernel.loader import TC_INGRESS, list_filters

pytestmark = pytest.mark.kernel


def _qdiscs(ns: str, iface: str) -> str:
    return run("tc", "-n", ns, "qdisc", "show", "dev", iface).stdout


def test_stop_removes_filters_and_the_clsact_it_created_and_is_idempotent(program, topo):
    iface = topo.server_ifaces[0]
    inspector = start_inspector(Config(iface=[iface], max_flows=program.max_flows), None,
                                netns=topo.server_ns, program=program)
    try:
        assert sorted(list_filters(topo.server_ns, iface)) == ["authwire-egress", "authwire-ingress"]
        assert "clsact" in _qdiscs(topo.server_ns, iface)
        assert inspector.interfaces == [iface]
    finally:
        inspector.stop()
    inspector.stop()   # idempotent
    assert list_filters(topo.server_ns, iface) == []
    assert "clsact" not in _qdiscs(topo.server_ns, iface)


def test_foreign_filters_and_their_qdisc_are_left_alone(program, topo):
    iface = topo.server_ifaces[0]
    # Another tool's bpf filter (this kernel has no matchall/u32): any program, a name that is not ours.
    with IPRoute(netns=topo.server_ns) as ipr:
        index = ipr.link_lookup(ifname=iface)[0]
        ipr.tc("add", "clsact", index)
        ipr.tc("add-filter", "bpf", index, ":1", fd=program.ingress.fd, name="other-tool", parent=TC_INGRESS,
               prio=99, protocol=3, classid=1, direct_action=True)
    inspector = start_inspector(Config(iface=[iface], max_flows=program.max_flows), None,
                                netns=topo.server_ns, program=program)
    inspector.stop()
    shown = topo.server_exec("tc", "filter", "show", "dev", iface, "ingress").stdout
    assert "other-tool" in shown and "authwire" not in shown
    assert "clsact" in _qdiscs(topo.server_ns, iface)


def test_missing_interface_is_a_clear_error_and_attaches_nothing(program, topo):
    iface = topo.server_ifaces[0]
    with pytest.raises(InspectorUnavailable) as info:
        start_inspector(Config(iface=[iface, "nope0"], max_flows=program.max_flows), None,
                        netns=topo.server_ns, program=program)
    assert "nope0" in info.value.reason and "--iface" in info.value.fix
    assert list_filters(topo.server_ns, iface) == []


def test_default_interfaces_are_up_non_loopback_plus_lo(program, topo):
    inspector = start_inspector(Config(max_flows=program.max_flows), None, netns=topo.server_ns,
                                program=program)
    try:
        assert inspector.interfaces == [*topo.server_ifaces, "lo"]
        assert list_filters(topo.server_ns, "lo") == ["authwire-ingress"]   # lo: ingress only
    finally:
        inspector.stop()
    assert list_filters(topo.server_ns, "lo") == []


def test_topology_removes_its_namespaces_even_on_failure():
    before = set(leftover_namespaces())
    with pytest.raises(RuntimeError), Topology(clients=2) as topo:
        made = {topo.server_ns, *(c.ns for c in topo.clients)}
        assert made <= set(leftover_namespaces())
        raise RuntimeError("test body failed")
    assert not (made & set(leftover_namespaces()))
    assert set(leftover_namespaces()) <= before


def test_sigterm_detaches_a_process_that_installed_no_handler(topo):
    """A program embedding the inspector (no signal handling of its own) still detaches on SIGTERM."""
    import signal
    import subprocess
    import sys

    from support import wait_until

    iface = topo.server_ifaces[0]
    script = (
        "import sys, time\n"
        "from authwire.config import Config\n"
        "from authwire.kernel import start_inspector\n"
        f"start_inspector(Config(iface=[{iface!r}], max_flows=256), None, netns={topo.server_ns!r})\n"
        "print('attached', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "attached"
        assert sorted(list_filters(topo.server_ns, iface)) == ["authwire-egress", "authwire-ingress"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == -signal.SIGTERM   # still dies by the signal, as it would have
        wait_until(lambda: list_filters(topo.server_ns, iface) == [], 5, "the filters to be removed")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

"""Compile bpf/inspector.c with bcc, attach it to tc clsact with pyroute2, drain its ring buffer.

Lifecycle: ``start_inspector`` checks prerequisites (raising InspectorUnavailable with the exact fix),
compiles once, removes authwire filters a crashed run left behind, attaches ingress+egress filters
(ingress only on ``lo``: every loopback packet passes egress and ingress, so one hook sees it once), and
starts the poller thread that feeds the ConnectionTable. ``Inspector.stop`` detaches (idempotent); it also
runs at interpreter exit and on SIGTERM when nothing else handles that signal.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes as ct
import fcntl
import importlib.resources
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from authwire.kernel import capabilities
from authwire.kernel import events as ev
from authwire.kernel.blocklist import BlockList, bounded_reason, parse_allow_list

log = logging.getLogger(__name__)

FILTER_NAME = "authwire"          # TCA_BPF_NAME prefix: how we recognise our own (and stale) filters
FILTER_PRIO = 7                   # arbitrary fixed tc priority for our filters
TC_INGRESS = 0xFFFFFFF2           # clsact ingress parent (ffff:fff2)
TC_EGRESS = 0xFFFFFFF3            # clsact egress parent (ffff:fff3)
POLL_TIMEOUT_MS = 100             # poller wakes at least this often to notice stop()
SWEEP_INTERVAL_S = 5.0            # how often open flows are checked for silent LRU eviction
BATCH_WAIT_S = 0.002              # after a small batch, wait this long so the next one is bigger
BATCH_MIN_RECORDS = 64            # a batch at least this big is followed by the next poll at once
ETH_P_ALL = 0x0003


class InspectorUnavailable(Exception):
    """The kernel inspector cannot run here. `reason` says what is missing, `fix` what to do."""

    def __init__(self, reason: str, fix: str) -> None:
        super().__init__(f"{reason} (fix: {fix})")
        self.reason = reason
        self.fix = fix


# -- prerequisites ---------------------------------------------------------------------------------------

def _headers_present() -> bool:
    build = Path("/lib/modules") / os.uname().release / "build"
    return (build / "include").exists() or Path("/sys/kernel/kheaders.tar.xz").exists()


def check_prerequisites() -> None:
    """Raise InspectorUnavailable naming the first missing prerequisite."""
    missing = capabilities.missing_for_inspector()
    if missing:
        raise InspectorUnavailable(f"missing capabilities {', '.join(missing)} (loading BPF and attaching tc "
                                   "filters needs them)", f"{capabilities.FIX}, or pass --no-inspector")
    _mount_pseudo_filesystems()   # before `import bcc`: it picks its tracefs path at import time
    try:
        import bcc  # noqa: F401
    except ImportError as exc:
        raise InspectorUnavailable(f"bcc is not importable ({exc})",
                                   "apt-get install python3-bpfcc bpfcc-tools, and make the venv with "
                                   "/usr/bin/python3 -m venv --system-site-packages (or run `make setup`)") \
            from exc
    if not _headers_present():
        raise InspectorUnavailable(
            f"no kernel headers under /lib/modules/{os.uname().release}/build",
            "apt-get install linux-headers-$(uname -r) (or linux-headers-amd64 and link it: `make setup`)")
    if not _tracefs_present():
        raise InspectorUnavailable("tracefs is not mounted (/sys/kernel/tracing)",
                                   "mount -t tracefs tracefs /sys/kernel/tracing (or run `make setup`)")


def _tracefs_present() -> bool:
    return Path("/sys/kernel/tracing/events/tcp").exists() or \
        Path("/sys/kernel/debug/tracing/events/tcp").exists()


def _mount_pseudo_filesystems() -> None:
    """Mount tracefs/debugfs/bpffs where they are missing (a fresh mount namespace: `ip netns exec`).

    Only a missing tracefs is fatal (the tracepoints need it); the others are mounted for bcc's and
    bpftool's sake when possible."""
    from authwire.kernel import mounts

    done, failed = mounts.ensure_mounted()
    if done:
        log.info("mounted %s (missing in this mount namespace, e.g. under `ip netns exec`)", ", ".join(done))
    if _tracefs_present():
        return
    why = "; ".join(f"mount {fs.fstype} on {fs.path}: {error}" for fs, error in failed) or "no tcp events"
    raise InspectorUnavailable(
        f"tracefs is not mounted in this mount namespace and mounting it failed ({why})",
        "mount -t tracefs tracefs /sys/kernel/tracing in the same mount namespace before starting serve "
        "(with `ip netns exec NS sh -c 'mount -t tracefs tracefs /sys/kernel/tracing && authwire serve'`), "
        "grant CAP_SYS_ADMIN so serve mounts it itself, or join the namespace with "
        "`nsenter --net=/run/netns/NS authwire serve`, which keeps the host's mounts")


def source_dir() -> contextlib.AbstractContextManager[Path]:
    """The installed package's bpf/ directory (package data) as a real path."""
    return importlib.resources.as_file(importlib.resources.files("authwire") / "bpf")


# -- compiled program ------------------------------------------------------------------------------------

def _recent_slots(max_flows: int) -> int:
    slots = 1
    while slots < 2 * max_flows:
        slots *= 2
    return max(slots, 64)


LOAD_ATTEMPTS = 5


def _load_func(bpf, name: bytes, prog_type: int):
    """bpf.load_func, again when the kernel says EAGAIN: BPF_PROG_LOAD returns it when the verifier was
    interrupted (a signal pending, kernel/bpf/verifier.c do_check), and libbpf retries it the same way
    (tools/lib/bpf/bpf.c sys_bpf_prog_load, 5 attempts). Seen here while other programs were verified."""
    for attempt in range(1, LOAD_ATTEMPTS + 1):
        try:
            return bpf.load_func(name, prog_type)
        except Exception as exc:
            if "Resource temporarily unavailable" not in str(exc) or attempt == LOAD_ATTEMPTS:
                raise
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")


class CompiledProgram:
    """One bcc compile + load of inspector.c (maps, tc programs, attached tracepoints, ring buffer).

    Tests and benchmarks compile once and hand the program to several inspectors in turn; the ring buffer
    callback dispatches to whichever inspector currently consumes it.
    """

    def __init__(self, max_flows: int, enforce: bool = False, max_blocked: int = 16384) -> None:
        import bcc

        self.max_flows = max_flows
        self.recent_slots = _recent_slots(max_flows)
        # Compile-time, not a runtime switch: without --enforce the loaded program has no drop verdict.
        self.enforce = enforce
        self.max_blocked = max_blocked
        with source_dir() as bpf_dir:
            src = bpf_dir / "inspector.c"
            if not src.exists():
                raise InspectorUnavailable(f"{src} is missing from the installed package",
                                           "reinstall authwire (pip install -e . from the checkout)")
            cflags = [f"-I{bpf_dir}", f"-DAW_MAX_FLOWS={max_flows}", f"-DAW_RECENT_SLOTS={self.recent_slots}",
                      f"-DAW_MAX_BLOCKED={max_blocked}", "-Wno-unused-function"]
            if enforce:
                cflags.append("-DAW_ENFORCE")
            try:
                self.bpf = bcc.BPF(src_file=str(src).encode(), cflags=cflags)
                self.ingress = _load_func(self.bpf, b"aw_tc_ingress", bcc.BPF.SCHED_CLS)
                self.egress = _load_func(self.bpf, b"aw_tc_egress", bcc.BPF.SCHED_CLS)
            except Exception as exc:
                raise InspectorUnavailable(f"BPF compile/load failed: {exc}",
                                           "run `authwire doctor`; check kernel headers and dmesg") from exc
        self.flows_fd = self.bpf[b"flows"].map_fd
        self.recent_fd = self.bpf[b"recent"].map_fd
        self.blocked_fd = self.bpf[b"blocked"].map_fd
        self._counters = self.bpf[b"counters"]
        # consumer(memory, offsets, lengths) of whichever inspector runs now (RingReader's handler)
        self.consumer: Any = None
        from authwire.kernel.ringbuf import RingReader

        events = self.bpf[b"events"]
        self.ring = RingReader(events.map_fd, int(events.max_entries))
        self._lib = __import__("bcc.libbcc", fromlist=["lib"]).lib

    def _on_records(self, memory: memoryview, offsets: list[int], lengths: list[int]) -> None:
        consumer = self.consumer
        if consumer is not None:
            consumer(memory, offsets, lengths)

    def poll(self, timeout_ms: int) -> int:
        """Drain the ring buffer (waiting up to timeout_ms when it is empty); returns records handed over."""
        return self.ring.poll(self._on_records, timeout_ms)

    def counter_sums(self) -> dict[str, int]:
        out = {}
        for i, name in enumerate(ev.COUNTER_NAMES):
            out[name] = int(sum(self._counters[ct.c_int(i)]))
        return out

    def lookup(self, key: bytes) -> ev.AwFlow | None:
        k = ev.AwKey.from_buffer_copy(key)
        leaf = ev.AwFlow()
        if self._lib.bpf_lookup_elem(self.flows_fd, ct.byref(k), ct.byref(leaf)) != 0:
            return None
        return leaf

    def forget(self, key: bytes) -> None:
        """Clear a key's recent-slot (user space counted its eviction): its next packet then starts a
        mid-stream flow without the kernel counting the same eviction again."""
        h = key_hash(key)
        idx = ct.c_uint32(h & (self.recent_slots - 1))
        current = ct.c_uint32(0)
        if self._lib.bpf_lookup_elem(self.recent_fd, ct.byref(idx), ct.byref(current)) == 0 and \
                current.value == (h | 1):
            zero = ct.c_uint32(0)
            self._lib.bpf_update_elem(self.recent_fd, ct.byref(idx), ct.byref(zero), 0)

    def clear_flows(self) -> None:
        """Forget every flow, block entry and recently-closed key (a reused program starts afresh: a new
        flow on a 4-tuple an earlier user closed must not be taken for a late packet of that one)."""
        self.bpf[b"flows"].clear()
        self.bpf[b"blocked"].clear()
        self.bpf[b"sockfacts"].clear()
        self.bpf[b"recent"].clear()   # an array: clear() zeroes each slot

    def close(self) -> None:
        self.consumer = None
        self.ring.close()
        self.bpf.cleanup()


def key_hash(key: bytes) -> int:
    """inspector.c key_hash(): FNV-1a over the key's native 32-bit words, then murmur3's finalizer."""
    h = 2166136261
    for i in range(0, len(key), 4):
        h ^= int.from_bytes(key[i:i + 4], "little")
        h = (h * 16777619) & 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


# -- tc attach / detach ----------------------------------------------------------------------------------

@contextlib.contextmanager
def _ipr(netns: str | None) -> Iterator[Any]:
    from pyroute2 import IPRoute

    ipr = IPRoute(netns=netns) if netns else IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def default_interfaces(netns: str | None = None) -> list[str]:
    """Every UP non-loopback interface in the (current) network namespace, plus lo."""
    names = []
    with _ipr(netns) as ipr:
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME")
            up = bool(link["flags"] & 1)
            if name != "lo" and up:
                names.append(name)
    return names + ["lo"]


def _our_filters(ipr: Any, index: int, parent: int) -> list[Any]:
    found = []
    try:
        filters = ipr.get_filters(index, parent=parent)
    except Exception:  # no clsact qdisc: nothing of ours either
        return []
    for f in filters:
        opts = f.get_attr("TCA_OPTIONS")
        name = opts.get_attr("TCA_BPF_NAME") if opts is not None else None
        if f.get_attr("TCA_KIND") == "bpf" and name and name.startswith(FILTER_NAME):
            found.append(f)
    return found


def remove_filters(netns: str | None, interfaces: list[str]) -> int:
    """Delete every authwire filter on these interfaces (ours or a crashed run's). Returns how many."""
    removed = 0
    with _ipr(netns) as ipr:
        for name in interfaces:
            links = ipr.link_lookup(ifname=name)
            if not links:
                continue
            for parent in (TC_INGRESS, TC_EGRESS):
                for f in _our_filters(ipr, links[0], parent):
                    with contextlib.suppress(Exception):   # already gone: fine
                        ipr.tc("del-filter", "bpf", links[0], f["handle"], parent=parent, info=f["info"])
                        removed += 1
    return removed


def remove_idle_clsact(netns: str | None, interfaces: list[str]) -> None:
    """Delete the clsact qdisc of these interfaces when no tc filter at all is left on it."""
    with _ipr(netns) as ipr:
        for name in interfaces:
            links = ipr.link_lookup(ifname=name)
            if not links:
                continue
            busy = False
            for parent in (TC_INGRESS, TC_EGRESS):
                with contextlib.suppress(Exception):
                    busy = busy or any(f.get_attr("TCA_OPTIONS") is not None
                                       for f in ipr.get_filters(links[0], parent=parent))
            if not busy:
                with contextlib.suppress(Exception):
                    ipr.tc("del", "clsact", links[0])


def list_filters(netns: str | None, interface: str) -> list[str]:
    """Names of authwire filters on an interface (for doctor and tests)."""
    with _ipr(netns) as ipr:
        links = ipr.link_lookup(ifname=interface)
        if not links:
            return []
        return [f.get_attr("TCA_OPTIONS").get_attr("TCA_BPF_NAME")
                for parent in (TC_INGRESS, TC_EGRESS) for f in _our_filters(ipr, links[0], parent)]


def _attach(netns: str | None, interfaces: list[str], program: CompiledProgram,
            created_qdisc: list[str]) -> dict[int, str]:
    """Attach ingress (+ egress except on lo) filters; returns ifindex -> name. Interfaces whose clsact
    qdisc we had to create are appended to created_qdisc (removed again on stop if nothing else uses it)."""
    names: dict[int, str] = {}
    with _ipr(netns) as ipr:
        for name in interfaces:
            links = ipr.link_lookup(ifname=name)
            if not links:
                raise InspectorUnavailable(f"interface {name!r} does not exist in this network namespace",
                                           "pass an existing interface with --iface (see `ip link`)")
            index = links[0]
            names[index] = name
            try:
                ipr.tc("add", "clsact", index)
                created_qdisc.append(name)
            except Exception as exc:
                if getattr(exc, "code", None) != 17:   # EEXIST: a clsact qdisc is already there
                    raise InspectorUnavailable(f"cannot add clsact qdisc on {name}: {exc}",
                                               "use a kernel with CONFIG_NET_SCH_INGRESS") from exc
            hooks = [(program.ingress, TC_INGRESS, "ingress")]
            if name != "lo":
                hooks.append((program.egress, TC_EGRESS, "egress"))
            for fn, parent, label in hooks:
                ipr.tc("add-filter", "bpf", index, ":1", fd=fn.fd, name=f"{FILTER_NAME}-{label}",
                       parent=parent, prio=FILTER_PRIO, protocol=ETH_P_ALL, classid=1, direct_action=True)
    return names


# -- the running inspector -------------------------------------------------------------------------------

LOCK_DIR = Path("/run/authwire")


def claim_namespace(netns: str | None) -> int:
    """Hold the one-inspector-per-network-namespace lock; returns its fd (closing it releases the lock).

    At start an inspector replaces the authwire filters it finds, which is right for filters a crashed run
    left behind but would silently take over (and, on exit, remove) those of a sidecar still running. The
    kernel drops a flock when its holder dies, so a crashed run never blocks the next one.
    """
    ns_path = f"/run/netns/{netns}" if netns else "/proc/self/ns/net"
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    path = LOCK_DIR / f"inspector-netns-{os.stat(ns_path).st_ino}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise InspectorUnavailable(
            f"another authwire kernel inspector (pid {owner}) is attached in this network namespace",
            "stop that sidecar first, or run this one with --no-inspector") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


class Inspector:
    """A running kernel inspector: filters attached, poller thread feeding `table`."""

    def __init__(self, program: CompiledProgram, interfaces: list[str], netns: str | None,
                 grace_period: float, counters: Any = None, owns_program: bool = True,
                 block_allow: list[str] | None = None) -> None:

        self.program = program
        self.blocklist = BlockList(program, parse_allow_list(block_allow or []))
        self.interfaces = list(interfaces)
        self.netns = netns
        self._app_counters = counters
        self._owns_program = owns_program
        self._baseline = program.counter_sums()
        self._ifnames: dict[int, str] = {}
        self._created_qdisc: list[str] = []
        from authwire.kernel.connection_table import ConnectionTable  # here: it imports authwire.kernel.events

        self.table = ConnectionTable(grace_period, live_lookup=program.lookup,
                                     kernel_counters=self.kernel_counters,
                                     ifname=lambda index: self._ifnames.get(index, str(index)),
                                     forget_key=program.forget)
        self.decode_errors = 0
        self._stop = threading.Event()
        self._stopped = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._poll_loop, name="authwire-kernel-poller", daemon=True)
        self._lock_fd = -1

    def _start(self) -> None:
        self._lock_fd = claim_namespace(self.netns)
        remove_filters(self.netns, self.interfaces)   # stale filters from a crashed run
        self.program.consumer = self._on_event
        try:
            self._ifnames = _attach(self.netns, self.interfaces, self.program, self._created_qdisc)
        except BaseException:
            remove_filters(self.netns, self.interfaces)
            remove_idle_clsact(self.netns, self._created_qdisc)
            self.program.consumer = None
            os.close(self._lock_fd)
            raise
        self._thread.start()

    def _on_event(self, memory: memoryview, offsets: list[int], lengths: list[int]) -> None:
        """A batch of ring-buffer records, decoded in place and applied to the table in one go."""
        records, bad = ev.read_events(memory, offsets, lengths)
        if bad:
            self.decode_errors += bad
            if self._app_counters is not None:
                self._app_counters.inc("kernel.decode_errors", n=bad)
        try:
            self.table.apply_records(records)
        except Exception:   # a table bug must not kill the poller; counted and logged
            self.decode_errors += len(records)
            log.exception("applying kernel events failed")

    def _poll_loop(self) -> None:
        last_sweep = time.monotonic()
        while not self._stop.is_set():
            try:
                if self.program.poll(POLL_TIMEOUT_MS) < BATCH_MIN_RECORDS:
                    # Let events gather: the kernel wakes a caught-up reader on every event, which made the
                    # wake-up, not the event, the poller's main cost. Bounded delay (≪ --join-wait).
                    time.sleep(BATCH_WAIT_S)
            except Exception:   # keep draining; a bad event must not stop the inspector
                log.exception("kernel ring buffer poll failed")
                time.sleep(0.1)
            now = time.monotonic()
            if now - last_sweep >= SWEEP_INTERVAL_S:
                last_sweep = now
                try:
                    self.blocklist.expire()
                except Exception:
                    log.exception("expiring block-list entries failed")
                # Silent LRU evictions are only possible once the map has been filled, and lost close
                # events only after a failed ring-buffer reserve: otherwise there is nothing to find.
                kc = self.kernel_counters()
                if kc["flows_opened"] > self.program.max_flows or kc["ringbuf_reserve_failed"] > 0:
                    self.table.sweep()

    def kernel_counters(self) -> dict[str, int]:
        sums = self.program.counter_sums()
        return {name: sums[name] - self._baseline.get(name, 0) for name in sums}

    def counters(self) -> dict[str, int]:
        """Live kernel counters (per-CPU sums since this inspector started) plus the table's own."""
        out = self.kernel_counters()
        # evictions: all of them; evictions_swept: the part user space found (flow gone from the map
        # before the kernel saw another packet of it, or its recent-slot taken by another key).
        out["evictions"] += self.table.evictions_swept
        out["evictions_swept"] = self.table.evictions_swept
        out["events_applied"] = self.table.events_applied
        out["decode_errors"] = self.decode_errors
        out["listener_errors"] = self.table.listener_errors
        out["flows_open"] = self.table.open_count()
        out.update(self.blocklist.counters())
        return out

    # -- the opt-in response (issue 12): the block list. Signatures promised to the detections. --------

    @property
    def enforce(self) -> bool:
        """True when matching SYNs are really dropped (serve --enforce); False: dry run, counted only."""
        return self.blocklist.enforce

    def block(self, ip: str, ttl_seconds: float, reason: str) -> bool:
        """Put ip in the kernel block list for ttl_seconds (new SYNs from it dropped, or counted as
        "would drop" without --enforce). False when refused: loopback, unspecified, in `block_allow`, not
        an IP, ttl not in (0, 30 days], map full, inspector stopped (each counted as block_refused_<why>).
        A known IP gets the new TTL and reason. Never raises for bad input."""
        ok, detail = self.blocklist.add(ip, ttl_seconds, reason)
        if ok:
            log.info("blocked %s for %.0f s (%s)%s", detail, ttl_seconds, bounded_reason(reason),
                     "" if self.enforce else " [dry run: counted, not dropped]")
        return ok

    def unblock(self, ip: str) -> bool:
        """Remove ip from the block list; True if it was there."""
        return self.blocklist.remove(ip)

    def blocked(self) -> list:
        """The live entries (authwire.kernel.blocklist.BlockEntry), soonest expiry first."""
        return self.blocklist.entries()

    def stop(self) -> None:
        """Detach the filters and stop the poller. Idempotent; safe from signal handlers and atexit."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._stop.set()
        self.blocklist.close()
        try:
            remove_filters(self.netns, self.interfaces)
            remove_idle_clsact(self.netns, self._created_qdisc)
        except Exception:
            log.exception("removing authwire tc filters failed")
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=2)
        self.program.consumer = None
        if self._owns_program:
            with contextlib.suppress(Exception):
                self.program.close()
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)


def _install_sigterm(inspector: Inspector) -> None:
    """Detach on SIGTERM when no one else handles it (serve installs its own handler and calls stop)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        inspector.stop()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)


def start_inspector(config: Any, counters: Any = None, *, netns: str | None = None,
                    program: CompiledProgram | None = None) -> Inspector:
    """Start the kernel inspector for config.iface (default: UP non-loopback interfaces plus lo).

    netns: attach in that named network namespace instead of the current one (tests, benchmarks).
    program: reuse an already compiled program (tests compile once per session); not closed on stop().
    Raises InspectorUnavailable(reason, fix) when this host cannot run it.
    """
    if getattr(config, "no_inspector", False):
        raise InspectorUnavailable("disabled by --no-inspector", "drop --no-inspector")
    check_prerequisites()
    if shutil.which("tc") is None:
        log.debug("tc binary not found; pyroute2 does the attaching, so this is only informational")
    interfaces = list(getattr(config, "iface", None) or []) or default_interfaces(netns)
    max_flows = int(getattr(config, "max_flows", 65536))
    if max_flows < 1:
        raise InspectorUnavailable(f"--max-flows {max_flows} is not positive", "pass --max-flows >= 1")
    owns = program is None
    enforce = bool(getattr(config, "enforce", False))
    if program is None:
        program = CompiledProgram(max_flows, enforce=enforce)
    else:
        if program.enforce != enforce:
            raise ValueError(f"program compiled with enforce={program.enforce}, config says {enforce}")
        program.clear_flows()
    try:
        inspector = Inspector(program, interfaces, netns, float(getattr(config, "grace_period", 30.0)),
                              counters, owns_program=owns, block_allow=list(getattr(config, "block_allow", [])))
    except ValueError as exc:   # a bad block_allow entry (config.py checks it first for serve)
        if owns:
            program.close()
        raise InspectorUnavailable(f"block_allow: {exc}", "fix the block_allow setting") from exc
    try:
        inspector._start()
    except InspectorUnavailable:
        if owns:
            program.close()
        raise
    except Exception as exc:
        if owns:
            program.close()
        raise InspectorUnavailable(f"attaching tc filters failed: {exc}",
                                   "run `authwire doctor`; check the interface names and CAP_NET_ADMIN") \
            from exc
    atexit.register(inspector.stop)
    _install_sigterm(inspector)
    log.info("kernel inspector attached to %s (max %d flows; block list %s)", ", ".join(inspector.interfaces),
             max_flows, "ENFORCING: blocked sources' new SYNs are dropped" if enforce else
             "dry run: observe only, every path returns TC_ACT_UNSPEC")
    return inspector


def probe() -> str:
    """Compile, load and attach the real program in a throwaway network namespace, then remove it all.

    Returns a one-line summary; raises InspectorUnavailable with the reason and fix. Used by `doctor`.
    """
    import subprocess
    import uuid
    from types import SimpleNamespace

    check_prerequisites()
    ns = f"authwire-probe-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True, timeout=10)
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True, capture_output=True, timeout=10)
        inspector = start_inspector(SimpleNamespace(iface=["lo"], max_flows=1024, grace_period=1.0),
                                    netns=ns)
        inspector.stop()
    except (OSError, subprocess.SubprocessError) as exc:
        raise InspectorUnavailable(f"cannot make a scratch network namespace: {exc}",
                                   "run as root with iproute2 installed") from exc
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
    return f"bpf/inspector.c compiled, verified and attached to tc clsact ({time.monotonic() - started:.1f} s)"

"""The live connection table: every TCP connection the kernel inspector reported, as Connection messages.

Fed by the inspector's poller thread (``apply``), read by the join and the Connections RPC from other
threads. Flows are keyed by their 4-tuple with the client (SYN sender) first; a tuple can carry several
connections over time (port reuse), kept newest SYN first. Closed connections stay for ``grace_period``
seconds so reports that arrive after the connection ended can still join. Open flows read their live
counters from the kernel's flow map on demand; an open flow whose kernel entry vanished was evicted from
the LRU map (counted, state EVICTED).
"""

from __future__ import annotations

import functools
import itertools
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable

from google.protobuf.timestamp_pb2 import Timestamp

from authwire import addresses
from authwire.join import fingerprint
from authwire.kernel import events as ev
from authwire.protowire import message_field, uvarint
from authwire.v1 import auth_event_pb2, connection_pb2

log = logging.getLogger(__name__)

TupleKey = tuple[str, int, str, int]
OFFSET_REFRESH_NS = 10_000_000_000
Listener = Callable[[connection_pb2.Connection], None]

_RUN_PREFIX = secrets.token_hex(4)
_uid_counter = itertools.count(1)


def _new_uid() -> str:
    # Unique per sidecar run (random run prefix + counter); cheap enough for the poller's hot path.
    return f"C{_RUN_PREFIX}{next(_uid_counter):x}"


def community_id(ends: TupleKey) -> str:
    try:
        return addresses.community_id(*ends)
    except Exception:  # never lose a flow over its Community ID
        return ""


class _Flow:
    """One connection. Its kernel snapshot is kept as the event's raw bytes and decoded into an AwFlow
    only when a Connection is built from it: most opened events are never read."""

    __slots__ = ("uid", "key", "first_ns", "ends", "_raw", "_snapshot", "interface", "mid_stream", "community_id",
                 "closed", "evicted", "closed_at", "close_wall_ns", "tuples", "handshake", "light", "light_reverse")

    def __init__(self, uid: str, key: bytes, first_ns: int, ends: TupleKey, raw: bytes,
                 interface: str, mid_stream: bool) -> None:
        self.uid = uid
        self.mid_stream = mid_stream   # first seen without its SYN: direction guessed
        self.key = key                 # the kernel's normalized key (bytes of AwKey)
        self.first_ns = first_ns       # with key, the kernel's identity of this flow
        self.ends = ends               # (client ip, client port, server ip, server port)
        self._raw: bytes | None = raw  # last state the kernel reported (event), not decoded yet
        self._snapshot: ev.AwFlow | None = None
        self.interface = interface
        self.community_id = ""         # computed when a full Connection is first built (costly)
        self.closed = False
        self.evicted = False
        self.closed_at = 0.0           # time.monotonic() when we learned it closed, for the grace period
        self.close_wall_ns = 0         # wall clock close time for evicted flows (the kernel has none)
        self.tuples: list[TupleKey] = []
        self.handshake: connection_pb2.Connection | None = None  # cached once established
        self.light = b""               # serialized light Connection for listeners, without its state
        self.light_reverse = b""       # the same with the endpoints swapped (mid-stream flows)

    @property
    def snapshot(self) -> ev.AwFlow:
        if self._snapshot is None:
            self._snapshot = ev.AwFlow.from_buffer_copy(self._raw)
            self._raw = None
        return self._snapshot

    @snapshot.setter
    def snapshot(self, value: ev.AwFlow) -> None:
        self._snapshot = value
        self._raw = None

    def set_raw(self, raw: bytes) -> None:
        self._raw = raw
        self._snapshot = None


# Connection.state (field 13, varint) as serialized bytes, appended to a flow's light template: parsing
# template + state with the C protobuf runtime costs a fifth of building the message field by field.
_STATE_FIELD = {state: bytes([13 << 3, state]) for state in range(128)}
_EVICTED = connection_pb2.CONNECTION_STATE_EVICTED
_CLOSED, _BY_EVICTION = ev.EV_CLOSED, ev.CLOSE_EVICTED
_from_string = connection_pb2.Connection.FromString




@functools.lru_cache(maxsize=65_536)
def _endpoint_bytes(ip: str, port: int) -> bytes:
    """auth_event.proto Endpoint {ip = 1; port = 2} in wire format."""
    return message_field(b"\x0a", ip.encode()) + (b"\x10" + uvarint(port) if port else b"")


def _light_template(flow: _Flow, reverse: bool = False) -> bytes:
    """The light Connection of a flow (uid 1, client 3, server 4, mid_stream 15, interface 17) in wire
    format, encoded by hand: once per flow on the poller's hot path, where building the message field
    by field and serializing it cost more than the rest of the event (tests check it parses back)."""
    client_ip, client_port, server_ip, server_port = flow.ends
    client = _endpoint_bytes(client_ip, client_port)
    server = _endpoint_bytes(server_ip, server_port)
    if reverse:
        client, server = server, client
    return b"".join((message_field(b"\x0a", flow.uid.encode()), message_field(b"\x1a", client),
                     message_field(b"\x22", server), b"\x78\x01" if flow.mid_stream else b"",
                     message_field(b"\x8a\x01", flow.interface.encode()) if flow.interface else b""))


def _candidate(f: _Flow, offset: int) -> tuple[str, int, int, bool, _Flow]:
    """One candidate_times() entry: (uid, SYN wall-clock ns or 0, close wall-clock ns or 0, mid_stream, flow)."""
    k = f.snapshot
    close = k.close_ns + offset if k.close_ns else (f.close_wall_ns if f.evicted else 0)
    return f.uid, k.syn_ns + offset if k.syn_ns else 0, close, bool(k.mid_stream), f


class ConnectionTable:
    """Thread-safe table of the connections the kernel inspector has seen."""

    def __init__(self, grace_period: float = 30.0, *, clock_offset_ns: int | None = None,
                 live_lookup: Callable[[bytes], ev.AwFlow | None] | None = None,
                 kernel_counters: Callable[[], dict[str, int]] | None = None,
                 ifname: Callable[[int], str] | None = None,
                 forget_key: Callable[[bytes], None] | None = None) -> None:
        self.grace_period = grace_period
        # bpf_ktime_get_ns() is CLOCK_MONOTONIC, like time.monotonic_ns(); wall = monotonic + offset.
        # Re-measured every OFFSET_REFRESH_NS: NTP slews the wall clock, not CLOCK_MONOTONIC, so a fixed
        # offset would drift away from the gateways' (wall clock) request times over a long run.
        self._fixed_offset = clock_offset_ns is not None
        self.clock_offset_ns = clock_offset_ns if clock_offset_ns is not None else \
            time.time_ns() - time.monotonic_ns()
        self._offset_measured_ns = time.monotonic_ns()
        self._live_lookup = live_lookup
        self._kernel_counters = kernel_counters
        self._ifname = ifname or (lambda index: str(index))
        self._forget_key = forget_key
        self._lock = threading.RLock()
        self._by_id: dict[tuple[bytes, int], _Flow] = {}
        self._current: dict[bytes, _Flow] = {}            # newest generation per kernel key
        self._by_tuple: dict[TupleKey, list[_Flow]] = {}  # newest SYN first
        self._closed: deque[_Flow] = deque()             # in close order, for grace-period expiry
        self._listeners: tuple[tuple[Listener, Callable[[], bool] | None], ...] = ()
        self.evictions_swept = 0      # open flows found gone from the kernel map (not seen by the kernel)
        self.listener_errors = 0
        self.events_applied = 0

    # -- feeding (poller thread) ---------------------------------------------------------------------

    def add_listener(self, callback: Listener, wanted: Callable[[], bool] | None = None) -> None:
        """callback(Connection) runs on the poller thread for every event the kernel sends (opened,
        closed; evicted).

        The Connection is a light snapshot (uid, client, server, state, mid_stream, interface) to keep the
        poller fast; call candidates() for the full facts. wanted(): checked once per batch of events, after
        the table has them; when it says False no snapshot is built for this callback (e.g. the join: only
        while a report waits — one that starts waiting later finds the events in the table already)."""
        with self._lock:
            # replaced, never mutated: the poller reads it without a copy
            self._listeners = (*self._listeners, (callback, wanted))

    def apply(self, event: ev.AwEvent) -> None:
        """Fold one decoded event into the table (tests and callers holding an AwEvent)."""
        self.apply_records([ev.event_record(event)])

    def apply_records(self, records: list[ev.EventRecord]) -> None:
        """Fold a batch of ring-buffer events (events.read_events) into the table under one lock, then
        tell the listeners about each, outside the lock."""
        now = time.monotonic()
        notify: list[tuple[_Flow, int]] = []
        current, by_id = self._current, self._by_id
        with self._lock:
            self.events_applied += len(records)
            self._expire(now)
            for etype, reason, key, client_is_a, state, mid_stream, ifindex, first_ns, raw in records:
                if etype == _CLOSED and reason == _BY_EVICTION:
                    flow = current.get(key)
                    if flow is not None and not flow.closed:
                        self._mark_evicted(flow, now, count=False)   # the kernel already counted it
                        notify.append((flow, _EVICTED))
                    continue
                flow = by_id.get((key, first_ns))
                if flow is None:
                    flow = self._insert(key, first_ns, client_is_a, mid_stream, ifindex, raw)
                else:   # flow.set_raw(raw), inlined
                    flow._raw = raw
                    flow._snapshot = None
                if etype == _CLOSED and not flow.closed:
                    flow.closed = True
                    flow.closed_at = now
                    self._closed.append(flow)
                notify.append((flow, _EVICTED if flow.evicted else state))
            registered = self._listeners
        listeners = [cb for cb, wanted in registered if wanted is None or self._wanted(wanted)]
        if not listeners:
            return
        for flow, state in notify:
            if not flow.light:
                flow.light = _light_template(flow)
                if flow.mid_stream:   # direction only guessed: wake waiters of either orientation
                    flow.light_reverse = _light_template(flow, reverse=True)
            tail = _STATE_FIELD.get(state, b"")
            snaps = [_from_string(flow.light + tail)]
            if flow.light_reverse:
                snaps.append(_from_string(flow.light_reverse + tail))
            for snap in snaps:
                for callback in listeners:
                    try:
                        callback(snap)
                    except Exception:  # a listener's bug must not stop the poller
                        self.listener_errors += 1
                        log.exception("connection listener failed")

    def _wanted(self, wanted: Callable[[], bool]) -> bool:
        try:
            return bool(wanted())
        except Exception:   # a broken predicate: tell the listener rather than lose events for it
            self.listener_errors += 1
            log.exception("connection listener's wanted() failed")
            return True

    def _insert(self, key: bytes, first_ns: int, client_is_a: int, mid_stream: int, ifindex: int,
                raw: bytes) -> _Flow:
        ends = ev.endpoints_from_key(key, client_is_a)
        flow = _Flow(_new_uid(), key, first_ns, ends, raw, self._ifname(ifindex), bool(mid_stream))
        older = self._current.get(key)
        if older is not None and not older.closed and older.first_ns < first_ns:
            # The kernel replaced the entry without a close: the old one was evicted.
            self._mark_evicted(older, time.monotonic(), count=True)
        self._current[key] = flow
        self._by_id[(key, first_ns)] = flow
        tuples = [ends]
        if mid_stream:   # direction guessed: findable both ways
            tuples.append((ends[2], ends[3], ends[0], ends[1]))
        flow.tuples = tuples
        for t in tuples:
            lst = self._by_tuple.get(t)
            if lst is None:
                self._by_tuple[t] = [flow]
            else:
                lst.insert(0, flow)
                lst.sort(key=lambda f: f.first_ns, reverse=True)
        return flow

    def _mark_evicted(self, flow: _Flow, now: float, count: bool) -> None:
        flow.evicted = True
        flow.closed = True
        flow.closed_at = now
        flow.close_wall_ns = time.time_ns()
        self._closed.append(flow)
        if count:
            self.evictions_swept += 1
            if self._forget_key is not None:
                # So a later packet of this flow is not counted as an eviction a second time.
                self._forget_key(flow.key)

    def _expire(self, now: float) -> None:
        while self._closed and self._closed[0].closed_at + self.grace_period < now:
            flow = self._closed.popleft()
            self._by_id.pop((flow.key, flow.first_ns), None)
            if self._current.get(flow.key) is flow:
                del self._current[flow.key]
            for t in flow.tuples:
                lst = self._by_tuple.get(t)
                if lst is not None:
                    lst[:] = [f for f in lst if f is not flow]
                    if not lst:
                        del self._by_tuple[t]

    def sweep(self) -> int:
        """Check every open flow against the kernel map: mark the vanished ones EVICTED (returns how many)
        and close those whose closed event was lost."""
        if self._live_lookup is None:
            return 0
        with self._lock:
            open_flows = [f for f in self._current.values() if not f.closed]
        found = 0
        for flow in open_flows:
            live = self._live_lookup(flow.key)
            if live is None or live.first_ns != flow.first_ns:
                with self._lock:
                    if not flow.closed:
                        self._mark_evicted(flow, time.monotonic(), count=True)
                        found += 1
            else:
                self._close_if_kernel_closed(flow, live)
        return found

    def _close_if_kernel_closed(self, flow: _Flow, live: ev.AwFlow) -> None:
        """The kernel closed this flow but its closed event never arrived (ring buffer full): close it."""
        if live.close_reported and not flow.closed:
            with self._lock:
                if not flow.closed:
                    flow.snapshot = live
                    flow.closed = True
                    flow.closed_at = time.monotonic()
                    self._closed.append(flow)

    def open_count(self) -> int:
        with self._lock:
            return sum(1 for f in self._current.values() if not f.closed)

    # -- reading (any thread) ------------------------------------------------------------------------

    def _flows_on(self, client_ip: str, client_port: int, server_ip: str, server_port: int) -> list[_Flow]:
        """The flows on this exact 4-tuple, newest SYN first (none for an address that is no IP)."""
        try:
            key = (addresses.normalize_ip(client_ip), int(client_port), addresses.normalize_ip(server_ip),
                   int(server_port))
        except ValueError:
            return []
        with self._lock:
            self._expire(time.monotonic())
            return list(self._by_tuple.get(key, ()))

    def candidates(self, client_ip: str, client_port: int, server_ip: str,
                   server_port: int) -> list[connection_pb2.Connection]:
        """Every known connection on this exact 4-tuple (client = SYN sender), newest SYN first."""
        flows = self._flows_on(client_ip, client_port, server_ip, server_port)
        return [self._to_proto(f, live=True) for f in flows]

    def candidate_times(self, client_ip: str, client_port: int, server_ip: str,
                        server_port: int) -> list[tuple[str, int, int, bool, _Flow]]:
        """What the join selects by, for every connection on this exact 4-tuple, newest SYN first:
        (uid, SYN wall-clock ns or 0, close wall-clock ns or 0, mid_stream, handle). Read from the table
        alone: no Connection is built and the kernel map is not read (candidates() does both for every
        candidate, ~10 us each); connection(handle) builds the full facts of the one the join picks."""
        offset = self.clock_offset_ns
        return [_candidate(f, offset) for f in self._flows_on(client_ip, client_port, server_ip, server_port)]

    def candidate_times_of(self, keys: list[tuple[str, int, str, int]]
                           ) -> list[list[tuple[str, int, int, bool, _Flow]]]:
        """candidate_times() for many 4-tuples already in canonical form (validated event rows): one lock
        and one expiry check for the whole batch instead of one per record."""
        offset = self.clock_offset_ns
        with self._lock:
            self._expire(time.monotonic())
            found = [list(self._by_tuple.get(key, ())) for key in keys]
        return [[_candidate(f, offset) for f in flows] for flows in found]

    def connection(self, handle: _Flow) -> connection_pb2.Connection:
        """The full facts (live counters from the kernel map) of a candidate_times() handle."""
        return self._to_proto(handle, live=True)

    def all(self, include_closed: bool = False) -> list[connection_pb2.Connection]:
        """Every tracked connection (open ones, plus closed ones still in the grace period if asked)."""
        with self._lock:
            self._expire(time.monotonic())
            flows = sorted(self._by_id.values(), key=lambda f: f.first_ns)
        out = []
        for flow in flows:
            conn = self._to_proto(flow, live=True)
            if include_closed or not flow.closed:
                out.append(conn)
        return out

    def events_lost(self) -> int:
        """Cumulative kernel events lost: ring-buffer reserve failures + evictions (kernel- and sweep-seen)."""
        lost = self.evictions_swept
        if self._kernel_counters is not None:
            counters = self._kernel_counters()
            lost += counters.get("ringbuf_reserve_failed", 0) + counters.get("evictions", 0)
        return lost

    # -- conversion ----------------------------------------------------------------------------------

    def _wall(self, ktime_ns: int) -> Timestamp:
        ts = Timestamp()
        if not self._fixed_offset:
            mono = time.monotonic_ns()
            if mono - self._offset_measured_ns > OFFSET_REFRESH_NS:
                self.clock_offset_ns = time.time_ns() - time.monotonic_ns()
                self._offset_measured_ns = mono
        ts.FromNanoseconds(ktime_ns + self.clock_offset_ns)
        return ts

    def _to_proto(self, flow: _Flow, live: bool) -> connection_pb2.Connection:
        k = flow.snapshot
        if live and not flow.evicted and self._live_lookup is not None:
            # Closed flows too: packets after the close event (the last ACK) still count.
            current = self._live_lookup(flow.key)
            if current is not None and current.first_ns == flow.first_ns:
                k = current
                flow.snapshot = current
                self._close_if_kernel_closed(flow, current)
            elif not flow.closed:
                with self._lock:
                    if not flow.closed:
                        self._mark_evicted(flow, time.monotonic(), count=True)
        return flow_to_connection(flow, k, self)


def _dir(d: ev.AwDir) -> connection_pb2.DirectionCounters:
    return connection_pb2.DirectionCounters(
        packets=d.packets, bytes=d.bytes, retransmits=d.retransmits, zero_windows=d.zero_windows,
        rsts=d.rsts, fins=d.fins, stack_retransmits=d.stack_retransmits)


def _handshake_part(flow: _Flow, k: ev.AwFlow, table: ConnectionTable) -> connection_pb2.Connection:
    """The facts that are final once the handshake is done: identity, SYN fingerprint, handshake times."""
    if not flow.community_id:
        flow.community_id = community_id(flow.ends)
    conn = connection_pb2.Connection(
        uid=flow.uid,
        community_id=flow.community_id,
        client=auth_event_pb2.Endpoint(ip=flow.ends[0], port=flow.ends[1]),
        server=auth_event_pb2.Endpoint(ip=flow.ends[2], port=flow.ends[3]),
        mid_stream=bool(k.mid_stream),
        interface=flow.interface,
    )
    if k.syn_ns:
        conn.syn_time.CopyFrom(table._wall(k.syn_ns))
        s = k.syn
        conn.syn.CopyFrom(connection_pb2.SynFingerprint(
            ttl=s.ttl, df=bool(s.df), ip_id=s.ip_id, ecn=s.ecn, tcp_ecn=bool(s.tcp_ecn), window=s.window,
            option_kinds=ev.option_kinds(k), mss=s.mss, window_scale=s.window_scale,
            sack_permitted=bool(s.sack_permitted), timestamps=bool(s.timestamps), ip_version=s.ip_version,
            ip_options_len=s.ip_options_len, payload_bytes=s.payload_bytes, ts_val=s.ts_val))
        fingerprint.annotate(conn.syn)
    if k.synack_ns:
        conn.synack_time.CopyFrom(table._wall(k.synack_ns))
    if k.established_ns:
        conn.established_time.CopyFrom(table._wall(k.established_ns))
        if k.synack_ns and k.established_ns >= k.synack_ns:
            conn.handshake_rtt.FromNanoseconds(k.established_ns - k.synack_ns)
    return conn


def flow_to_connection(flow: _Flow, k: ev.AwFlow, table: ConnectionTable) -> connection_pb2.Connection:
    """A full Connection snapshot. The handshake part is built once per flow (the join asks for the same
    keep-alive flow on every request) and only the counters, state and times are read anew."""
    handshake = flow.handshake
    if handshake is None:
        handshake = _handshake_part(flow, k, table)
        if k.established_ns or k.mid_stream:
            flow.handshake = handshake
    conn = connection_pb2.Connection()
    conn.CopyFrom(handshake)
    conn.to_server.CopyFrom(_dir(k.dir[0]))
    conn.to_client.CopyFrom(_dir(k.dir[1]))
    conn.history = ev.history_text(k)
    conn.state = connection_pb2.CONNECTION_STATE_EVICTED if flow.evicted else k.state
    conn.closed_by = k.closed_by
    conn.client_socket_state = ev.TCP_STATES.get(k.dir[0].socket_state, "")
    conn.server_socket_state = ev.TCP_STATES.get(k.dir[1].socket_state, "")
    if k.close_ns:
        conn.close_time.CopyFrom(table._wall(k.close_ns))
    elif flow.evicted:
        conn.close_time.FromNanoseconds(flow.close_wall_ns)
    if k.last_ns:
        conn.last_seen.CopyFrom(table._wall(k.last_ns))
    return conn

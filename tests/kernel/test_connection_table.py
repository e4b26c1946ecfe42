"""ConnectionTable semantics on decoded kernel events (the kernel side is proven in the netns tests; these
pin down ordering, address normalization, lost-event recovery and listener behaviour exactly)."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from authwire.kernel import events as ev
from authwire.kernel.connection_table import ConnectionTable
from authwire.v1 import connection_pb2

ST = connection_pb2


def event(kind: int, client: tuple[str, int], server: tuple[str, int], first_ns: int, *, state: int,
          reason: int = 0, close_ns: int = 0) -> ev.AwEvent:
    e = ev.AwEvent(type=kind, reason=reason)
    e.key = ev.make_key(client[0], client[1], server[0], server[1])
    a_is_client = bytes(e.key.addr_a) == ev.ip_bytes(client[0]) and \
        e.key.port_a == int.from_bytes(client[1].to_bytes(2, "big"), "little")
    e.flow.client_is_a = int(a_is_client)
    e.flow.first_ns = e.flow.syn_ns = first_ns
    e.flow.last_ns = close_ns or first_ns
    e.flow.close_ns = close_ns
    e.flow.state = state
    e.flow.close_reported = int(kind == ev.EV_CLOSED)
    e.flow.syn.window_scale = -1
    return e


C, S = ("192.0.2.7", 40000), ("198.51.100.1", 443)


def test_candidates_newest_first_and_ipv4_mapped_lookup():
    table = ConnectionTable(30, clock_offset_ns=0)
    table.apply(event(ev.EV_OPENED, C, S, 1_000, state=ST.CONNECTION_STATE_SYN_SENT))
    table.apply(event(ev.EV_CLOSED, C, S, 1_000, state=ST.CONNECTION_STATE_CLOSED, close_ns=2_000))
    table.apply(event(ev.EV_OPENED, C, S, 3_000, state=ST.CONNECTION_STATE_SYN_SENT))
    conns = table.candidates("::ffff:192.0.2.7", 40000, "198.51.100.1", 443)
    assert [c.syn_time.ToNanoseconds() for c in conns] == [3_000, 1_000]
    assert conns[1].state == ST.CONNECTION_STATE_CLOSED and conns[1].close_time.ToNanoseconds() == 2_000
    assert conns[0].client.ip == "192.0.2.7" and conns[0].server.port == 443
    assert conns[0].uid != conns[1].uid and conns[0].community_id.startswith("1:")
    assert table.candidates(S[0], S[1], C[0], C[1]) == []   # orientation matters for SYN-seen flows
    assert [c.uid for c in table.all(include_closed=False)] == [conns[0].uid]
    assert len(table.all(include_closed=True)) == 2


def test_closed_flows_expire_after_the_grace_period():
    table = ConnectionTable(0.05, clock_offset_ns=0)
    table.apply(event(ev.EV_OPENED, C, S, 1_000, state=ST.CONNECTION_STATE_SYN_SENT))
    table.apply(event(ev.EV_CLOSED, C, S, 1_000, state=ST.CONNECTION_STATE_RESET, reason=ev.CLOSE_RST,
                      close_ns=5_000))
    assert len(table.candidates(*C, *S)) == 1
    deadline = time.monotonic() + 5
    while table.candidates(*C, *S) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert table.candidates(*C, *S) == []


def test_eviction_event_marks_the_open_flow_and_listeners_hear_every_event():
    heard: list[tuple[str, int]] = []
    table = ConnectionTable(30, clock_offset_ns=0)
    table.add_listener(lambda c: heard.append((c.uid, c.state)))
    table.add_listener(lambda c: 1 / 0)   # a broken listener is counted, never stops the others
    table.apply(event(ev.EV_OPENED, C, S, 1_000, state=ST.CONNECTION_STATE_SYN_SENT))
    evicted = ev.AwEvent(type=ev.EV_CLOSED, reason=ev.CLOSE_EVICTED)
    evicted.key = ev.make_key(*C, *S)
    table.apply(evicted)
    [conn] = table.candidates(*C, *S)
    assert conn.state == ST.CONNECTION_STATE_EVICTED and conn.HasField("close_time")
    assert [state for _, state in heard] == [ST.CONNECTION_STATE_SYN_SENT, ST.CONNECTION_STATE_EVICTED]
    assert table.listener_errors == 2


def test_open_flow_missing_from_the_kernel_map_is_evicted_and_counted_once():
    kernel: dict[bytes, ev.AwFlow] = {}
    table = ConnectionTable(30, clock_offset_ns=0, live_lookup=kernel.get,
                            kernel_counters=lambda: {"ringbuf_reserve_failed": 2, "evictions": 3})
    opened = event(ev.EV_OPENED, C, S, 1_000, state=ST.CONNECTION_STATE_SYN_SENT)
    kernel[bytes(opened.key)] = ev.copy_flow(opened.flow)
    table.apply(opened)
    assert table.sweep() == 0
    kernel.clear()   # LRU evicted it silently
    assert table.sweep() == 1
    assert table.sweep() == 0
    assert table.candidates(*C, *S)[0].state == ST.CONNECTION_STATE_EVICTED
    assert table.events_lost() == 2 + 3 + 1


def test_lost_closed_event_is_recovered_from_the_kernel_map():
    kernel: dict[bytes, ev.AwFlow] = {}
    table = ConnectionTable(30, clock_offset_ns=0, live_lookup=kernel.get)
    opened = event(ev.EV_OPENED, C, S, 1_000, state=ST.CONNECTION_STATE_SYN_SENT)
    table.apply(opened)
    closed = event(ev.EV_CLOSED, C, S, 1_000, state=ST.CONNECTION_STATE_CLOSED, close_ns=9_000)
    kernel[bytes(closed.key)] = ev.copy_flow(closed.flow)   # kernel state; its event was never delivered
    table.sweep()
    assert table.all(include_closed=False) == []
    [conn] = table.all(include_closed=True)
    assert conn.state == ST.CONNECTION_STATE_CLOSED and conn.close_time.ToNanoseconds() == 9_000


def test_listener_snapshot_is_the_light_connection_and_wanted_skips_it():
    """The hand-encoded light snapshot parses to the same message the fields would build, both ways for a
    mid-stream flow; a listener whose wanted() is False gets nothing."""
    heard: list[connection_pb2.Connection] = []
    skipped: list[connection_pb2.Connection] = []
    table = ConnectionTable(30, clock_offset_ns=0, ifname=lambda index: "eth0")
    table.add_listener(heard.append)
    table.add_listener(skipped.append, wanted=lambda: False)
    v6 = (("2001:db8::7", 40001), ("2001:db8::1", 443))
    table.apply(event(ev.EV_OPENED, *v6, 1_000, state=ST.CONNECTION_STATE_SYN_SENT))
    mid = event(ev.EV_OPENED, C, S, 2_000, state=ST.CONNECTION_STATE_ESTABLISHED)
    mid.flow.mid_stream = 1
    table.apply(mid)
    [a, b, b_reversed] = heard
    uid_a, uid_b = (c.uid for c in table.all())
    assert a == connection_pb2.Connection(uid=uid_a, client={"ip": v6[0][0], "port": 40001},
                                          server={"ip": v6[1][0], "port": 443}, interface="eth0",
                                          state=ST.CONNECTION_STATE_SYN_SENT)
    expected = dict(uid=uid_b, interface="eth0", mid_stream=True, state=ST.CONNECTION_STATE_ESTABLISHED)
    assert b == connection_pb2.Connection(client={"ip": C[0], "port": C[1]}, server={"ip": S[0], "port": S[1]},
                                          **expected)
    assert b_reversed == connection_pb2.Connection(client={"ip": S[0], "port": S[1]},
                                                   server={"ip": C[0], "port": C[1]}, **expected)
    assert skipped == [] and table.listener_errors == 0


@given(st.lists(st.binary(max_size=2 * ev.EVENT_SIZE), max_size=20))
def test_read_events_never_raises_and_counts_short_records(chunks):
    memory = memoryview(b"".join(chunks))
    offsets, at = [], 0
    for chunk in chunks:
        offsets.append(at)
        at += len(chunk)
    records, bad = ev.read_events(memory, offsets, [len(c) for c in chunks])
    assert bad == sum(1 for c in chunks if len(c) < ev.EVENT_SIZE)
    assert len(records) + bad == len(chunks)
    for record, chunk in zip(records, [c for c in chunks if len(c) >= ev.EVENT_SIZE], strict=True):
        assert record[2] == chunk[8:48] and record[-1] == chunk[ev.FLOW_OFFSET:ev.FLOW_OFFSET + ev.FLOW_SIZE]

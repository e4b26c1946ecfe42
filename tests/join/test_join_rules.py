"""The join's selection rules, on the real ConnectionTable fed with kernel events as the poller decodes
them (authwire.kernel.events.AwEvent), without a kernel: every edge of the rule in join.py's docstring.
The same rules run end to end against the real inspector in test_join_netns.py.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from authwire.counters import Counters
from authwire.join import joiner as join_mod
from authwire.join.joiner import Joiner
from authwire.kernel import events as ev
from authwire.kernel.connection_table import ConnectionTable
from authwire.v1 import record_pb2
from support import auth_event, wait_until

CLIENT = ("10.9.0.2", 40001)
SERVER = ("10.9.0.1", 8080)
MS = 1_000_000


def kernel_event(kind: int, first_ns: int, *, close_ns: int = 0, client=CLIENT, server=SERVER, ttl: int = 64,
                 mss: int = 1460, mid_stream: bool = False, reason: int = 0) -> ev.AwEvent:
    """One ring-buffer event for the flow client -> server created at first_ns (ktime = wall: offset 0)."""
    e = ev.AwEvent(type=kind, reason=reason)
    e.key = ev.make_key(client[0], client[1], server[0], server[1])
    f = e.flow
    f.first_ns = first_ns
    f.last_ns = close_ns or first_ns
    f.client_is_a = int(bytes(e.key.addr_a) == ev.ip_bytes(client[0]) and e.key.port_a == ev._port_net(client[1]))
    f.mid_stream = int(mid_stream)
    if not mid_stream:
        f.syn_ns = first_ns
        s = f.syn
        s.ttl, s.mss, s.window, s.window_scale, s.ip_version, s.df = ttl, mss, mss * 44, 7, 4, 1
        s.sack_permitted = s.timestamps = 1
        kinds = [2, 4, 8, 1, 3]
        s.n_options = len(kinds)
        for i, k in enumerate(kinds):
            s.option_kinds[i] = k
        f.synack_ns = first_ns + 20_000
        f.established_ns = first_ns + 70_000
    f.state = 5 if close_ns else 3
    f.close_ns = close_ns
    return e


def opened(first_ns: int, **kw) -> ev.AwEvent:
    return kernel_event(ev.EV_OPENED, first_ns, **kw)


def closed(first_ns: int, close_ns: int, **kw) -> ev.AwEvent:
    return kernel_event(ev.EV_CLOSED, first_ns, close_ns=close_ns, **kw)


def event_at(start_ns: int, rid: str = "r1", **kw):
    e = auth_event(rid, client=kw.pop("client", CLIENT), server=kw.pop("server", SERVER))
    e.start_time.FromNanoseconds(start_ns)
    for k, v in kw.items():
        setattr(e, k, v)
    return e


def join(joiner: Joiner, event):
    return asyncio.run(joiner.join(event))


@pytest.fixture
def table() -> ConnectionTable:
    return ConnectionTable(grace_period=30.0, clock_offset_ns=0)


def test_no_table_is_inspector_off_and_proxy_is_flagged() -> None:
    counters = Counters()
    conn, j = join(Joiner(None, 0.3, counters), event_at(time.time_ns(), forwarded_for="203.0.113.5"))
    assert conn is None and j.status == record_pb2.JOIN_STATUS_INSPECTOR_OFF and j.behind_proxy
    assert counters.get("join", "INSPECTOR_OFF") == 1


def test_newest_connection_open_at_start_wins_and_the_gap_matches_none(table) -> None:
    t = time.time_ns() - 10_000 * MS
    table.apply(closed(t, t + 100 * MS, ttl=50))          # A: t .. t+100ms
    table.apply(opened(t + 200 * MS, ttl=60))              # B: from t+200ms, open
    joiner = Joiner(table, 0, Counters())
    a, ja = join(joiner, event_at(t + 50 * MS, "a"))
    b, jb = join(joiner, event_at(t + 300 * MS, "b"))
    gap, jg = join(joiner, event_at(t + 150 * MS, "gap"))  # between A's close and B's SYN
    assert (a.syn.ttl, ja.status) == (50, record_pb2.JOIN_STATUS_EXACT)
    assert (b.syn.ttl, jb.status) == (60, record_pb2.JOIN_STATUS_EXACT)
    assert gap is None and jg.status == record_pb2.JOIN_STATUS_NO_CONNECTION
    assert ja.connection_age.ToNanoseconds() == 50 * MS
    assert a.syn.signature and a.syn.os_hint == "linux" and a.community_id


def test_millisecond_start_times_get_one_ms_of_slack_precise_ones_none(table) -> None:
    syn = (time.time_ns() // MS) * MS - 5_000 * MS + 400_000   # SYN 0.4 ms into a millisecond
    table.apply(opened(syn))
    joiner = Joiner(table, 0, Counters())
    conn, j = join(joiner, event_at(syn - 400_000, "nginx"))    # nginx-style: truncated to the ms
    assert j.status == record_pb2.JOIN_STATUS_EXACT and conn.syn_time.ToNanoseconds() == syn
    assert j.connection_age.ToNanoseconds() == 0
    conn, j = join(joiner, event_at(syn - 100_000, "precise"))  # a precise clock says: before the SYN
    assert conn is None and j.status == record_pb2.JOIN_STATUS_NO_CONNECTION


def test_ipv4_mapped_addresses_join_plain_ipv4_flows(table) -> None:
    t = time.time_ns() - 1_000 * MS
    table.apply(opened(t))
    conn, j = join(Joiner(table, 0, Counters()), event_at(
        t + MS, client=("::ffff:" + CLIENT[0], CLIENT[1]), server=("::FFFF:" + SERVER[0], SERVER[1])))
    assert j.status == record_pb2.JOIN_STATUS_EXACT and conn.client.ip == CLIENT[0]


def test_mid_stream_connection_joins_whatever_the_start(table) -> None:
    t = time.time_ns()
    table.apply(opened(t, mid_stream=True))
    conn, j = join(Joiner(table, 0, Counters()), event_at(t - 60_000 * MS))
    assert j.status == record_pb2.JOIN_STATUS_EXACT and conn.mid_stream
    assert not j.HasField("connection_age")


def test_early_report_is_woken_by_the_table_not_by_polling(table) -> None:
    counters = Counters()
    joiner = Joiner(table, 10.0, counters)
    start = time.time_ns() + 500 * MS
    table.apply(closed(start - 2_000 * MS, start - 1_000 * MS, ttl=40))  # an OLDER connection on the tuple

    def kernel_catches_up() -> None:
        wait_until(lambda: counters.get("join.wait", "started") == 1, 5, "the report to wait")
        table.apply(opened(start - 100 * MS, ttl=61))                     # the poller thread's event

    poller = threading.Thread(target=kernel_catches_up)
    poller.start()
    try:
        conn, j = join(joiner, event_at(start))
    finally:
        poller.join()
    assert j.status == record_pb2.JOIN_STATUS_EXACT and conn.syn.ttl == 61
    assert counters.get("join.wait", "found") == 1 and counters.get("join.wait", "timed_out") == 0
    assert 0 < j.waited.ToNanoseconds() < 10e9


def test_waiting_report_never_takes_the_older_connection(table) -> None:
    counters = Counters()
    now = time.time_ns()
    table.apply(closed(now - 2_000 * MS, now - 1_000 * MS))
    conn, j = join(Joiner(table, 0.2, counters), event_at(now))
    assert conn is None and j.status == record_pb2.JOIN_STATUS_NO_CONNECTION
    assert j.waited.ToNanoseconds() >= 0.2e9
    assert counters.get("join.wait", "timed_out") == 1 and counters.get("join", "NO_CONNECTION") == 1


def test_another_gateway_connection_is_not_joined_to_a_connection_whose_close_is_late(table) -> None:
    """The kernel's close of A and SYN of B (same tuple) are still in flight; a report from B's gateway
    connection must not land on A, which already carries reports of another gateway connection."""
    t = time.time_ns() - 1_000 * MS
    table.apply(opened(t, ttl=50))
    counters = Counters()
    joiner = Joiner(table, 0, counters)
    gw = dict(gateway_connection_id=7)
    a1, j1 = join(joiner, event_at(t + 10 * MS, "a1", **gw, connection_requests=1))
    a2, j2 = join(joiner, event_at(t + 20 * MS, "a2", **gw, connection_requests=2))
    assert (j1.kernel_request_index, j2.kernel_request_index) == (1, 2) and a1.uid == a2.uid
    b, jb = join(joiner, event_at(t + 30 * MS, "b", gateway_connection_id=8, connection_requests=1))
    assert b is None and jb.status == record_pb2.JOIN_STATUS_NO_CONNECTION
    assert counters.get("join.gateway_conn_mismatch") >= 1


def test_request_index_memory_is_bounded(table, monkeypatch) -> None:
    monkeypatch.setattr(join_mod, "MAX_TRACKED", 3)
    counters = Counters()
    joiner = Joiner(table, 0, counters)
    t = time.time_ns() - 1_000 * MS
    for port in range(5):
        table.apply(opened(t, client=(CLIENT[0], 41000 + port)))
        join(joiner, event_at(t + MS, client=(CLIENT[0], 41000 + port)))
    assert len(joiner._tracked) == 3 and counters.get("join.index_forgotten") == 2


def test_kernel_events_lost_counts_losses_in_the_records_window(monkeypatch) -> None:
    monkeypatch.setattr(join_mod, "SAMPLE_INTERVAL_S", 0)
    lost = {"ringbuf_reserve_failed": 0, "evictions": 0}
    table = ConnectionTable(grace_period=30.0, clock_offset_ns=0, kernel_counters=lambda: dict(lost))
    joiner = Joiner(table, 0, Counters())
    t = time.time_ns() - 1_000 * MS
    table.apply(opened(t))
    assert join(joiner, event_at(t + MS, "first"))[1].kernel_events_lost == 0
    lost["ringbuf_reserve_failed"] = 3
    lost["evictions"] = 1
    assert join(joiner, event_at(t + 2 * MS, "second"))[1].kernel_events_lost == 4
    # A connection opened after the losses (and after the sample that saw them): not its losses.
    later = time.time_ns()
    table.apply(opened(later, client=(CLIENT[0], 42000)))
    assert join(joiner, event_at(later + MS, "third", client=(CLIENT[0], 42000)))[1].kernel_events_lost == 0
    # A record nobody's connection: the window is the lookback before its start, losses included.
    assert join(joiner, event_at(later, "none", client=(CLIENT[0], 42001)))[1].kernel_events_lost == 4


def test_losses_before_the_first_join_are_not_hidden(monkeypatch) -> None:
    monkeypatch.setattr(join_mod, "SAMPLE_INTERVAL_S", 0)
    lost = {"ringbuf_reserve_failed": 0}
    table = ConnectionTable(grace_period=30.0, clock_offset_ns=0, kernel_counters=lambda: dict(lost))
    joiner = Joiner(table, 0, Counters())  # the inspector starts: no loss yet
    t = time.time_ns()
    table.apply(opened(t))
    lost["ringbuf_reserve_failed"] = 2  # lost while this connection was open, before any report
    assert join(joiner, event_at(t + MS))[1].kernel_events_lost == 2


def test_batch_joins_inline_and_waits_only_for_the_early_report(table) -> None:
    counters = Counters()
    joiner = Joiner(table, 10.0, counters)
    now = time.time_ns()
    early_client = (CLIENT[0], 43000)
    table.apply(opened(now - 1_000 * MS))
    batch = [event_at(now + 500 * MS, "early", client=early_client), event_at(now, "ready"),
             event_at(now + MS, "ready2", forwarded_for="198.51.100.4")]

    def kernel_catches_up() -> None:
        wait_until(lambda: counters.get("join.wait", "started") == 1, 5, "the early report to wait")
        table.apply(opened(now + 100 * MS, client=early_client, ttl=59))

    poller = threading.Thread(target=kernel_catches_up)
    poller.start()
    try:
        results = asyncio.run(joiner.join_batch(batch))
    finally:
        poller.join()
    (early, je), (ready, jr), (ready2, jr2) = results
    assert je.status == jr.status == jr2.status == record_pb2.JOIN_STATUS_EXACT
    assert early.client.port == 43000 and early.syn.ttl == 59 and je.waited.ToNanoseconds() > 0
    assert ready.client.port == CLIENT[1] and not jr.HasField("waited")
    assert (jr.kernel_request_index, jr2.kernel_request_index) == (1, 2) and jr2.behind_proxy
    assert counters.get("join.wait", "started") == 1  # the two ready reports never waited

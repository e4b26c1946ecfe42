"""Kernel times (CLOCK_MONOTONIC) become wall-clock times with an offset that follows the wall clock."""

from __future__ import annotations

import time

from authwire.kernel import connection_table
from authwire.kernel.connection_table import ConnectionTable


def test_the_wall_clock_offset_is_remeasured_after_the_wall_clock_moves(monkeypatch):
    wall, mono = [1_700_000_000 * 10**9], [5 * 10**9]
    monkeypatch.setattr(time, "time_ns", lambda: wall[0])
    monkeypatch.setattr(time, "monotonic_ns", lambda: mono[0])
    table = ConnectionTable(30)
    syn_ktime = 4 * 10**9  # one second before "now" on the monotonic clock
    assert table._wall(syn_ktime).ToNanoseconds() == wall[0] - 10**9

    # NTP steps the wall clock 250 ms back; the monotonic clock only moves on
    wall[0] += 2 * 10**9 - 250_000_000
    mono[0] += 2 * 10**9
    # within the refresh interval the old offset stands ...
    assert table._wall(syn_ktime).ToNanoseconds() == 1_700_000_000 * 10**9 - 10**9
    # ... and once it has passed, kernel times follow the wall clock again
    wall[0] += connection_table.OFFSET_REFRESH_NS
    mono[0] += connection_table.OFFSET_REFRESH_NS
    assert table._wall(syn_ktime).ToNanoseconds() == 1_700_000_000 * 10**9 - 10**9 - 250_000_000

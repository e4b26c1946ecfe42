"""Alerts of the detections named in `detect_block` put their source IPs in the kernel block list.

The inspector here is an object with the block() signature authwire.kernel.loader.Inspector documents
(/work/team/NOTES-kernel.md: block(ip, ttl_seconds, reason) -> bool); the kernel side (map, TTL, drops,
allow-list, dry run) is tested by tests/kernel with the real inspector.
"""

from __future__ import annotations

from authwire.counters import Counters
from authwire.detect.engine import DetectionEngine
from authwire.detect.settings import DetectSettings
from tests.detect.crafted import record


class BlockList:
    """Records block() calls; refuses the IPs in `refuse` as the real one refuses loopback/allow-listed."""

    def __init__(self, refuse: tuple[str, ...] = ()) -> None:
        self.calls: list[tuple[str, float, str]] = []
        self.refuse = refuse

    def block(self, ip: str, ttl_seconds: float, reason: str) -> bool:
        self.calls.append((ip, ttl_seconds, reason))
        return ip not in self.refuse


def attack(uid: str, ip: str = "203.0.113.9", t0: float = 1000.0):
    return [record(t0 + i * 0.01, uid=uid, ip=ip, credential=f"user{i}") for i in range(30)]


def run(engine: DetectionEngine, records) -> list:
    engine.process(records)
    changes = engine.take_changes(force=True)
    for c in changes:
        c.written = True
    return [c.alert for c in changes]


def test_configured_detection_blocks_its_source_ips_once():
    blocks = BlockList()
    engine = DetectionEngine(DetectSettings(enabled=("keepalive_stuffing",), block={"keepalive_stuffing": 900.0}),
                             None, Counters(), inspector=blocks)
    [alert] = run(engine, attack("C1"))
    assert blocks.calls == [("203.0.113.9", 900.0, f"{alert.id} keepalive_stuffing")]
    assert list(alert.blocked) == ["203.0.113.9"]
    run(engine, attack("C1", t0=1001.0))  # updates of the same alert do not block again
    assert len(blocks.calls) == 1
    assert engine.counters.get("detect.blocked", "keepalive_stuffing") == 1


def test_refused_blocks_are_counted_and_not_listed():
    blocks = BlockList(refuse=("127.0.0.1",))
    engine = DetectionEngine(DetectSettings(enabled=("keepalive_stuffing",), block={"keepalive_stuffing": 60.0}),
                             None, Counters(), inspector=blocks)
    [alert] = run(engine, attack("C2", ip="127.0.0.1"))
    assert list(alert.blocked) == []
    assert engine.counters.get("detect.block_refused", "keepalive_stuffing") == 1


def test_detections_not_named_never_block_and_no_inspector_is_counted():
    blocks = BlockList()
    engine = DetectionEngine(DetectSettings(enabled=("keepalive_stuffing",)), None, Counters(), inspector=blocks)
    run(engine, attack("C3"))
    assert blocks.calls == []
    engine = DetectionEngine(DetectSettings(enabled=("keepalive_stuffing",), block={"keepalive_stuffing": 60.0}),
                             None, Counters(), inspector=None)
    [alert] = run(engine, attack("C4"))
    assert list(alert.blocked) == []
    assert engine.counters.get("detect.block_skipped", "no_inspector") == 1

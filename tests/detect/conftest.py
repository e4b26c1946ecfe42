from __future__ import annotations

import pytest

from authwire.counters import Counters
from authwire.detect.engine import DetectionEngine
from authwire.detect.settings import DetectSettings


@pytest.fixture
def engine():
    """An engine with default rules and no store: tests drive process() and take_changes() directly."""
    def make(**settings) -> DetectionEngine:
        return DetectionEngine(DetectSettings(**settings), None, Counters())
    return make

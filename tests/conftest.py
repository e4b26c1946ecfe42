from __future__ import annotations

import pytest

from support import Sidecar, start_sidecar


@pytest.fixture
def sidecar(tmp_path) -> Sidecar:
    """A real `authwire serve` (no kernel inspector) on a temp unix socket and store."""
    s = start_sidecar(tmp_path)
    try:
        yield s
    finally:
        s.kill()

from __future__ import annotations

import apisix_runtime
import pytest

from support import require


@pytest.fixture(scope="session")
def apisix_available() -> None:
    reason = apisix_runtime.missing()
    require(reason is None, reason or "")

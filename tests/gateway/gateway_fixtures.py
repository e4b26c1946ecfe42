from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import nginx_process
import pytest

from support import Sidecar, require, start_sidecar


@pytest.fixture
def short_tmp() -> Path:
    """A short temp dir: unix socket paths must stay under 108 bytes (pytest's tmp_path can be longer)."""
    path = Path(tempfile.mkdtemp(prefix="aw-gw-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def nginx_available() -> None:
    reason = nginx_process.missing()
    require(reason is None, reason or "")


def start_gw_sidecar(tmp: Path, *extra: str) -> Sidecar:
    """`authwire serve` with its gRPC-Web listener on tmp/gw.sock and a JSONL copy of every record."""
    return start_sidecar(tmp, "--grpc-web-listen", f"unix:{tmp}/gw.sock", "--jsonl", str(tmp / "records.jsonl"),
                         *extra)


@pytest.fixture
def gw_sidecar(short_tmp) -> Sidecar:
    sidecar = start_gw_sidecar(short_tmp)
    try:
        yield sidecar
    finally:
        sidecar.kill()


def gateway_drops(sidecar: Sidecar) -> dict[str, int]:
    """The sidecar's gateway.dropped counters (drops the gateways' reporters told it about)."""
    from authwire.v1 import query_pb2

    stats = sidecar.query().Stats(query_pb2.StatsRequest(), timeout=10)
    got = {c.label: c.value for c in stats.counters if c.name == "gateway.dropped"}
    return {k: got.get(k, 0) for k in ("queue_full", "send_failed", "encode_failed")}


def python_pass(sidecar: Sidecar) -> int:
    """Events the sidecar's native pass left to the Python validation (ingest.python_pass, every source)."""
    from authwire.v1 import query_pb2

    stats = sidecar.query().Stats(query_pb2.StatsRequest(), timeout=10)
    return sum(c.value for c in stats.counters if c.name == "ingest.python_pass")

"""Issue 11 item 10: the JSONL sink under faults, through a real `authwire serve`: its directory removed, an
external rename (logrotate without copytruncate) with and without SIGHUP, a full disk; each counted and
recovered, no line lost after recovery and none glued to another. There is no encoder child to die."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from authwire.v1 import ingest_pb2, query_pb2
from support import auth_event, require, start_sidecar, wait_until


def counters(sidecar) -> dict[tuple[str, str], int]:
    return {(c.name, c.label): c.value for c in sidecar.query().Stats(query_pb2.StatsRequest(), timeout=10).counters}


def report(sidecar, prefix: str, n: int = 5) -> list[str]:
    ids = [f"{prefix}-{i}" for i in range(n)]
    response = sidecar.ingest().Report(ingest_pb2.ReportRequest(events=[auth_event(i) for i in ids]), timeout=10)
    assert response.accepted == n
    return ids


def lines(path: Path) -> list[str]:
    """Request ids of the file's lines; every line must be one whole JSON object."""
    if not path.exists():
        return []
    out = []
    for line in path.read_bytes().split(b"\n")[:-1]:
        out.append(json.loads(line)["event"]["request_id"])
    assert path.read_bytes().endswith(b"\n") or not path.read_bytes()
    return out


@pytest.fixture
def logs(tmp_path):
    return tmp_path / "logs" / "records.jsonl"


def test_no_encoder_child_process_exists(tmp_path, logs):
    sidecar = start_sidecar(tmp_path, "--jsonl", str(logs))
    try:
        ids = report(sidecar, "c")
        wait_until(lambda: lines(logs) == ids, 10, "the lines")
        children = subprocess.run(["ps", "--ppid", str(sidecar.process.pid), "-o", "pid="], capture_output=True,
                                  text=True).stdout.split()
        assert children == []  # the lines are encoded in the sidecar itself: nothing to die and be missed
    finally:
        sidecar.stop()


def test_removed_directory_is_recreated_and_counted(tmp_path, logs):
    sidecar = start_sidecar(tmp_path, "--jsonl", str(logs))
    try:
        first = report(sidecar, "a")
        shutil.rmtree(logs.parent)
        second = report(sidecar, "b")
        assert lines(logs) == second  # not written into the unlinked file
        assert counters(sidecar)[("jsonl.reopened", "removed")] == 1
        assert first  # acknowledged and in the store
        assert len(sidecar.query().Query(query_pb2.QueryRequest(limit=100)).records) == 10
    finally:
        sidecar.stop()


def test_external_rename_reopens_the_path_with_and_without_sighup(tmp_path, logs):
    sidecar = start_sidecar(tmp_path, "--jsonl", str(logs))
    try:
        first = report(sidecar, "a")
        os.rename(logs, logs.with_name("records.jsonl.1"))       # logrotate without copytruncate
        second = report(sidecar, "b")
        assert lines(logs.with_name("records.jsonl.1")) == first
        assert lines(logs) == second
        assert counters(sidecar)[("jsonl.reopened", "removed")] == 1
        os.rename(logs, logs.with_name("records.jsonl.2"))
        sidecar.process.send_signal(signal.SIGHUP)                # ... and its postrotate script
        wait_until(lambda: ("jsonl.reopened", "signal") in counters(sidecar) or
                   ("jsonl.reopened", "removed") in counters(sidecar), 5, "the signal to be handled")
        third = report(sidecar, "c")
        assert lines(logs.with_name("records.jsonl.2")) == second
        assert lines(logs) == third
        got = counters(sidecar)
        assert got.get(("jsonl.reopened", "signal"), 0) + got[("jsonl.reopened", "removed")] == 2
        assert sidecar.process.poll() is None  # SIGHUP does not stop the sidecar
    finally:
        sidecar.stop()


def test_full_disk_counts_the_lost_lines_cuts_the_partial_line_and_recovers(tmp_path):
    require(os.geteuid() == 0, "needs root to mount a small tmpfs (a disk that fills up)")
    disk = tmp_path / "small"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], check=True)
    try:
        logs = disk / "records.jsonl"
        sidecar = start_sidecar(tmp_path, "--jsonl", str(logs))
        try:
            before = report(sidecar, "a", 5)
            filler = disk / "filler"
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
            try:  # fill the disk: what is left is the slack of the JSONL file's last page
                while os.write(fd, b"\0" * 4096):
                    pass
            except OSError:
                pass
            finally:
                os.close(fd)
            free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
            lost = report(sidecar, "lost", 20)  # ~20 lines of ~700 bytes do not fit: a partial write
            got = counters(sidecar)
            assert got[("jsonl.write_failed", "ENOSPC")] == 20, (got, free)
            assert got[("jsonl.partial_line_cut", "")] == 1  # part of the batch had fit: it was cut off
            assert lines(logs) == before             # the partial line was cut off again
            filler.unlink()
            after = report(sidecar, "b", 5)
            assert lines(logs) == before + after      # recovered: whole lines, none glued to another
            stored = {r.event.request_id for r in sidecar.query().Query(query_pb2.QueryRequest(limit=100)).records}
            assert set(lost) <= stored                # the store has what the JSONL lost (counted)
        finally:
            sidecar.stop()
    finally:
        subprocess.run(["umount", str(disk)], check=False)

"""Issue 11 item 11 (a store removed or replaced under a running sidecar stops acknowledging, clearly and
counted) and item 6 (the store and JSONL files are private: 0600, or 0640 for --data-group), through a real
`authwire serve`."""

from __future__ import annotations

import grp
import os
import shutil
import stat

import grpc
import pytest

from authwire.v1 import ingest_pb2, query_pb2
from support import auth_event, require, start_sidecar


def counters(sidecar) -> dict[tuple[str, str], int]:
    return {(c.name, c.label): c.value for c in sidecar.query().Stats(query_pb2.StatsRequest(), timeout=10).counters}


def report(sidecar, prefix: str, n: int = 3):
    return sidecar.ingest().Report(ingest_pb2.ReportRequest(events=[auth_event(f"{prefix}-{i}") for i in range(n)]),
                                   timeout=10)


def store_files(db) -> list:
    return [p for p in db.parent.iterdir() if p.name.startswith(db.name)]


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_a_store_removed_or_replaced_under_the_writer_stops_acknowledging(tmp_path, how):
    sidecar = start_sidecar(tmp_path)
    try:
        assert report(sidecar, "before").accepted == 3
        files = store_files(sidecar.db)
        assert any(".seg-" in p.name for p in files) and any(p.name.endswith("-wal") for p in files)
        for p in files:
            if how == "removed":
                p.unlink()
            else:  # another file at the same path (restored from a backup, say): a new inode
                shutil.copyfile(p, p.with_name(p.name + ".tmp"))
                os.replace(p.with_name(p.name + ".tmp"), p)
        for attempt in range(2):  # and it stays that way: nothing is acknowledged into a lost file
            with pytest.raises(grpc.RpcError) as failure:
                report(sidecar, f"after-{attempt}")
            assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "the store was lost" in failure.value.details() and how in failure.value.details()
        got = counters(sidecar)
        assert got[("store.lost", "")] == 6
        assert "the store was lost" in sidecar.log_text()
        assert sidecar.log_text().count("the store was lost") == 1  # logged once, counted always
    finally:
        sidecar.kill()


def _modes(paths) -> dict[str, tuple[int, int]]:
    return {p.name: (stat.S_IMODE(os.stat(p).st_mode), os.stat(p).st_gid) for p in paths}


def test_store_and_jsonl_files_are_owner_only(tmp_path):
    sidecar = start_sidecar(tmp_path, "--jsonl", str(tmp_path / "records.jsonl"))
    try:
        assert report(sidecar, "m").accepted == 3
        files = [*store_files(sidecar.db), tmp_path / "records.jsonl"]
        assert len(files) >= 5  # catalog, segment, its -wal and -shm, the JSONL
        assert {m for m, _ in _modes(files).values()} == {0o600}, _modes(files)
    finally:
        sidecar.stop()


def test_with_a_data_group_they_are_0640_and_that_group_s(tmp_path):
    groups = [g.gr_gid for g in grp.getgrall() if g.gr_gid != os.getgid()
              and (os.geteuid() == 0 or g.gr_gid in os.getgroups())]
    require(bool(groups), "needs a second group to hand files to")
    name = grp.getgrgid(groups[0]).gr_name
    sidecar = start_sidecar(tmp_path, "--jsonl", str(tmp_path / "records.jsonl"), "--data-group", name)
    try:
        assert report(sidecar, "g").accepted == 3
        files = [*store_files(sidecar.db), tmp_path / "records.jsonl"]
        assert set(_modes(files).values()) == {(0o640, groups[0])}, _modes(files)
    finally:
        sidecar.stop()

"""JSONL sink for log shippers: one EnrichedRecord per line, proto3 JSON mapping, size-rotated.

Lines are built from the store's plain rows (store.columns.json_dict: the same object records.to_dict gives
for the assembled record) and encoded with orjson in the store thread, after the commit: ~3 us a record,
no child process (moving the work to another process did not make it cheaper on 2 cores, and a dead child
lost lines). A write failure never fails the batch (the store has the records); it is counted and the
sink recovers by itself:

- the file or its directory was removed, or the path now names another file (logrotate without
  copytruncate renamed it): checked before every batch (one stat), the path is reopened (directories
  recreated) and `jsonl.reopened{removed|replaced}` counted; SIGHUP (`request_reopen`) reopens too
  (`jsonl.reopened{signal}`);
- a failed write (a full disk: ENOSPC, EFBIG, EIO ...) counts its records as `jsonl.write_failed{errno name}`
  and cuts the file back to its last whole line (`jsonl.partial_line_cut`), so a partial line is never glued
  to the next record; if even that fails, the next write starts on a new line.

Files are created 0600, or 0640 with a group (`--data-group`).
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

from authwire.counters import Counters
from authwire.store.columns import CONN, json_dict

log = logging.getLogger(__name__)


def shift_rotated(path: Path, keep: int) -> None:
    """PATH -> PATH.1 -> ... -> PATH.keep (the oldest dropped); with keep 0 PATH is removed."""
    for i in range(keep, 0, -1):
        src = path if i == 1 else path.with_name(f"{path.name}.{i - 1}")
        if src.exists():
            os.replace(src, path.with_name(f"{path.name}.{i}"))
    if keep == 0:
        path.unlink(missing_ok=True)


class RotatingFile:
    """Appends text lines to PATH (created 0600, or 0640 with group); before it would pass max_bytes renames
    PATH -> PATH.1 -> ... PATH.keep. Used for the alerts JSONL (authwire.detect.engine)."""

    def __init__(self, path: str | os.PathLike, max_bytes: int, keep: int, group: str | int | None = None) -> None:
        from authwire.store.record_store import create_private

        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = max(keep, 0)
        self.group = group
        self.path.parent.mkdir(parents=True, exist_ok=True)
        create_private(self.path, group)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held open for the run

    def write(self, lines: Sequence[str]) -> None:
        chunk: list[str] = []
        size = self._file.tell()
        for line in lines:
            n = len(line.encode())
            if self.max_bytes and size and size + n > self.max_bytes:  # never split a line across files
                self._file.write("".join(chunk))
                chunk = []
                self._rotate()
                size = 0
            chunk.append(line)
            size += n
        self._file.write("".join(chunk))
        self._file.flush()

    def _rotate(self) -> None:
        from authwire.store.record_store import create_private

        self._file.close()
        shift_rotated(self.path, self.keep)
        create_private(self.path, self.group)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        self._file.close()


class JsonlSink:
    def __init__(self, path: str | os.PathLike, max_bytes: int, keep: int, counters: Counters,
                 group: str | int | None = None) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = max(keep, 0)
        self.counters = counters
        self.group = group
        self._fd = -1
        self._ino = 0
        self._size = 0
        self._reopen = False
        self._broken_line = False
        self._open()

    def _open(self) -> None:
        from authwire.store.record_store import create_private

        self.path.parent.mkdir(parents=True, exist_ok=True)
        create_private(self.path, self.group)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = fd
        st = os.fstat(fd)
        self._ino, self._size = st.st_ino, st.st_size
        self._broken_line = False

    def request_reopen(self) -> None:
        """SIGHUP (any thread): reopen the path before the next batch."""
        self._reopen = True

    def _check_path(self) -> None:
        why = "signal" if self._reopen else None
        if why is None:
            try:
                if os.stat(self.path).st_ino != self._ino:
                    why = "replaced"
            except FileNotFoundError:
                why = "removed"
        if why is not None:
            self._reopen = False
            self._open()
            self.counters.inc("jsonl.reopened", why)
            if why != "signal":
                log.warning("JSONL file %s was %s; reopened it", self.path, why)

    def write(self, rows: Sequence[tuple], connection_json: Callable[[object], object]) -> None:
        """Append one line per plain row; failures are counted, never raised."""
        try:
            self._check_path()
            lines = [orjson.dumps(json_dict(row, None if row[CONN] is None else connection_json(row[CONN])))
                     + b"\n" for row in rows]
            self._write_lines(lines)
        except OSError as exc:
            name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
            self.counters.inc("jsonl.write_failed", name, len(rows))
            if not self.counters.get("jsonl.write_failed_logged", name):
                self.counters.inc("jsonl.write_failed_logged", name)
                log.warning("JSONL write failed (%d records are in the store only; counted as "
                            "jsonl.write_failed{%s}, logged once): %s", len(rows), name, exc)

    def _write_lines(self, lines: list[bytes]) -> None:
        chunk: list[bytes] = []
        size = self._size
        for line in lines:
            if self.max_bytes and size and size + len(line) > self.max_bytes:  # never split a line across files
                self._append(b"".join(chunk))
                chunk = []
                self._rotate()
                size = 0
            chunk.append(line)
            size += len(line)
        self._append(b"".join(chunk))

    def _append(self, data: bytes) -> None:
        if not data:
            return
        if self._broken_line:
            data = b"\n" + data
        start = self._size
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, view[written:])
        except OSError:
            if written:
                # Cut the partial line off; if that fails too, end it before the next record.
                try:
                    os.ftruncate(self._fd, start)
                    self._broken_line = False
                    self.counters.inc("jsonl.partial_line_cut")
                except OSError:
                    self._size = start + written
                    self._broken_line = True
            raise
        self._size = start + written
        self._broken_line = False

    def _rotate(self) -> None:
        shift_rotated(self.path, self.keep)
        self._open()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

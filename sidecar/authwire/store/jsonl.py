"""JSONL sink for log shippers: one EnrichedRecord per line, proto3 JSON mapping, size-rotated.

The JSON encoding runs in a child process. It costs ~40 us a record under the GIL (mapping + json.dumps),
which in the sidecar's own process took that CPU from validation, join and SQLite: ingest with JSONL ran at
~75% of ingest without it. The sidecar hands over the serialized records (the bytes are cheap) through a
pipe; a full pipe slows the store thread down rather than losing lines. The child's write failures come
back through the same pipe and are counted (`jsonl.write_failed` in `authwire stats`).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import struct
from collections.abc import Sequence
from pathlib import Path

from authwire.counters import Counters
from authwire.records import to_dict
from authwire.v1 import record_pb2

_LENGTH = struct.Struct("<I")
CLOSE_TIMEOUT_SECONDS = 30


class RotatingFile:
    """Appends lines to PATH; before it would pass max_bytes renames PATH -> PATH.1 -> ... PATH.keep."""

    def __init__(self, path: str | os.PathLike, max_bytes: int, keep: int) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = max(keep, 0)
        self.path.parent.mkdir(parents=True, exist_ok=True)
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
        self._file.close()
        for i in range(self.keep, 0, -1):
            src = self.path if i == 1 else self.path.with_name(f"{self.path.name}.{i - 1}")
            if src.exists():
                os.replace(src, self.path.with_name(f"{self.path.name}.{i}"))
        if self.keep == 0:
            self.path.unlink(missing_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        self._file.close()


def _pack(records: Sequence[record_pb2.EnrichedRecord]) -> bytes:
    parts = []
    for record in records:
        data = record.SerializeToString()
        parts += (_LENGTH.pack(len(data)), data)
    return b"".join(parts)


def _unpack(data: bytes) -> list[record_pb2.EnrichedRecord]:
    records, offset = [], 0
    while offset < len(data):
        (n,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        records.append(record_pb2.EnrichedRecord.FromString(data[offset:offset + n]))
        offset += n
    return records


def _encoder_main(conn, path: str, max_bytes: int, keep: int) -> None:
    """The child: decode, encode as JSON lines, write. Ends when the parent closes the pipe (or dies)."""
    # The parent decides when to stop (after flushing): Ctrl-C or SIGTERM to the group must not cut us short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    out = RotatingFile(path, max_bytes, keep)
    try:
        while True:
            try:
                data = conn.recv_bytes()
            except EOFError:
                return
            if not data:
                return
            records = _unpack(data)
            try:
                out.write([json.dumps(to_dict(r), ensure_ascii=False, separators=(",", ":")) + "\n"
                           for r in records])
            except OSError as exc:
                conn.send((len(records), type(exc).__name__, str(exc)))
    finally:
        out.close()
        conn.close()


class JsonlSink:
    def __init__(self, path: str | os.PathLike, max_bytes: int, keep: int, counters: Counters) -> None:
        self.path = Path(path)
        self.counters = counters
        self.path.parent.mkdir(parents=True, exist_ok=True)
        context = multiprocessing.get_context("spawn")  # no fork of a process running threads and grpc
        self._conn, child_conn = context.Pipe(duplex=True)
        self._process = context.Process(target=_encoder_main, name="authwire-jsonl", daemon=True,
                                        args=(child_conn, str(self.path), max_bytes, keep))
        self._process.start()
        child_conn.close()

    def write(self, records: Sequence[record_pb2.EnrichedRecord]) -> None:
        """Hand records to the encoder; raises OSError (e.g. BrokenPipeError) when it is gone."""
        self._collect_failures()
        self._conn.send_bytes(_pack(records))

    def _collect_failures(self) -> None:
        try:
            while self._conn.poll():
                n, kind, message = self._conn.recv()
                self.counters.inc("jsonl.write_failed", kind, n)
        except (EOFError, OSError):
            pass

    def close(self) -> None:
        """Flush: the encoder writes everything sent so far, then exits."""
        try:
            self._conn.send_bytes(b"")
        except OSError:
            pass
        self._process.join(CLOSE_TIMEOUT_SECONDS)
        self._collect_failures()
        if self._process.is_alive():
            self._process.kill()
        self._conn.close()

"""JSONL sink for log shippers: one EnrichedRecord per line, proto3 JSON mapping, size-rotated."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from authwire.records import to_dict
from authwire.v1 import record_pb2


class JsonlSink:
    """Appends to PATH; before it would pass max_bytes renames PATH -> PATH.1 -> ... PATH.keep (oldest dropped)."""

    def __init__(self, path: str | os.PathLike, max_bytes: int, keep: int) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = max(keep, 0)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held open for the run

    def write(self, records: Sequence[record_pb2.EnrichedRecord]) -> None:
        chunk: list[str] = []
        size = self._file.tell()
        for record in records:
            line = json.dumps(to_dict(record), ensure_ascii=False, separators=(",", ":")) + "\n"
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

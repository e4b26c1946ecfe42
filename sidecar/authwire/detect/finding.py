"""What a detector reports about one key when asked (Detector.finding): the content of an alert."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from authwire.detect.fields import RecordFields
from authwire.v1 import record_pb2

INFO = record_pb2.ALERT_SEVERITY_INFO
WARNING = record_pb2.ALERT_SEVERITY_WARNING
CRITICAL = record_pb2.ALERT_SEVERITY_CRITICAL

SAMPLE = 16  # request ids, connection uids a finding carries at most
MAX_LISTED = 64  # clients, credentials a finding lists at most (evidence has the full counts)


@dataclass
class Finding:
    severity: int
    summary: str
    key: str
    evidence: dict[str, float]
    request_ids: list[str] = field(default_factory=list)
    clients: list[str] = field(default_factory=list)
    connection_uids: list[str] = field(default_factory=list)
    credentials: list[str] = field(default_factory=list)
    stack: str = ""
    first_time: float = 0.0        # start time of the earliest request in the evidence (epoch s)
    client: str = ""               # the one client it is about, if any
    block_ips: list[str] = field(default_factory=list)  # which IPs a block would cover


class Detector(Protocol):
    name: str
    window: float  # seconds without a match after which the key's alert is closed
    outcomes: tuple[int, ...] | None  # the auth outcomes it reads; None = every record

    def observe(self, f: RecordFields):
        """Update state with one record; return the key whose rule now holds, or None."""

    def finding(self, key) -> Finding | None:
        """The alert content for key from current state (None when the state is gone)."""

    def forgotten(self) -> int:
        """Keys and entries dropped to stay within the memory bound, so far."""

    def size(self) -> int:
        """Entries held now (keys + window entries): the memory bound tests check it."""

    def bound(self) -> int:
        """The most size() can ever be."""

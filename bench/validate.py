"""Cost of the decode + validation boundary per event (protobuf decode, validation, secret scanner).

Prints µs of CPU (process time, one thread) per event for: a typical event, a typical event through the
secret scanner alone, an event whose text trips the scanner's pre-filter (so every pattern runs on every
field), and a worst case (every string at its length limit, full of near-secret shapes). Run:
    .venv/bin/python bench/validate.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from authwire.ingest import validate as v  # noqa: E402
from authwire.ingest.decode import decode_report  # noqa: E402
from authwire.ingest.event_rows import admit  # noqa: E402
from authwire.ingest.secrets import secret_indexes  # noqa: E402
from authwire.v1 import auth_event_pb2 as pb  # noqa: E402
from authwire.v1 import ingest_pb2  # noqa: E402
from support import auth_event  # noqa: E402


class _NoCounters:
    def inc(self, name: str, label: str = "", n: int = 1) -> None:
        pass


def typical() -> pb.AuthEvent:
    e = auth_event("6f1c2b9e-5d2a-4c1e-9a37-0c4f6e8d2b71", client=("203.0.113.54", 51234))
    e.http.user_agent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0"
    e.http.path = "/api/v1/orders/48213"
    e.auth.jwt.CopyFrom(pb.JwtClaims(iss="https://idp.example/realms/main", sub="alice", aud="orders-api",
                                     kid="2024-06-key", alg="RS256", exp=1_900_000_000, iat=1_800_000_000))
    return e


def prefilter_hit() -> pb.AuthEvent:
    e = typical()
    e.http.path = "/api/v1/keys/48213/tokens"   # "key" and "token": every pattern runs
    e.auth.message = "password: missing"
    return e


def worst() -> pb.AuthEvent:
    e = typical()
    for path, limit in zip(v._STRINGS, v._LIMITS, strict=True):
        if path in ("client.ip", "server.ip", "auth.jwt.jti_hash"):
            continue
        chunk = "Basic key=" if path not in v.IDENTITY_TEXT else "AbCdEfGh1234567+/"
        value = (chunk * (limit // len(chunk) + 1))[:limit]
        parent, _, name = path.rpartition(".")
        setattr(v.attrgetter(parent)(e) if parent else e, name, value)
    return e


def per_event(fn, n: int) -> float:
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n * 1e6


def main() -> None:
    now = time.time()
    counters = _NoCounters()
    rows = []
    for name, make, n in (("typical", typical, 20000), ("pre-filter hit", prefilter_hit, 20000),
                          ("worst case (all fields at their limit)", worst, 2000)):
        event = make()
        assert not v.validate(pb.AuthEvent.FromString(event.SerializeToString()), 0, now, counters) or \
            name.startswith("worst"), name
        batch = ingest_pb2.ReportRequest(events=[event] * 100).SerializeToString()
        values = v._GET_STRINGS(event)
        scan = per_event(lambda values=values: secret_indexes(values, v._PLAIN_SCAN, v._IDENTITY_SCAN), n)
        validate = per_event(lambda event=event: v.validate(pb.AuthEvent.FromString(event.SerializeToString()),
                                                            0, now, counters), n) - \
            per_event(lambda event=event: pb.AuthEvent.FromString(event.SerializeToString()), n)

        def decode_validate(batch=batch):
            req = ingest_pb2.ReportRequest.FromString(batch)
            v.validate_batch(req.events, now, counters, "bench")

        total = per_event(decode_validate, max(n // 100, 20)) / 100

        def admitted(batch=batch):  # what the pipeline runs: the native pass, the Python path for the rest
            admit(decode_report(batch).events, now, counters, "bench")

        pipeline = per_event(admitted, max(n // 100, 20)) / 100
        rows.append((name, len(event.SerializeToString()), scan, validate, total, pipeline))
    print(f"{'event':40} {'bytes':>6} {'scanner µs':>11} {'validate µs':>12} {'decode+validate µs CPU':>23} "
          f"{'pipeline µs CPU':>16}")
    for name, size, scan, validate, total, pipeline in rows:
        print(f"{name:40} {size:6d} {scan:11.2f} {validate:12.2f} {total:23.2f} {pipeline:16.2f}")
    print("(µs of process CPU per event, one thread; decode+validate = ReportRequest of 100 events parsed and "
          "validated on the Python path, per event; pipeline = the same through decode_report + admit: the "
          "native pass, and the Python path for what it declines)")


if __name__ == "__main__":
    main()

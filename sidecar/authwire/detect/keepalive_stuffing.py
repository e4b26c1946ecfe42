"""keepalive_stuffing: many failed auths on one TCP connection (a keep-alive socket reused to guess).

Rule (per connection: the kernel's connection uid when the record joined EXACT, else the gateway's node +
connection id; records with neither are not counted), over a sliding window of `window` seconds:

    failures >= min_failures and distinct credentials among them >= min_credentials -> match
    (credentials judged when most failures name one: where the gateway never names them (Envoy), the
    failure count alone decides, and the alert says so: evidence credentials_unnamed)

A client that keeps sending one stale token gets many failures with one credential: no match. Browsers
and SDKs open a new connection rarely, so dozens of 401s with different usernames on one socket is a
tool. Severity WARNING; CRITICAL once failures reach 5x min_failures.

Memory: at most `max_keys` connections (LRU), each with at most MAX_FAILURES_PER_CONNECTION failures in its
window; what is dropped beyond that is counted as forgotten.
"""

from __future__ import annotations

from authwire.detect.fields import FAILURE, RecordFields, stack_text
from authwire.detect.finding import CRITICAL, MAX_LISTED, SAMPLE, WARNING, Finding
from authwire.detect.memory import DistinctWindow, Lru, Tally, credentials_enough, credentials_text

NAME = "keepalive_stuffing"
MAX_FAILURES_PER_CONNECTION = 1024


class _Connection:
    __slots__ = ("failures", "client", "signature", "hops")

    def __init__(self, f: RecordFields, tally: Tally) -> None:
        self.failures = DistinctWindow(MAX_FAILURES_PER_CONNECTION, tally)
        self.client = f.client_ip
        self.signature = f.signature
        self.hops = f.hops


class KeepaliveStuffing:
    name = NAME
    outcomes = (FAILURE,)  # the auth outcomes it reads (None: every record)

    def __init__(self, window: float, min_failures: int, min_credentials: int, max_keys: int) -> None:
        self.window = window
        self.min_failures = min_failures
        self.min_credentials = min_credentials
        self._tally = Tally()
        self._connections: Lru[_Connection] = Lru(max_keys, self._tally)

    def observe(self, f: RecordFields):
        if f.outcome != FAILURE:
            return None
        key = f.uid
        if not key:
            connection_id = f.gateway_connection_id
            if not connection_id:
                return None
            key = f"{f.gateway_node}#{connection_id}"
        conn = self._connections.get(key)
        if conn is None:
            conn = self._connections.get_or_make(key, lambda: _Connection(f, self._tally))
        else:
            self._connections.touch(key)
        failures = conn.failures
        failures.expire(f.time - self.window)
        failures.add(f.time, f.client_ip, f.credential, f.request_id, key if f.conn is not None else "")
        if len(failures.entries) >= self.min_failures and credentials_enough(failures, self.min_credentials):
            return key
        return None

    def finding(self, key) -> Finding | None:
        conn = self._connections.get(key)
        if conn is None or not conn.failures.entries:
            return None
        failures = conn.failures
        n, creds = len(failures.entries), len(failures.b_counts)
        entries = list(failures.entries)
        sample = entries[:SAMPLE // 2] + entries[-(SAMPLE // 2):] if n > SAMPLE else entries
        span = entries[-1][0] - entries[0][0]
        stack = stack_text(conn.signature, conn.hops) if conn.signature else ""
        clients = list(failures.a_counts)[:MAX_LISTED]
        return Finding(
            severity=CRITICAL if n >= 5 * self.min_failures else WARNING,
            summary=(f"{n} failed auths with {credentials_text(failures)} on one connection ({key}) from "
                     f"{conn.client} in {span:.2f}s"),
            key=f"conn={key}",
            evidence={"failures": n, "distinct_credentials": creds, "credentials_unnamed": failures.unnamed,
                      "seconds": round(span, 3)},
            request_ids=list(dict.fromkeys(e[3] for e in sample)),
            clients=clients,
            connection_uids=[key] if conn.failures.entries[0][4] else [],
            credentials=sorted(failures.b_counts, key=failures.b_counts.get, reverse=True)[:MAX_LISTED],
            stack=stack,
            client=conn.client,
            first_time=entries[0][0],
            block_ips=clients,
        )

    def forgotten(self) -> int:
        return self._tally.n

    def size(self) -> int:
        return sum(1 + len(c.failures) for c in self._connections.values())

    def bound(self) -> int:
        return self._connections.max_keys * (1 + MAX_FAILURES_PER_CONNECTION)

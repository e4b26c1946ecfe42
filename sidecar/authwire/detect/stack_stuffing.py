"""stack_stuffing: brute force / credential stuffing from one TCP stack that rotates its source IPs.

Rule (per client TCP stack = SYN signature + hop distance, over a sliding window of `window` seconds of
request start times):

    failures     >= min_failures           failed auths (AUTH_OUTCOME_FAILURE) from that stack
    distinct IPs >= min_ips                 among those failures
    distinct credentials >= min_credentials among those failures (credential id / consumer / JWT sub),
                                            judged when most failures name one: a gateway that never names
                                            the credential a failure tried (Envoy) leaves this condition
                                            out, and the alert says so (evidence credentials_unnamed)
    failures / (failures + successes) >= min_failure_ratio

Many legitimate clients share a common stack (most Linux hosts sign alike), so raw counts are not enough:
a busy stack with a few typos has a low failure ratio, and one user retrying has one credential and one
IP. Records whose stack is unknown (no EXACT join, behind a proxy, mid-stream) are not counted.
Severity: WARNING; CRITICAL once the failures reach 5x min_failures.

Memory: at most `max_keys` stacks (LRU), each with at most MAX_FAILURES_PER_STACK failures in its window and
success counts in BUCKETS_PER_WINDOW buckets; what is dropped beyond that is counted as forgotten.
"""

from __future__ import annotations

from authwire.detect.fields import FAILURE, SUCCESS, RecordFields, stack_text
from authwire.detect.finding import CRITICAL, MAX_LISTED, SAMPLE, WARNING, Finding
from authwire.detect.memory import BucketCounts, DistinctWindow, Lru, Tally, credentials_enough, credentials_text

NAME = "stack_stuffing"
MAX_FAILURES_PER_STACK = 2048
BUCKETS_PER_WINDOW = 60


class _Stack:
    __slots__ = ("failures", "successes")

    def __init__(self, tally: Tally, width: float) -> None:
        self.failures = DistinctWindow(MAX_FAILURES_PER_STACK, tally)
        self.successes = BucketCounts(width)


class StackStuffing:
    name = NAME

    def __init__(self, window: float, min_failures: int, min_ips: int, min_credentials: int,
                 min_failure_ratio: float, max_keys: int) -> None:
        self.window = window
        self.min_failures = min_failures
        self.min_ips = min_ips
        self.min_credentials = min_credentials
        self.min_ratio = min_failure_ratio
        self._tally = Tally()
        self._stacks: Lru[_Stack] = Lru(max_keys, self._tally)
        self._width = max(window / BUCKETS_PER_WINDOW, 0.001)

    def observe(self, f: RecordFields):
        outcome = f.outcome
        if not f.signature or (outcome != FAILURE and outcome != SUCCESS):
            return None
        key = (f.signature, f.hops)
        stack = self._stacks.get_or_make(key, self._new_stack)
        if outcome == SUCCESS:  # the ratio's denominator: a busy stack's few typos stay a small fraction
            stack.successes.expire(f.time - self.window)
            stack.successes.add(f.time)
            return None
        cutoff = f.time - self.window
        failures = stack.failures
        failures.expire(cutoff)
        stack.successes.expire(cutoff)
        failures.add(f.time, f.client_ip, f.credential, f.request_id, f.uid)
        n = len(failures.entries)
        if (n >= self.min_failures and len(failures.a_counts) >= self.min_ips
                and credentials_enough(failures, self.min_credentials)
                and n >= self.min_ratio * (n + stack.successes.total)):
            return key
        return None

    def _new_stack(self) -> _Stack:
        return _Stack(self._tally, self._width)

    def finding(self, key) -> Finding | None:
        stack = self._stacks.get(key)
        if stack is None or not stack.failures.entries:
            return None
        failures = stack.failures
        n = len(failures.entries)
        ips, creds = len(failures.a_counts), len(failures.b_counts)
        successes = stack.successes.total
        ratio = n / (n + successes)
        signature, hops = key
        entries = list(failures.entries)
        sample = entries[:SAMPLE // 2] + entries[-(SAMPLE // 2):] if n > SAMPLE else entries
        clients = sorted(failures.a_counts, key=failures.a_counts.get, reverse=True)[:MAX_LISTED]
        return Finding(
            severity=CRITICAL if n >= 5 * self.min_failures else WARNING,
            summary=(f"{n} failed auths from one TCP stack ({stack_text(signature, hops)}) across {ips} source "
                     f"IPs and {credentials_text(failures)} in {self.window:g}s; failure ratio {ratio:.0%}"),
            key=f"stack={stack_text(signature, hops)}",
            evidence={"failures": n, "successes": successes, "distinct_ips": ips, "distinct_credentials": creds,
                      "credentials_unnamed": failures.unnamed, "failure_ratio": round(ratio, 4)},
            request_ids=list(dict.fromkeys(e[3] for e in sample)),
            clients=clients,
            connection_uids=list(dict.fromkeys(e[4] for e in sample if e[4]))[:SAMPLE],
            credentials=sorted(failures.b_counts, key=failures.b_counts.get, reverse=True)[:MAX_LISTED],
            stack=stack_text(signature, hops),
            first_time=entries[0][0],
            block_ips=clients,
        )

    def forgotten(self) -> int:
        return self._tally.n

    def size(self) -> int:
        return sum(1 + len(s.failures) + len(s.successes.buckets) for s in self._stacks.values())

    def bound(self) -> int:
        buckets = BUCKETS_PER_WINDOW + 3
        return self._stacks.max_keys * (1 + MAX_FAILURES_PER_STACK + buckets)

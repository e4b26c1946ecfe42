"""stack_stuffing: brute force / credential stuffing from one TCP stack that rotates its source IPs.

Rule (per client TCP stack = SYN signature + hop distance, over a sliding window of `window` seconds of
request start times). A failing IP of the stack is *bad* when its own failures / (failures + successes) on
that stack >= min_failure_ratio. The rule holds when, over the stack's bad IPs:

    failures     >= min_failures           failed auths (AUTH_OUTCOME_FAILURE) from bad IPs
    bad IPs      >= min_ips
    distinct credentials >= min_credentials among the stack's failures (credential id / consumer / JWT sub),
                                            judged when most failures name one: a gateway that never names
                                            the credential a failure tried (Envoy) leaves this condition
                                            out, and the alert says so (evidence credentials_unnamed)

Many legitimate clients share a common stack (most Linux hosts sign alike), so raw counts are not enough,
and neither is the stack's overall failure ratio (a busy stack would hide an attack in its volume; its
users' typos would dilute it). The ratio is judged per IP: users who mistype also log in, an address pool
that only ever fails does not; the alert lists (and a block would cover) only the bad IPs. One user
retrying has one IP. Successes are counted per (stack, IP) while the IP stays active (an IP idle for
`window` starts again). Records whose stack is unknown (no EXACT join, behind a proxy, mid-stream) are
not counted. Which IPs are bad is updated with each failure and success of that IP (one lookup); the
totals over the bad IPs are summed when there are at least min_ips of them, and once the rule holds it is
taken to hold for RECHECK_S of record time before they are summed again.
Severity: WARNING; CRITICAL once the failures reach 5x min_failures.

Memory: at most `max_keys` stacks (LRU), each with at most MAX_FAILURES_PER_STACK failures in its window,
and at most SUCCESS_IPS_PER_KEY x `max_keys` (stack, IP) success counts (oldest dropped first); what is
dropped is counted as forgotten.
"""

from __future__ import annotations

from authwire.detect.fields import FAILURE, SUCCESS, RecordFields, stack_text
from authwire.detect.finding import CRITICAL, MAX_LISTED, SAMPLE, WARNING, Finding
from authwire.detect.memory import DistinctWindow, Lru, Tally, credentials_enough, credentials_text

NAME = "stack_stuffing"
MAX_FAILURES_PER_STACK = 2048
SUCCESS_IPS_PER_KEY = 16
RECHECK_S = 0.25  # once the rule holds, it is summed again after this much record time


class _Stack:
    __slots__ = ("failures", "bad", "holds_until")

    def __init__(self, tally: Tally) -> None:
        self.failures = DistinctWindow(MAX_FAILURES_PER_STACK, tally)
        self.bad: dict[str, None] = {}  # IPs that mostly failed at their last failure or success
        self.holds_until = 0.0


class StackStuffing:
    name = NAME
    outcomes = (SUCCESS, FAILURE)  # the auth outcomes it reads (None: every record)

    def __init__(self, window: float, min_failures: int, min_ips: int, min_credentials: int,
                 min_failure_ratio: float, max_keys: int) -> None:
        self.window = window
        self.min_failures = min_failures
        self.min_ips = min_ips
        self.min_credentials = min_credentials
        self.min_ratio = min_failure_ratio
        self._tally = Tally()
        self._stacks: Lru[_Stack] = Lru(max_keys, self._tally)
        self._successes: dict[tuple[str, int, str], list] = {}  # (signature, hops, ip) -> [count, last time]
        self._max_successes = max_keys * SUCCESS_IPS_PER_KEY

    def observe(self, f: RecordFields):
        outcome = f.outcome
        signature = f.signature
        if not signature:
            return None
        ip = f.client_ip
        if outcome == SUCCESS:
            key = (signature, f.hops, ip)
            entry = self._successes.get(key)
            if entry is None or entry[1] < f.time - self.window:
                if entry is not None:
                    del self._successes[key]  # re-inserted at the young end
                elif len(self._successes) >= self._max_successes:
                    del self._successes[next(iter(self._successes))]
                    self._tally.n += 1
                self._successes[key] = [1, f.time]
            else:
                entry[0] += 1
                if f.time > entry[1]:
                    entry[1] = f.time
            stack = self._stacks.get((signature, f.hops))
            if stack is not None and ip in stack.bad and not self._is_bad(stack, signature, f.hops, ip, f.time):
                del stack.bad[ip]
            return None
        if outcome != FAILURE:
            return None
        key = (signature, f.hops)
        stack = self._stacks.get_or_make(key, self._new_stack)
        t = f.time
        failures = stack.failures
        failures.expire(t - self.window)
        failures.add(t, ip, f.credential, f.request_id, f.uid)
        if self._is_bad(stack, signature, f.hops, ip, t):
            stack.bad[ip] = None
        elif ip in stack.bad:
            del stack.bad[ip]
        if len(stack.bad) < self.min_ips or not credentials_enough(failures, self.min_credentials):
            return None
        if t < stack.holds_until and t > stack.holds_until - 2 * RECHECK_S:
            return key
        bad, bad_failures, _ = self._bad_ips(key, stack, t)
        if len(bad) >= self.min_ips and bad_failures >= self.min_failures:
            stack.holds_until = t + RECHECK_S
            return key
        return None

    def _is_bad(self, stack: _Stack, signature: str, hops: int, ip: str, t: float) -> bool:
        n = stack.failures.a_counts.get(ip, 0)
        if not n:
            return False
        entry = self._successes.get((signature, hops, ip))
        ok = entry[0] if entry is not None and entry[1] >= t - self.window else 0
        return n >= self.min_ratio * (n + ok)

    def _bad_ips(self, key, stack: _Stack, t: float) -> tuple[list[str], int, int]:
        """The stack's bad IPs (rechecked; stale ones dropped), their failures and their successes."""
        signature, hops = key
        cutoff = t - self.window
        counts = stack.failures.a_counts
        get = self._successes.get
        ratio = self.min_ratio
        bad: list[str] = []
        bad_failures = bad_successes = 0
        for ip in list(stack.bad):
            n = counts.get(ip, 0)
            entry = get((signature, hops, ip))
            ok = entry[0] if entry is not None and entry[1] >= cutoff else 0
            if n and n >= ratio * (n + ok):
                bad.append(ip)
                bad_failures += n
                bad_successes += ok
            else:
                del stack.bad[ip]
        return bad, bad_failures, bad_successes

    def _new_stack(self) -> _Stack:
        return _Stack(self._tally)

    def finding(self, key) -> Finding | None:
        stack = self._stacks.get(key)
        if stack is None or not stack.failures.entries:
            return None
        failures = stack.failures
        n = len(failures.entries)
        creds = len(failures.b_counts)
        bad, bad_failures, bad_successes = self._bad_ips(key, stack, failures.entries[-1][0])
        if not bad:
            return None
        ratio = bad_failures / (bad_failures + bad_successes)
        signature, hops = key
        bad_set = set(bad)
        entries = [e for e in failures.entries if e[1] in bad_set]
        sample = entries[:SAMPLE // 2] + entries[-(SAMPLE // 2):] if len(entries) > SAMPLE else entries
        clients = sorted(bad, key=failures.a_counts.get, reverse=True)[:MAX_LISTED]
        return Finding(
            severity=CRITICAL if bad_failures >= 5 * self.min_failures else WARNING,
            summary=(f"{bad_failures} failed auths from one TCP stack ({stack_text(signature, hops)}) across "
                     f"{len(bad)} source IPs that mostly fail, {credentials_text(failures)} in {self.window:g}s; "
                     f"their failure ratio {ratio:.0%}"),
            key=f"stack={stack_text(signature, hops)}",
            evidence={"failures": bad_failures, "successes": bad_successes, "distinct_ips": len(bad),
                      "distinct_credentials": creds, "credentials_unnamed": failures.unnamed,
                      "failure_ratio": round(ratio, 4), "stack_failures": n,
                      "stack_failing_ips": len(failures.a_counts)},
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
        return (sum(1 + len(s.failures) + len(s.bad) for s in self._stacks.values()) + len(self._successes))

    def bound(self) -> int:
        return self._stacks.max_keys * (1 + 2 * MAX_FAILURES_PER_STACK) + self._max_successes

"""ua_stack_mismatch: the User-Agent claims an OS family that the client's SYN contradicts.

Rule (records with a known client stack and a browser User-Agent, i.e. one starting "Mozilla/"):

    UA claims windows ("Windows NT", "Windows Phone") or macos ("Macintosh", "Mac OS X", "iPhone", "iPad")
    and the SYN's OS hint (authwire.join.fingerprint) is linux or network_device (a bare stack: initial
    TTL 255), or the other of windows / macos  -> match.

Hints "unknown" and "bsd" never contradict (no evidence), and a Linux or Android UA is never checked
(Linux stacks are also what most proxies and NAT boxes present). The UA is attacker-controlled text: it is
classified, never copied into the alert (the alert says "claims windows").
Alerts are per client IP and auth outcome (key: ip, claimed family, SYN hint, outcome), once per `window`
and then updated; at most `max_new_per_minute` new keys per minute start an alert, the rest are counted
(`detect.rate_limited{ua_stack_mismatch}`) and retried on their next request.

Memory: at most `max_keys` keys (LRU); the UA classification cache holds at most UA_CACHE entries (cleared
when full, counted as forgotten).
"""

from __future__ import annotations

from authwire.detect.fields import RecordFields, stack_text
from authwire.detect.finding import SAMPLE, WARNING, Finding
from authwire.detect.memory import Lru, Tally
from authwire.records import short_enum
from authwire.v1 import auth_event_pb2

NAME = "ua_stack_mismatch"
UA_CACHE = 4096
CONTRADICTS = {"windows": frozenset({"linux", "network_device", "macos"}),
               "macos": frozenset({"linux", "network_device", "windows"})}
_CHECKED_HINTS = frozenset({"linux", "network_device", "windows", "macos"})


def claimed_os(user_agent: str) -> str:
    """The OS family a browser User-Agent claims: windows, macos, linux, or "" (no browser claim)."""
    if not user_agent.startswith("Mozilla/"):
        return ""
    if "Windows NT" in user_agent or "Windows Phone" in user_agent:
        return "windows"
    if "iPhone" in user_agent or "iPad" in user_agent or "Macintosh" in user_agent or "Mac OS X" in user_agent:
        return "macos"
    if "Linux" in user_agent or "Android" in user_agent or "X11" in user_agent or "CrOS" in user_agent:
        return "linux"
    return ""


class _Client:
    __slots__ = ("first", "last", "requests", "request_ids", "uids", "signature", "hops")

    def __init__(self, f: RecordFields) -> None:
        self.first = self.last = f.time
        self.requests = 0
        self.request_ids: list[str] = []
        self.uids: dict[str, None] = {}
        self.signature = f.signature
        self.hops = f.hops


class UaStackMismatch:
    name = NAME
    outcomes = None  # the auth outcomes it reads (None: every record)

    def __init__(self, window: float, max_new_per_minute: int, max_keys: int) -> None:
        self.window = window
        self.max_new_per_minute = max_new_per_minute
        self._tally = Tally()
        self._clients: Lru[_Client] = Lru(max_keys, self._tally)
        self._ua: dict[str, str] = {}
        self._minute = -1
        self._new_this_minute = 0
        self.rate_limited = 0

    def observe(self, f: RecordFields):
        hint = f.os_hint
        if hint not in _CHECKED_HINTS or not f.signature:
            return None
        ua = f.user_agent
        claim = self._ua.get(ua)
        if claim is None:
            if len(self._ua) >= UA_CACHE:
                self._tally.n += len(self._ua)
                self._ua.clear()
            claim = self._ua[ua] = claimed_os(ua)
        if not claim or hint not in CONTRADICTS.get(claim, ()):
            return None
        key = (f.client_ip, claim, hint, f.outcome)
        client = self._clients.get(key)
        if client is None:
            minute = int(f.time // 60)
            if minute != self._minute:
                self._minute, self._new_this_minute = minute, 0
            if self._new_this_minute >= self.max_new_per_minute:
                self.rate_limited += 1
                return None
            self._new_this_minute += 1
            client = self._clients.get_or_make(key, lambda: _Client(f))
        elif f.time - client.last > self.window:  # a new window for this key: evidence starts again
            self._clients.pop(key)
            client = self._clients.get_or_make(key, lambda: _Client(f))
        client.requests += 1
        client.last = max(client.last, f.time)
        if len(client.request_ids) < SAMPLE:
            client.request_ids.append(f.request_id)
        if f.uid and len(client.uids) < SAMPLE:
            client.uids[f.uid] = None
        return key

    def finding(self, key) -> Finding | None:
        client = self._clients.get(key)
        if client is None:
            return None
        ip, claim, hint, outcome = key
        outcome_text = short_enum(auth_event_pb2.AuthOutcome, outcome)
        return Finding(
            severity=WARNING,
            summary=(f"client {ip}: User-Agent claims {claim} but its TCP stack looks {hint} "
                     f"({stack_text(client.signature, client.hops)}); {client.requests} requests, auth {outcome_text}"),
            key=f"client={ip}/ua={claim}/syn={hint}/outcome={outcome_text}",
            evidence={"requests": client.requests},
            request_ids=list(client.request_ids),
            clients=[ip],
            connection_uids=list(client.uids),
            stack=stack_text(client.signature, client.hops),
            client=ip,
            first_time=client.first,
            block_ips=[ip],
        )

    def forgotten(self) -> int:
        return self._tally.n

    def size(self) -> int:
        return len(self._clients) + len(self._ua)

    def bound(self) -> int:
        return self._clients.max_keys + UA_CACHE

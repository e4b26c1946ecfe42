"""credential_replay: a credential used successfully from a network position unlike the one it has been using.

Rule (per credential: the JWT's token when it carries a jti (`jti:<hash>`), else the credential id, else the
consumer; successful auths with a known client stack only):

    A credential's position = (SYN signature, hop distance, client network: /24 for IPv4, /48 for IPv6).
    Its home is the first position it succeeded from and stays home while it is used within `window`.
    A success from another position while home was used within `window` -> alert on that credential.
    Severity CRITICAL when the home position was used within `concurrent` seconds of the other position
    (before its first use or at any time after it: both in use at once), else WARNING (it moved).

The handshake RTT is reported per position (median band: <1 ms, <10 ms, <100 ms, >=100 ms) but not ruled
on: one client's RTT crosses band edges with ordinary jitter.
A credential keeps at most MAX_POSITIONS positions (oldest-used forgotten, counted); at most `max_keys`
credentials are remembered (LRU, counted). A position not used for `window` seconds is dropped, and when
home is dropped the most used remaining position becomes home.
"""

from __future__ import annotations

import ipaddress

from authwire.detect.fields import SUCCESS, RecordFields, stack_text
from authwire.detect.finding import CRITICAL, MAX_LISTED, SAMPLE, WARNING, Finding
from authwire.detect.memory import Lru, Tally

NAME = "credential_replay"
MAX_POSITIONS = 4
NETWORK_CACHE = 65536  # client IP -> its /24 or /48
RTT_BANDS = ((1_000, "<1ms"), (10_000, "<10ms"), (100_000, "<100ms"))


def network_of(ip: str) -> str:
    """The /24 (IPv4) or /48 (IPv6) a client address belongs to; the text itself when unparsable."""
    if "." in ip and ":" not in ip:
        head, _, _ = ip.rpartition(".")
        return head + ".0/24"
    try:
        return str(ipaddress.ip_network(f"{ip}/48", strict=False))
    except ValueError:
        return ip


def rtt_band(rtt_us: int) -> str:
    for limit, name in RTT_BANDS:
        if rtt_us < limit:
            return name
    return ">=100ms"


def _credential_text(key: str) -> str:
    """How a summary names the credential: a token by the start of its jti hash (the key has all of it)."""
    if key.startswith("jti:"):
        return f"token jti:{key[4:20]}..."
    return f"credential {key}"


class _Position:
    __slots__ = ("signature", "hops", "network", "first", "last", "uses", "ips", "request_ids", "uids", "rtt_us")

    def __init__(self, f: RecordFields, network: str) -> None:
        self.signature = f.signature
        self.hops = f.hops
        self.network = network
        self.first = self.last = f.time
        self.uses = 0
        self.ips: dict[str, None] = {}
        self.request_ids: list[str] = []
        self.uids: dict[str, None] = {}
        self.rtt_us = f.rtt_us

    def use(self, f: RecordFields) -> None:
        self.uses += 1
        t = f.time
        if t > self.last:
            self.last = t
        elif t < self.first:
            self.first = t
        if len(self.request_ids) < SAMPLE:  # samples: the first requests from this position
            self.request_ids.append(f.request_id)
            if len(self.ips) < MAX_LISTED:
                self.ips[f.client_ip] = None
            uid = f.uid
            if uid:
                self.uids[uid] = None

    def text(self) -> str:
        return f"{stack_text(self.signature, self.hops)} from {self.network}"


class _Credential:
    __slots__ = ("positions", "home")

    def __init__(self) -> None:
        self.positions: list[_Position] = []
        self.home: _Position | None = None


class CredentialReplay:
    name = NAME
    outcomes = (SUCCESS,)  # the auth outcomes it reads (None: every record)

    def __init__(self, window: float, concurrent: float, max_keys: int) -> None:
        self.window = window
        self.concurrent = concurrent
        self._tally = Tally()
        self._credentials: Lru[_Credential] = Lru(max_keys, self._tally)
        self._networks: dict[str, str] = {}  # client IP -> its network, bounded (cleared when full)

    def _network(self, ip: str) -> str:
        net = self._networks.get(ip)
        if net is None:
            if len(self._networks) >= NETWORK_CACHE:
                self._networks.clear()  # a cache: cheap to rebuild
            net = self._networks[ip] = network_of(ip)
        return net

    def observe(self, f: RecordFields):
        if f.outcome != SUCCESS or not f.signature:
            return None
        key = f.token or f.credential
        if not key:
            return None
        cred = self._credentials.get_or_make(key, _Credential)
        ip = f.client_ip
        net = self._networks.get(ip)
        if net is None:
            net = self._network(ip)
        positions = cred.positions
        signature, hops = f.signature, f.hops
        for position in positions:
            if position.signature == signature and position.hops == hops and position.network == net:
                break
        else:  # a new position: the rare path
            self._expire(cred, f.time - self.window)
            position = _Position(f, net)
            positions.append(position)
            if len(positions) > MAX_POSITIONS:
                oldest = min((p for p in positions if p is not cred.home), key=lambda p: p.last)
                positions.remove(oldest)
                self._tally.n += 1
            if cred.home is None:
                cred.home = position
        position.use(f)
        if len(positions) > 1:
            self._expire(cred, f.time - self.window)
            if len(positions) > 1:
                return key
        return None

    def _expire(self, cred: _Credential, cutoff: float) -> None:
        positions = cred.positions
        if any(p.last < cutoff for p in positions):
            positions[:] = [p for p in positions if p.last >= cutoff]
            if cred.home not in positions:
                cred.home = max(positions, key=lambda p: p.uses) if positions else None

    def finding(self, key) -> Finding | None:
        cred = self._credentials.get(key)
        if cred is None or cred.home is None or len(cred.positions) < 2:
            return None
        home = cred.home
        others = [p for p in cred.positions if p is not home]
        concurrent = any(home.last >= p.first - self.concurrent for p in others)
        first_other = min(others, key=lambda p: p.first)
        ips = list(dict.fromkeys(ip for p in others for ip in p.ips))[:MAX_LISTED]
        evidence: dict[str, float] = {"positions": len(cred.positions), "home_uses": home.uses,
                                      "other_uses": sum(p.uses for p in others),
                                      "seconds_between": round(max(0.0, first_other.first - home.last), 3)
                                      if not concurrent else 0.0}
        positions_text = "; ".join(f"{p.text()} ({p.uses}x, RTT {rtt_band(p.rtt_us)})" for p in others)
        return Finding(
            severity=CRITICAL if concurrent else WARNING,
            summary=(f"{_credential_text(key)} succeeded from {positions_text} while its usual position is "
                     f"{home.text()} ({home.uses}x, RTT {rtt_band(home.rtt_us)})"
                     f"{': both in use at once' if concurrent else ''}"),
            key=f"credential={key}",
            evidence=evidence,
            request_ids=[r for p in others for r in p.request_ids][:SAMPLE] + home.request_ids[:2],
            clients=list(dict.fromkeys([*ips, *home.ips]))[:MAX_LISTED],
            connection_uids=list(dict.fromkeys(u for p in (*others, home) for u in p.uids))[:SAMPLE],
            credentials=[key],
            stack=stack_text(first_other.signature, first_other.hops),
            client=ips[0] if ips else "",
            first_time=first_other.first,
            block_ips=ips,
        )

    def forgotten(self) -> int:
        return self._tally.n

    def size(self) -> int:
        return sum(1 + len(c.positions) for c in self._credentials.values()) + len(self._networks)

    def bound(self) -> int:
        return self._credentials.max_keys * (1 + MAX_POSITIONS + 1) + NETWORK_CACHE

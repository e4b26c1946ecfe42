"""Bounded memory for the detections: an LRU of keys, and a sliding window with distinct counts.

Every detector keeps its state in these, so no client can grow it without bound: the LRU forgets its
least recently used key beyond `max_keys`, a window forgets its oldest entry beyond `max_entries`, and
both count what they forgot (shown as `detect.forgotten{detection}` in `authwire stats`).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class Tally:
    """How much a detector forgot (keys and window entries), shared by its Lru and windows."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


class Lru(Generic[V]):
    """key -> state, at most max_keys; get_or_make() marks the key most recently used."""

    __slots__ = ("_items", "max_keys", "tally")

    def __init__(self, max_keys: int, tally: Tally) -> None:
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self.max_keys = max_keys
        self.tally = tally

    def get_or_make(self, key: Hashable, make: Callable[[], V]) -> V:
        items = self._items
        value = items.get(key)
        if value is None:
            value = items[key] = make()
            if len(items) > self.max_keys:
                items.popitem(last=False)
                self.tally.n += 1
        else:
            items.move_to_end(key)
        return value

    def get(self, key: Hashable) -> V | None:
        """The state of key, without marking it used."""
        return self._items.get(key)

    def touch(self, key: Hashable) -> None:
        """Mark a present key most recently used."""
        self._items.move_to_end(key)

    def pop(self, key: Hashable) -> None:
        self._items.pop(key, None)

    def values(self):
        return self._items.values()

    def __len__(self) -> int:
        return len(self._items)


class DistinctWindow:
    """Entries (time, a, b, request_id, uid) in time order; counts of distinct a and of distinct non-empty b
    (`unnamed` = entries whose b is empty).

    Used for "failures of one stack: how many, from how many IPs (a), with how many credentials (b)".
    """

    __slots__ = ("entries", "a_counts", "b_counts", "unnamed", "max_entries", "tally")

    def __init__(self, max_entries: int, tally: Tally) -> None:
        self.entries: deque[tuple[float, str, str, str, str]] = deque()
        self.a_counts: dict[str, int] = {}
        self.b_counts: dict[str, int] = {}
        self.unnamed = 0
        self.max_entries = max_entries
        self.tally = tally

    def add(self, t: float, a: str, b: str, request_id: str, uid: str) -> None:
        self.entries.append((t, a, b, request_id, uid))
        self.a_counts[a] = self.a_counts.get(a, 0) + 1
        if b:
            self.b_counts[b] = self.b_counts.get(b, 0) + 1
        else:
            self.unnamed += 1
        if len(self.entries) > self.max_entries:
            self._drop()
            self.tally.n += 1

    def expire(self, cutoff: float) -> None:
        entries = self.entries
        while entries and entries[0][0] < cutoff:
            self._drop()

    def _drop(self) -> None:
        _, a, b, _, _ = self.entries.popleft()
        n = self.a_counts[a] - 1
        if n:
            self.a_counts[a] = n
        else:
            del self.a_counts[a]
        if b:
            n = self.b_counts[b] - 1
            if n:
                self.b_counts[b] = n
            else:
                del self.b_counts[b]
        else:
            self.unnamed -= 1

    def __len__(self) -> int:
        return len(self.entries)


def credentials_enough(window: DistinctWindow, minimum: int) -> bool:
    """Distinct credentials >= minimum — judged only when most failures name one. Some gateways never name
    the credential a failure tried (Envoy's basic_auth and jwt_authn report no username or subject for a
    rejected request); there the rule rests on its other conditions rather than never firing."""
    if window.unnamed * 2 > len(window.entries):
        return True
    return len(window.b_counts) >= minimum


def credentials_text(window: DistinctWindow) -> str:
    """"12 credentials", or what the gateway left out."""
    named = len(window.b_counts)
    if window.unnamed * 2 > len(window.entries):
        if not named:
            return "no credential names (the gateway reports none for failures)"
        return f"{named} named credentials ({window.unnamed} failures name none)"
    return f"{named} credentials"

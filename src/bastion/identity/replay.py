"""Single-use caches for DPoP proof and client assertion ``jti`` values.

A proof or assertion is accepted once: its ``jti`` goes into a replay cache for as long as the
proof itself would still be accepted (after that, the time checks refuse it anyway), so the cache
only ever holds recent identifiers. The interface is one method so that the in-memory cache here
(embedded mode) and a Redis one (cluster mode, ``SET key 1 NX PX ttl``) are interchangeable.
"""

from __future__ import annotations

import heapq
import threading
from typing import Protocol


class ReplayCache(Protocol):
    """Remembers keys for a while; ``add`` says whether a key is new."""

    def add(self, key: str, ttl: float, now: float) -> bool:
        """Record ``key`` until ``now + ttl``. True if it was new, False if already seen (and
        not expired) or if the cache cannot vouch for it: callers treat False as a replay."""
        ...


class SharedReplayCache(Protocol):
    """A replay cache every gateway shares (cluster mode): the same contract, awaited, because
    it is a network call on the hot path. It raises ``ReplayCacheUnavailable`` when it cannot
    answer, so the caller refuses the proof with a 503 instead of calling it a replay."""

    async def add(self, key: str, ttl: float, now: float) -> bool: ...


class MemoryReplayCache:
    """An in-process :class:`ReplayCache`: a dict of expiries plus a heap ordered by expiry.

    Entries are added with nearly monotonic expiries, so the heap is cheap (pushes barely sift)
    and expired entries are evicted from its front on every ``add``, keeping memory proportional
    to the live entries: about 300 bytes each, so the default bound is about 300 MB at worst.

    When ``max_entries`` unexpired keys are held, ``add`` fails closed and returns False: evicting
    a live key would let whoever filled the cache replay the proof that key protected, and a
    silent replay is worse than a loud refusal (which the error rate and the logs will show).
    """

    def __init__(self, max_entries: int = 1_000_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._expiry)

    def add(self, key: str, ttl: float, now: float) -> bool:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        with self._lock:
            self._evict(now)
            if key in self._expiry:
                return False
            if len(self._expiry) >= self._max_entries:
                return False  # fail closed: see the class docstring
            expires = now + ttl
            self._expiry[key] = expires
            heapq.heappush(self._heap, (expires, key))
            return True

    def _evict(self, now: float) -> None:
        heap, expiry = self._heap, self._expiry
        while heap and heap[0][0] <= now:
            expires, key = heapq.heappop(heap)
            if expiry.get(key) == expires:
                del expiry[key]

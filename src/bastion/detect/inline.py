"""Inline signals: checks that must decide before a request is forwarded, on the hot path
(in-memory, O(1), no I/O).

D2 inline: a token family used from a second /24 while its first is still active (within
``concurrent`` seconds) is two places at once — the gateway marks the caller ``family_moved``
and the default policy denies critical models for that request; the streaming detector D2
raises the finding and the risk score. State is per gateway process and bounded (LRU); cluster
mode shares it through Redis (issue 7).
"""

from __future__ import annotations

from .observation import network_of
from .state import LRU


class FamilyTracker:
    def __init__(self, concurrent: float = 600.0, cap: int = 200_000) -> None:
        self.concurrent = concurrent
        self._seen: LRU[str, dict[str, float]] = LRU(cap)

    def moved(self, family: str, source_ip: str, now: float) -> bool:
        """Record this use; True when the family was used from another network within
        ``concurrent`` seconds."""
        network = network_of(source_ip)
        if not family or not network:
            return False
        uses = self._seen.get(family)
        if uses is None:
            self._seen.put(family, {network: now})
            return False
        moved = any(
            other != network and now - last <= self.concurrent for other, last in uses.items()
        )
        uses[network] = now
        if len(uses) > 8:
            del uses[min(uses, key=uses.__getitem__)]
        return moved

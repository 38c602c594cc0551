"""Risk scores: per principal and per org, 0 to 100, decaying with a half-life.

Findings add points (by severity, scaled by confidence); the score halves every half-life of
event time. The gateway reads the score on every request (two dict lookups and a power) and hands
``max(principal, org)`` to Cedar as ``context.risk``, so a policy can say ``context.risk >= 70``
forbids critical models. Written by the detection engine's worker thread, read by the event loop:
each entry is one immutable tuple swapped whole, so readers never see half an update.

In cluster mode the worker's engine is the only writer: it hands what changed (``drain``) to
``store/risk_feed.py``, and each gateway's board takes the worker's entries as they are (``put``).
"""

from __future__ import annotations

import math

MAX_SCORE = 100.0
KINDS = ("principal", "org")
Entry = tuple[str, str, float, float]  # kind, name, score, at (event time of the score)


class RiskBoard:
    def __init__(self, half_life: float = 3600.0, cap: int = 200_000) -> None:
        self.half_life = half_life
        self._cap = cap
        self._scores: dict[tuple[str, str], tuple[float, float]] = {}  # (kind, name) -> (score, at)
        self._changed: set[tuple[str, str]] = set()  # added to since the last ``drain``

    def _decayed(self, entry: tuple[float, float] | None, now: float) -> float:
        if entry is None:
            return 0.0
        score, at = entry
        return score * math.pow(0.5, max(now - at, 0.0) / self.half_life)

    def add(self, kind: str, name: str, points: float, now: float) -> float:
        if not name or points <= 0:
            return self.score(kind, name, now)
        key = (kind, name)
        score = min(MAX_SCORE, self._decayed(self._scores.get(key), now) + points)
        if key not in self._scores and len(self._scores) >= self._cap:
            self._prune(now)
        self._scores[key] = (score, now)
        self._changed.add(key)
        return score

    def put(self, kind: str, name: str, score: float, at: float) -> None:
        """Take another process's entry as it is (cluster mode: the worker's engine decides)."""
        key = (kind, name)
        if key not in self._scores and len(self._scores) >= self._cap:
            self._prune(at)
        self._scores[key] = (min(MAX_SCORE, max(0.0, score)), at)

    def drain(self) -> list[Entry]:
        """The entries added to since the last call (what the worker publishes)."""
        changed, self._changed = self._changed, set()
        return [(k, n, *self._scores[(k, n)]) for k, n in changed if (k, n) in self._scores]

    def entries(self) -> list[Entry]:
        return [(kind, name, *entry) for (kind, name), entry in list(self._scores.items())]

    def score(self, kind: str, name: str, now: float) -> float:
        return self._decayed(self._scores.get((kind, name)), now)

    def risk(self, principal: str, org: str, now: float) -> int:
        """What Cedar sees: the larger of the principal's and the org's score, as an integer."""
        return int(max(self.score("principal", principal, now), self.score("org", org, now)))

    def top(self, now: float, limit: int = 20) -> list[tuple[str, str, float]]:
        scored = [
            (kind, name, self._decayed(entry, now)) for (kind, name), entry in self._scores.items()
        ]
        return sorted((s for s in scored if s[2] >= 1.0), key=lambda s: -s[2])[:limit]

    def _prune(self, now: float) -> None:
        """Drop entries that decayed below one point (then the oldest, if still full)."""
        for key, entry in list(self._scores.items()):
            if self._decayed(entry, now) < 1.0:
                del self._scores[key]
                self._changed.discard(key)
        while len(self._scores) >= self._cap:
            oldest = min(self._scores, key=lambda k: self._scores[k][1])
            del self._scores[oldest]
            self._changed.discard(oldest)

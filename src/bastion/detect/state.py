"""Bounded per-entity state for detectors: every structure has a cap, evicts the least recently
used entry when full, and counts what it evicted, so memory stays bounded whatever the traffic
and nothing is dropped silently. All times are event times (seconds), never the wall clock.

Every structure can be dumped to and loaded from plain JSON-able data, so the engine can
snapshot detector state to the store and resume after a restart.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Stats:
    """Counters shared by a detector's structures (exposed by the engine)."""

    def __init__(self) -> None:
        self.evictions = 0


class LRU(Generic[K, V]):
    """A dict with a maximum size; the least recently touched entry goes first."""

    def __init__(self, cap: int, stats: Stats | None = None) -> None:
        self._cap = cap
        self._data: OrderedDict[K, V] = OrderedDict()
        self.stats = stats or Stats()

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self._cap:
            self._data.popitem(last=False)
            self.stats.evictions += 1

    def setdefault(self, key: K, factory: type[V] | Any) -> V:
        value = self.get(key)
        if value is None:
            value = factory()
            self.put(key, value)
        return value

    def pop(self, key: K) -> V | None:
        return self._data.pop(key, None)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def items(self) -> Iterator[tuple[K, V]]:
        return iter(list(self._data.items()))


class FirstSeen:
    """Per entity, the values seen and when last: "is this new for this principal?" with TTL."""

    def __init__(self, ttl: float, cap_entities: int, cap_values: int = 32) -> None:
        self.ttl = ttl
        self.cap_values = cap_values
        self.stats = Stats()
        self._seen: LRU[str, dict[str, float]] = LRU(cap_entities, self.stats)

    def known(self, entity: str) -> bool:
        """Whether anything was ever seen for ``entity`` (within the caps)."""
        return entity in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, entity: str, value: str, time: float) -> bool:
        """Record ``value`` for ``entity`` at ``time``; True if it was seen within the TTL."""
        values = self._seen.setdefault(entity, dict)
        last = values.get(value)
        fresh = last is not None and time - last <= self.ttl
        values[value] = max(time, last or time)
        if len(values) > self.cap_values:
            oldest = min(values, key=values.__getitem__)
            del values[oldest]
            self.stats.evictions += 1
        return fresh

    def novel(self, entity: str, values: Sequence[str], time: float) -> set[str]:
        """:meth:`seen` for several values of one entity at once (one lookup): the ones that
        were not seen within the TTL."""
        seen = self._seen.setdefault(entity, dict)
        ttl, fresh = self.ttl, set()
        for value in values:
            last = seen.get(value)
            if last is not None and time - last <= ttl:
                fresh.add(value)
            if last is None or time > last:
                seen[value] = time
        while len(seen) > self.cap_values:
            del seen[min(seen, key=seen.__getitem__)]
            self.stats.evictions += 1
        return {value for value in values if value not in fresh}

    def values(self, entity: str, since: float) -> dict[str, float]:
        values = self._seen.get(entity) or {}
        return {value: at for value, at in values.items() if at >= since}

    def dump(self) -> dict[str, Any]:
        return {entity: dict(values) for entity, values in self._seen.items()}

    def load(self, data: dict[str, Any]) -> None:
        for entity, values in data.items():
            self._seen.put(entity, {str(k): float(v) for k, v in values.items()})


class Table(LRU[str, V]):
    """Per entity, one small JSON-able record (a list of numbers and strings, or a string) that
    the detector updates in place: an :class:`LRU` that can be dumped and loaded. ``shape``
    says what a record must look like; :meth:`load` refuses data with any other record
    (a snapshot from another version) before loading anything."""

    def __init__(
        self, cap: int, stats: Stats | None = None, shape: Callable[[Any], bool] | None = None
    ) -> None:
        super().__init__(cap, stats)
        self._shape = shape

    def dump(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, list) else v for k, v in self.items()}

    def load(self, data: dict[str, Any]) -> None:
        shape = self._shape
        if shape is not None and not all(shape(record) for record in data.values()):
            raise ValueError("saved state holds a record of an unknown shape")
        for entity, record in data.items():
            self.put(str(entity), record)


class Activity:
    """Per entity, when its activity began, how many events since, and the last one: whether
    an entity has an established baseline (at least ``min_events`` over at least ``min_span``
    seconds) to judge a new event against. A gap longer than ``restart_after`` starts the
    baseline over: someone back from a long absence is learned afresh, not flagged for
    everything their old, expired baseline no longer holds."""

    def __init__(
        self, cap: int, min_events: int, min_span: float, restart_after: float = math.inf
    ) -> None:
        self.min_events = min_events
        self.min_span = min_span
        self.restart_after = restart_after
        self._table: Table[list[float]] = Table(cap)
        self.stats = self._table.stats

    def record(self, entity: str, time: float) -> bool:
        """Count one event; True if the baseline was established *before* it."""
        record = self._table.get(entity)
        if record is None or time - record[2] > self.restart_after:
            self._table.put(entity, [time, 1.0, time])
            return False
        first, count, last = record
        record[1] = count + 1
        record[2] = max(last, time)
        return count >= self.min_events and time - first >= self.min_span

    def of(self, entity: str) -> tuple[float, int] | None:
        """When ``entity``'s baseline began and how many events it holds, if known."""
        record = self._table.get(entity)
        return None if record is None else (record[0], int(record[1]))

    def __len__(self) -> int:
        return len(self._table)

    def dump(self) -> dict[str, Any]:
        return self._table.dump()

    def load(self, data: dict[str, Any]) -> None:
        for entity, record in data.items():
            first, count, last = (float(x) for x in record)
            self._table.put(str(entity), [first, count, last])


class Window:
    """Events of one entity within the last ``span`` seconds of event time: (time, value)."""

    def __init__(self, span: float, cap: int = 1024) -> None:
        self.span = span
        self.cap = cap
        self.items: deque[tuple[float, str, float]] = deque()  # (time, value, amount)

    def add(self, time: float, value: str = "", amount: float = 1.0) -> None:
        self.items.append((time, value, amount))
        while len(self.items) > self.cap:
            self.items.popleft()
        self.expire(time)

    def expire(self, now: float) -> None:
        edge = now - self.span
        while self.items and self.items[0][0] < edge:
            self.items.popleft()

    def count(self) -> int:
        return len(self.items)

    def total(self) -> float:
        return sum(amount for _, _, amount in self.items)

    def distinct(self) -> set[str]:
        return {value for _, value, _ in self.items}

    def dump(self) -> list[list[Any]]:
        return [list(item) for item in self.items]

    def load(self, data: list[list[Any]]) -> None:
        self.items = deque((float(t), str(v), float(a)) for t, v, a in data)


class Windows:
    """A :class:`Window` per entity, bounded in entities."""

    def __init__(self, span: float, cap_entities: int, cap_items: int = 1024) -> None:
        self.span = span
        self.cap_items = cap_items
        self.stats = Stats()
        self._windows: LRU[str, Window] = LRU(cap_entities, self.stats)

    def of(self, entity: str) -> Window:
        window = self._windows.get(entity)
        if window is None:
            window = Window(self.span, self.cap_items)
            self._windows.put(entity, window)
        return window

    def __len__(self) -> int:
        return len(self._windows)

    def dump(self) -> dict[str, Any]:
        return {entity: window.dump() for entity, window in self._windows.items()}

    def load(self, data: dict[str, Any]) -> None:
        for entity, items in data.items():
            self.of(entity).load(items)


class Ewma:
    """An exponentially weighted mean and variance with a half-life in event time (a robust
    enough baseline for volumes): ``update`` returns how many deviations above the mean the new
    value is, once the baseline has ``warmup`` samples."""

    def __init__(self, half_life: float, warmup: int = 5) -> None:
        self.half_life = half_life
        self.warmup = warmup
        self.mean = 0.0
        self.var = 0.0
        self.n = 0
        self.at = 0.0

    def score(self, value: float) -> float | None:
        if self.n < self.warmup:
            return None
        spread = max(math.sqrt(self.var), 0.25 * self.mean, 1.0)
        return (value - self.mean) / spread

    def update(self, value: float, time: float) -> float | None:
        z = self.score(value)
        alpha = 1.0 if self.n == 0 else 1.0 - 0.5 ** (max(time - self.at, 1.0) / self.half_life)
        alpha = max(alpha, 1.0 / (self.n + 1)) if self.n < self.warmup else alpha
        delta = value - self.mean
        self.mean += alpha * delta
        self.var = (1 - alpha) * (self.var + alpha * delta * delta)
        self.n += 1
        self.at = time
        return z

    def dump(self) -> list[float]:
        return [self.mean, self.var, float(self.n), self.at]

    def load(self, data: list[float]) -> None:
        self.mean, self.var, n, self.at = (float(x) for x in data)
        self.n = int(n)

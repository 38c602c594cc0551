"""Hourly volumes per entity, for the volume detections (D6 per principal, D7 per vendor org).

An :class:`HourlyVolume` keeps two views of one quantity (output tokens, or request counts):

- a **sliding hour**: twelve five-minute slots, so "the last hour" is known at every event in
  O(1), whichever minute a burst started at;
- a **baseline of active hours**: each calendar hour that saw any volume is, once it has ended,
  folded into an :class:`~bastion.detect.state.Ewma` (hours with nothing are not samples: the
  baseline says what a *working* hour looks like, so a quiet night does not make a normal
  morning look anomalous). An hour far above the baseline is clipped before it is learnt, so a
  burst that was flagged does not teach the baseline to accept the next one.

The record also remembers its first event (for warm-up), when it last alerted and how high (so a
detector raises a finding once per window and again only if it gets worse), and when it was last
checked (for detectors that throttle a costlier check). :class:`Volumes` holds records per key
in an LRU with eviction counters, and dumps and loads them as plain lists. :class:`Recent`
remembers which values (principals) were recently seen per key (org, network, model).
"""

from __future__ import annotations

from typing import Any

from ..state import LRU, Ewma, Stats

HOUR = 3600.0
SLOTS = 12
SLOT = HOUR / SLOTS
_FIELDS = 11  # numbers before the slots in a dumped record
NEVER = -1.0e18  # "long ago", and JSON-able (unlike -inf)


class HourlyVolume:
    __slots__ = (
        "alert_at",
        "alert_rank",
        "baseline",
        "checked",
        "first",
        "head",
        "hour",
        "hour_total",
        "slots",
    )

    def __init__(self, time: float, half_life: float, warmup: int) -> None:
        self.first = time
        self.head = -1  # absolute index of the newest five-minute slot
        self.slots = [0.0] * SLOTS
        self.hour = -1  # the calendar hour being summed for the baseline
        self.hour_total = 0.0
        self.baseline = Ewma(half_life, warmup)
        self.alert_rank = -1
        self.alert_at = 0.0
        self.checked = NEVER

    def add(self, time: float, amount: float, clip_z: float) -> None:
        """Count ``amount`` at ``time``; an hour that ended is learnt (clipped at ``clip_z``)."""
        index = int(time // SLOT)
        if index == self.head:  # the common case: the same five minutes as the last event
            self.slots[index % SLOTS] += amount
            self.hour_total += amount
            return
        hour = int(time // HOUR)
        if hour > self.hour:
            self._learn(clip_z)
            self.hour, self.hour_total = hour, 0.0
        if hour == self.hour:
            self.hour_total += amount
        self._advance(index)
        if index > self.head - SLOTS:  # an event older than the sliding hour is not in it
            self.slots[index % SLOTS] += amount

    def _learn(self, clip_z: float) -> None:
        total = self.hour_total
        if total <= 0:
            return
        z = self.baseline.score(total)
        if z is not None and z > clip_z:  # learn the flagged hour only up to the threshold
            total = self.baseline.mean + clip_z * (total - self.baseline.mean) / z
        self.baseline.update(total, (self.hour + 1) * HOUR)

    def _advance(self, index: int) -> None:
        if index <= self.head:
            return
        if self.head < 0 or index - self.head >= SLOTS:
            self.slots = [0.0] * SLOTS
        else:
            for i in range(self.head + 1, index + 1):
                self.slots[i % SLOTS] = 0.0
        self.head = index

    def total(self, time: float) -> float:
        """The volume of the last hour (the current five-minute slot and the eleven before)."""
        index = int(time // SLOT)
        if index > self.head:
            self._advance(index)
        return sum(self.slots)

    def warm(self, time: float, min_history: float) -> bool:
        """Whether the baseline has its warm-up samples and the entity is older than
        ``min_history`` seconds (a first day is never judged against a baseline)."""
        return self.baseline.n >= self.baseline.warmup and time - self.first >= min_history

    def score(self, value: float, time: float, min_history: float) -> float | None:
        """How many deviations above the baseline ``value`` is; None while warming up."""
        if not self.warm(time, min_history):
            return None
        return self.baseline.score(value)

    def alert(self, rank: int, time: float, window: float) -> bool:
        """Whether to raise a finding of ``rank`` now: the first in ``window``, or a worse one."""
        if rank > self.alert_rank or time - self.alert_at >= window:
            self.alert_rank, self.alert_at = rank, time
            return True
        return False

    def dump(self) -> list[float]:
        b = self.baseline
        head = [self.first, self.head, self.hour, self.hour_total, self.alert_rank, self.alert_at]
        return [*head, self.checked, b.mean, b.var, float(b.n), b.at, *self.slots]

    @classmethod
    def restore(cls, data: Any, half_life: float, warmup: int) -> HourlyVolume | None:
        """A record from :meth:`dump`'s output; None if ``data`` is not one."""
        if not isinstance(data, list) or len(data) != _FIELDS + SLOTS:
            return None
        if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in data):
            return None
        first, head, hour, hour_total, rank, alert_at, checked, *rest = data
        volume = cls(float(first), half_life, warmup)
        volume.head, volume.hour, volume.hour_total = int(head), int(hour), float(hour_total)
        volume.alert_rank, volume.alert_at = int(rank), float(alert_at)
        volume.checked = float(checked)
        volume.baseline.load([float(x) for x in rest[:4]])
        volume.slots = [float(x) for x in rest[4:]]
        return volume


class Volumes:
    """An :class:`HourlyVolume` per key, at most ``cap`` keys (least recently used evicted)."""

    def __init__(self, cap: int, half_life: float, warmup: int) -> None:
        self.half_life = half_life
        self.warmup = warmup
        self.stats = Stats()
        self._lru: LRU[str, HourlyVolume] = LRU(cap, self.stats)
        self.skipped = 0  # malformed records ignored by load

    def of(self, key: str, time: float) -> HourlyVolume:
        volume = self._lru.get(key)
        if volume is None:
            volume = HourlyVolume(time, self.half_life, self.warmup)
            self._lru.put(key, volume)
        return volume

    def get(self, key: str) -> HourlyVolume | None:
        return self._lru.get(key)

    def __len__(self) -> int:
        return len(self._lru)

    def dump(self) -> dict[str, list[float]]:
        return {key: volume.dump() for key, volume in self._lru.items()}

    def load(self, data: dict[str, Any]) -> None:
        for key, raw in data.items():
            volume = HourlyVolume.restore(raw, self.half_life, self.warmup)
            if volume is None:
                self.skipped += 1
            else:
                self._lru.put(str(key), volume)


class Recent:
    """Per key, the last ``cap_values`` distinct values to show up and when each last did (for
    "which principals of this org were active in the last hour"). Kept in recency order, so
    touching and evicting are O(1) and reading recent ones stops at the first old one."""

    def __init__(self, cap: int, cap_values: int) -> None:
        self.cap_values = cap_values
        self.stats = Stats()
        self._lru: LRU[str, dict[str, float]] = LRU(cap, self.stats)

    def touch(self, key: str, value: str, time: float) -> None:
        values = self._lru.get(key)
        if values is None:
            values = {}
            self._lru.put(key, values)
        last = values.pop(value, time)
        values[value] = time if time > last else last
        if len(values) > self.cap_values:
            del values[next(iter(values))]
            self.stats.evictions += 1

    def since(self, key: str, time: float) -> list[str]:
        """The values seen at or after ``time``, most recent first."""
        found = []
        for value, at in reversed((self._lru.get(key) or {}).items()):
            if at < time:
                break
            found.append(value)
        return found

    def __len__(self) -> int:
        return len(self._lru)

    def dump(self) -> dict[str, dict[str, float]]:
        return {key: dict(values) for key, values in self._lru.items()}

    def load(self, data: dict[str, Any]) -> None:
        for key, values in data.items():
            if isinstance(values, dict):
                self._lru.put(str(key), {str(v): float(at) for v, at in values.items()})

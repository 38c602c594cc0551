"""Sigma correlations as streaming windows per group, in event time, with bounded state.

``gt``/``gte`` conditions use a sliding window: every matching event adds to its group, events
older than ``timespan`` fall out, and the rule fires as soon as the group reaches the threshold
(at the event that crosses it, and again on each event while it stays there; the engine merges
those into one finding). State per group stays at most ``threshold + 1`` entries however busy the
group is: once the newest entries alone meet the threshold, older ones can never change the
outcome, since they leave the window first.

``lt``/``lte``/``eq``/``neq`` can only be judged once a window is over, so they use tumbling
windows: a group's window opens at its first matching event and is judged when event time
passes its end (at the next event of any kind). Only groups with at least one matching event
have a window: "fewer than N" means "some, but fewer than N".

Groups are held in an LRU per rule (at most ``cap_groups``); evictions are counted.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

from ..detector import Context
from ..findings import Draft
from ..observation import Observation
from ..state import LRU, Stats
from .fields import as_text, is_empty
from .rules import CorrelationRule

KEEP = 32  # entries a group keeps beyond need, so explanations can say more than the threshold
MAX_ITEMS = 20_000  # hard cap per group (value_sum with many small amounts); evictions counted
EVIDENCE = 5
CONFIDENCE = 0.8
_SYMBOLS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "eq": "=", "neq": "!="}
_ENTITY_TYPES = {
    "principal": "principal",
    "actor": "principal",
    "org": "org",
    "family": "family",
    "jkt": "key",
    "network": "network",
    "compartment": "compartment",
}


class Group:
    """One group's window: its start (tumbling), timed entries (sliding event_count and
    value_sum), distinct values with their latest time (value_count), running count and total,
    and the ids of its latest events."""

    __slots__ = ("count", "evidence", "items", "start", "total", "values")

    def __init__(self, start: float) -> None:
        self.start = start
        self.count = 0
        self.total = 0.0
        self.items: deque[tuple[float, float]] = deque()
        self.values: OrderedDict[str, float] = OrderedDict()
        self.evidence: deque[str] = deque(maxlen=EVIDENCE)

    def dump(self) -> list[Any]:
        return [
            self.start,
            self.count,
            self.total,
            [list(item) for item in self.items],
            [[value, at] for value, at in self.values.items()],
            list(self.evidence),
        ]

    @classmethod
    def load(cls, data: list[Any]) -> Group:
        start, count, total, items, values, evidence = data
        group = cls(float(start))
        group.count = int(count)
        group.total = float(total)
        group.items.extend((float(t), float(a)) for t, a in items)
        group.values.update((str(v), float(t)) for v, t in values)
        group.evidence.extend(str(e) for e in evidence)
        return group


class Correlation:
    """The state of one correlation rule (a :class:`~bastion.detect.detector.Structure`)."""

    def __init__(self, rule: CorrelationRule, cap_groups: int = 20_000) -> None:
        self.rule = rule
        self.stats = Stats()
        self._cap = cap_groups
        self._groups: LRU[tuple[str, ...], Group] = LRU(cap_groups, self.stats)
        self._closing: deque[tuple[float, tuple[str, ...]]] = deque()  # tumbling: (end, group)
        self._keep = max(int(rule.threshold) + 1, KEEP)

    def __len__(self) -> int:
        return len(self._groups)

    # -- events ----------------------------------------------------------------------------------

    def add(self, obs: Observation, ctx: Context) -> Draft | None:
        """Count one event that matched a rule this correlation refers to."""
        key = self._key(obs, ctx)
        if key is None:
            return None
        rule = self.rule
        amount = 0.0
        value = ""
        if rule.field is not None:
            raw = rule.field.get(obs, ctx)
            if is_empty(raw):
                if rule.kind == "value_count":
                    return None  # a missing value is not a distinct value
            elif rule.kind == "value_sum":
                amount = float(raw)  # type: ignore[arg-type]  # number fields only (checked)
            else:
                value = as_text(raw)
        if rule.sliding:
            return self._slide(key, obs, amount, value, ctx)
        self._tumble(key, obs, amount, value)
        return None

    def _key(self, obs: Observation, ctx: Context) -> tuple[str, ...] | None:
        values = []
        for group_field in self.rule.group_by:
            raw = group_field.get(obs, ctx)
            if is_empty(raw):
                return None  # events without the group's fields belong to no group
            values.append(as_text(raw))
        return tuple(values)

    def _slide(
        self, key: tuple[str, ...], obs: Observation, amount: float, value: str, ctx: Context
    ) -> Draft | None:
        rule = self.rule
        group = self._groups.get(key)
        if group is None:
            group = Group(obs.time)
            self._groups.put(key, group)
        group.evidence.append(obs.id)
        edge = obs.time - rule.span
        if rule.kind == "value_count":
            measure = float(self._distinct(group, value, obs.time, edge))
        else:
            measure = self._timed(group, 1.0 if rule.kind == "event_count" else amount, obs, edge)
        if not rule.holds(measure):
            return None
        return self._draft(key, group, measure, "at least ", ctx)

    def _distinct(self, group: Group, value: str, time: float, edge: float) -> int:
        values = group.values
        values[value] = max(time, values.get(value, time))
        values.move_to_end(value)
        while values and next(iter(values.values())) < edge:
            values.popitem(last=False)
        while len(values) > self._keep:
            values.popitem(last=False)  # the newest ones already meet the threshold
        return len(values)

    def _timed(self, group: Group, amount: float, obs: Observation, edge: float) -> float:
        items = group.items
        if amount:
            items.append((obs.time, amount))
            group.total += amount
        while items and items[0][0] < edge:
            group.total -= items.popleft()[1]
        rule = self.rule
        while len(items) > KEEP and rule.holds(group.total - items[0][1]):
            group.total -= items.popleft()[1]  # the rest alone meet the threshold
        while len(items) > MAX_ITEMS:
            group.total -= items.popleft()[1]
            self.stats.evictions += 1
        if not items:
            group.total = 0.0  # no float drift left behind
        return group.total

    def _tumble(self, key: tuple[str, ...], obs: Observation, amount: float, value: str) -> None:
        group = self._groups.get(key)
        if group is None or obs.time > group.start + self.rule.span:
            group = Group(obs.time)
            self._groups.put(key, group)
            self._closing.append((obs.time + self.rule.span, key))
            while len(self._closing) > 2 * self._cap:  # only if groups churn very fast
                end, dropped = self._closing.popleft()
                oldest = self._groups.get(dropped)
                if oldest is not None and oldest.start + self.rule.span == end:
                    self._groups.pop(dropped)
                    self.stats.evictions += 1
        group.count += 1
        group.total += amount
        if value and len(group.values) <= self._keep:
            group.values[value] = obs.time  # past the threshold + 1 the outcome is known
        group.evidence.append(obs.id)

    def close(self, now: float, ctx: Context) -> list[Draft]:
        """Judge the tumbling windows that ended before ``now`` (event time)."""
        drafts: list[Draft] = []
        closing = self._closing
        while closing and closing[0][0] < now:
            end, key = closing.popleft()
            group = self._groups.get(key)
            if group is None or group.start + self.rule.span != end:
                continue  # evicted, or a newer window of the same group
            self._groups.pop(key)
            measure = self._measure(group)
            if self.rule.holds(measure):
                drafts.append(self._draft(key, group, measure, "", ctx))
        return drafts

    def _measure(self, group: Group) -> float:
        kind = self.rule.kind
        if kind == "event_count":
            return float(group.count)
        if kind == "value_count":
            return float(len(group.values))
        return group.total

    # -- findings --------------------------------------------------------------------------------

    def _draft(
        self, key: tuple[str, ...], group: Group, measure: float, qualifier: str, ctx: Context
    ) -> Draft:
        rule = self.rule
        names = [group_field.name for group_field in rule.group_by]
        by = dict(zip(names, key, strict=True))
        if len(names) == 1:
            entity_type, entity = _ENTITY_TYPES.get(names[0], names[0]), key[0]
        elif names:
            entity_type, entity = "+".join(names), ", ".join(f"{n}={v}" for n, v in by.items())
        else:
            entity_type, entity = "rule", rule.meta.key
        principal = by.get("principal", "")
        return Draft(
            detection=rule.meta.detection,
            severity=rule.meta.severity,
            confidence=CONFIDENCE,
            entity_type=entity_type,
            entity=entity,
            explanation=self._explain(by, measure, qualifier),
            evidence=tuple(group.evidence),
            techniques=rule.meta.techniques,
            principal=principal,
            org=by.get("org") or (ctx.org_of(principal) if principal else ""),
        )

    def _explain(self, by: dict[str, str], measure: float, qualifier: str) -> str:
        rule = self.rule
        who = ", ".join(f"{name} {value}" for name, value in by.items()) or "all events"
        amount = _number(measure)
        if rule.kind == "event_count":
            what = f"{qualifier}{amount} matching events"
        elif rule.kind == "value_count":
            what = f"{qualifier}{amount} distinct {rule.field.name if rule.field else ''} values"
        else:
            what = f"{rule.field.name if rule.field else ''} adding up to {qualifier}{amount}"
        span = _duration(rule.span)
        limit = _number(rule.threshold)
        return (
            f"{rule.meta.title}: {what} for {who} within {span} (rule: {_SYMBOLS[rule.op]} {limit})"
        )

    # -- persistence -----------------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        return {"groups": [[list(key), group.dump()] for key, group in self._groups.items()]}

    def load(self, data: dict[str, Any]) -> None:
        arity = len(self.rule.group_by)
        for key, dumped in data.get("groups", []):
            if len(key) == arity:  # a rule whose group-by changed starts afresh
                self._groups.put(tuple(str(part) for part in key), Group.load(dumped))
        if not self.rule.sliding:
            ends = sorted((g.start + self.rule.span, k) for k, g in self._groups.items())
            self._closing = deque(ends)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3g}"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{_number(seconds)}s"

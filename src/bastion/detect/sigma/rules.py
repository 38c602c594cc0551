"""What Bastion keeps of a parsed Sigma rule: its detection id, severity and techniques, the
compiled predicate of a detection rule, and the window and threshold of a correlation rule."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from sigma.correlations import (
    SigmaCorrelationCondition,
    SigmaCorrelationConditionOperator,
    SigmaCorrelationRule,
    SigmaCorrelationType,
)
from sigma.rule import SigmaLevel, SigmaRule, SigmaRuleBase

from ..findings import Severity
from .errors import RuleProblem
from .fields import Field, Kind, field
from .match import Predicate, compile_rule

MAX_TIMESPAN = 7 * 86400.0  # seconds
MAX_COUNT = 10_000  # event_count / value_count thresholds
MAX_SUM = 1e15
KINDS = ("event_count", "value_count", "value_sum")
_ID = re.compile(r"[a-z0-9._-]{1,64}")
_ATTACK = re.compile(r"t\d{4}(\.\d{3})?")
_ATLAS = re.compile(r"(aml\.)?t\d{4}(\.\d{3})?")
_SEVERITY = {
    SigmaLevel.INFORMATIONAL: Severity.LOW,
    SigmaLevel.LOW: Severity.LOW,
    SigmaLevel.MEDIUM: Severity.MEDIUM,
    SigmaLevel.HIGH: Severity.HIGH,
    SigmaLevel.CRITICAL: Severity.CRITICAL,
}
_OPS = {
    SigmaCorrelationConditionOperator.GT: "gt",
    SigmaCorrelationConditionOperator.GTE: "gte",
    SigmaCorrelationConditionOperator.LT: "lt",
    SigmaCorrelationConditionOperator.LTE: "lte",
    SigmaCorrelationConditionOperator.EQ: "eq",
    SigmaCorrelationConditionOperator.NEQ: "neq",
}


@dataclass(frozen=True, slots=True)
class Meta:
    """What every finding of a rule carries."""

    detection: str  # "S:<name or id>"
    title: str
    severity: Severity
    techniques: tuple[str, ...]

    @property
    def key(self) -> str:
        return self.detection[2:]


@dataclass(frozen=True, slots=True)
class DetectionRule:
    meta: Meta
    predicate: Predicate
    emits: bool  # False when only correlations use it (Sigma's ``generate: false``)


@dataclass(frozen=True, slots=True)
class CorrelationRule:
    meta: Meta
    kind: str  # event_count | value_count | value_sum
    rules: tuple[str, ...]  # keys of the detection rules it counts
    span: float  # seconds
    group_by: tuple[Field, ...]
    field: Field | None  # value_count / value_sum
    op: str  # gt | gte | lt | lte | eq | neq
    threshold: float

    @property
    def sliding(self) -> bool:
        """``gt``/``gte`` fire as soon as the sliding window reaches the threshold; the others
        can only be judged once a window is over."""
        return self.op in ("gt", "gte")

    def holds(self, measure: float) -> bool:
        limit = self.threshold
        op = self.op
        if op == "gte":
            return measure >= limit
        if op == "gt":
            return measure > limit
        if op == "lte":
            return measure <= limit
        if op == "lt":
            return measure < limit
        if op == "eq":
            return measure == limit
        return measure != limit


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Every rule loaded from ``detection.rules``, compiled; detection rules before the
    correlations that refer to them."""

    detections: tuple[DetectionRule, ...] = ()
    correlations: tuple[CorrelationRule, ...] = ()

    def __len__(self) -> int:
        return len(self.detections) + len(self.correlations)


def meta_of(rule: SigmaRuleBase) -> Meta:
    """Detection id from the rule's ``name`` (else its ``id``), severity from ``level``,
    ATT&CK / ATLAS ids from ``tags`` (``attack.t1078.004``, ``atlas.aml.t0024.002``)."""
    key = rule.name if rule.name else (str(rule.id) if rule.id else "")
    if not key:
        raise RuleProblem(
            "a rule needs a `name` (or an `id`): it becomes the detection id S:<name>", "title"
        )
    if not _ID.fullmatch(key):
        raise RuleProblem(
            f"name {key[:64]!r} cannot be a detection id: use at most 64 lowercase letters, "
            "digits, '.', '_' or '-'",
            "name",
        )
    severity = _SEVERITY.get(rule.level, Severity.MEDIUM) if rule.level else Severity.MEDIUM
    return Meta(f"S:{key}", rule.title[:120], severity, techniques(rule))


def techniques(rule: SigmaRuleBase) -> tuple[str, ...]:
    found: list[str] = []
    for tag in rule.tags:
        name = tag.name.lower()
        if tag.namespace == "attack" and _ATTACK.fullmatch(name):
            found.append(name.upper())
        elif tag.namespace == "atlas" and _ATLAS.fullmatch(name):
            found.append("AML." + name.removeprefix("aml.").upper())
    return tuple(dict.fromkeys(found))


def detection_rule(rule: SigmaRule, emits: bool) -> DetectionRule:
    logsource = rule.logsource
    if logsource.product not in (None, "bastion") or logsource.category or logsource.service:
        raise RuleProblem(
            "logsource must be `product: bastion` (choose events with the `name` field)",
            "logsource",
        )
    return DetectionRule(meta_of(rule), compile_rule(rule), emits)


def correlation_rule(rule: SigmaCorrelationRule, targets: dict[str, str]) -> CorrelationRule:
    """``targets`` maps every detection rule's name and id to its key."""
    kind = rule.type.name.lower() if isinstance(rule.type, SigmaCorrelationType) else ""
    if kind not in KINDS:
        raise RuleProblem(
            f"correlation type {kind!r} is not supported (use {', '.join(KINDS)})", "type"
        )
    if len(rule.aliases):
        raise RuleProblem("correlation aliases are not supported: fields are Bastion's", "aliases")
    rules = []
    for reference in rule.rules or ():
        target = targets.get(reference.reference)
        if target is None:
            raise RuleProblem(
                f"correlation refers to unknown rule {reference.reference[:64]!r} (rules are "
                "referred to by name or id, and must be detection rules, not correlations)",
                "rules",
            )
        rules.append(target)
    span = float(rule.timespan.seconds)
    if span > MAX_TIMESPAN:
        raise RuleProblem("timespan is longer than 7 days (the most Bastion keeps)", "timespan")
    group_by = tuple(_group_field(name) for name in rule.group_by or ())
    condition = rule.condition
    if not isinstance(condition, SigmaCorrelationCondition):
        raise RuleProblem("condition must be a mapping such as {gte: 20}", "condition")
    target_field = _condition_field(kind, condition)
    threshold = _threshold(kind, condition)
    return CorrelationRule(
        meta_of(rule),
        kind,
        tuple(dict.fromkeys(rules)),
        span,
        group_by,
        target_field,
        _OPS[condition.op],
        threshold,
    )


def _group_field(name: str) -> Field:
    try:
        found = field(name)
    except RuleProblem as exc:
        raise RuleProblem(exc.message, "group-by") from None
    if found.kind is Kind.LIST:
        raise RuleProblem(f"group-by on a list field ({name}) is not supported", "group-by")
    return found


def _condition_field(kind: str, condition: SigmaCorrelationCondition) -> Field | None:
    name = condition.fieldref
    if kind == "event_count":
        if name:
            raise RuleProblem("event_count counts events; its condition takes no field", "field")
        return None
    if not isinstance(name, str):
        raise RuleProblem(f"{kind} needs exactly one field in its condition", "condition")
    try:
        found = field(name)
    except RuleProblem as exc:
        raise RuleProblem(exc.message, "condition") from None
    if kind == "value_sum" and found.kind is not Kind.NUMBER:
        raise RuleProblem(f"value_sum needs a number field; {name} is {found.kind}", "field")
    if kind == "value_count" and found.kind is Kind.LIST:
        raise RuleProblem(f"value_count on a list field ({name}) is not supported", "field")
    return found


def _threshold(kind: str, condition: SigmaCorrelationCondition) -> float:
    count = condition.count
    if isinstance(count, bool) or not math.isfinite(count) or count < 0:
        raise RuleProblem("the condition's threshold must be a number, 0 or more", "condition")
    if kind == "value_sum":
        if count > MAX_SUM:
            raise RuleProblem(f"the threshold is above {MAX_SUM:.0e}", "condition")
        return float(count)
    if not float(count).is_integer():
        raise RuleProblem(f"{kind} thresholds are whole numbers", "condition")
    if count > MAX_COUNT:
        raise RuleProblem(
            f"{kind} thresholds above {MAX_COUNT} are not supported (state per group is kept "
            "up to the threshold); use a shorter timespan or value_sum",
            "condition",
        )
    return float(count)

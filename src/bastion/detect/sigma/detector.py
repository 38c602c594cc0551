"""All of the operator's Sigma rules as one detector in the pipeline (detection id ``S``).

Per event: tumbling correlation windows that event time has passed are judged, every detection
rule's predicate runs once, a rule that matched raises a finding (unless only correlations use
it, Sigma's ``generate: false``), and each correlation referring to a rule that matched counts the
event once. Findings are ``S:<rule name>``; severity from the rule's ``level``, techniques from
its ``attack.*`` / ``atlas.*`` tags.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from ..detector import Context, StatefulDetector, Structure
from ..findings import Draft
from ..observation import Observation
from .correlate import CONFIDENCE, Correlation
from .rules import DetectionRule, RuleSet


class SigmaDetector(StatefulDetector):
    id: ClassVar[str] = "S"
    title: ClassVar[str] = "Operator rules (Sigma)"
    techniques: ClassVar[tuple[str, ...]] = ()  # per rule, on each finding
    window: ClassVar[float] = 3600.0

    def __init__(self, rules: RuleSet, cap_groups: int = 20_000) -> None:
        self.rules = rules
        self._detections = rules.detections
        self._correlations = [Correlation(rule, cap_groups) for rule in rules.correlations]
        self._tumbling = [c for c in self._correlations if not c.rule.sliding]
        index = {rule.meta.key: position for position, rule in enumerate(rules.detections)}
        self._feeds = [
            (tuple(index[key] for key in correlation.rule.rules), correlation)
            for correlation in self._correlations
        ]

    def observe(self, obs: Observation, ctx: Context) -> list[Draft]:
        drafts: list[Draft] = []
        for correlation in self._tumbling:
            drafts.extend(correlation.close(obs.time, ctx))
        matched = [rule.predicate(obs, ctx) for rule in self._detections]
        for rule, hit in zip(self._detections, matched, strict=True):
            if hit and rule.emits:
                drafts.append(_matched(rule, obs, ctx))
        for positions, correlation in self._feeds:
            if any(matched[position] for position in positions):
                draft = correlation.add(obs, ctx)
                if draft is not None:
                    drafts.append(draft)
        return drafts

    def structures(self) -> Mapping[str, Structure]:
        return {correlation.rule.meta.key: correlation for correlation in self._correlations}


def _matched(rule: DetectionRule, obs: Observation, ctx: Context) -> Draft:
    """A detection rule matched one event: the finding is about its principal (or, for admin
    events, the actor), else its org or network."""
    principal = obs.principal or obs.actor
    if principal:
        entity_type, entity = "principal", principal
    elif obs.org:
        entity_type, entity = "org", obs.org
    elif obs.network:
        entity_type, entity = "network", obs.network
    else:
        entity_type, entity = "rule", rule.meta.key
    where = "".join(
        f" {label} {value}"
        for label, value in (("on model", obs.model), ("from", obs.network))
        if value
    )
    return Draft(
        detection=rule.meta.detection,
        severity=rule.meta.severity,
        confidence=CONFIDENCE,
        entity_type=entity_type,
        entity=entity,
        explanation=f"{rule.meta.title}: {obs.name} by {principal or 'no principal'}{where}",
        evidence=(obs.id,) if obs.id else (),
        techniques=rule.meta.techniques,
        principal=principal,
        org=obs.org or (ctx.org_of(principal) if principal else ""),
    )

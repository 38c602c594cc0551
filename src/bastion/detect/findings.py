"""Findings: what a detector concluded, about which entity, on what evidence.

A detector returns :class:`Draft` values; the engine turns them into :class:`Finding` records,
deduplicated per (detection, entity) within the detection's window: the same pattern seen again
bumps ``count``, extends ``last_seen`` and adds evidence (bounded), instead of a new finding each
time. Explanations are written for a human ("token family fam_3k9 used from 203.0.113.0/24 and
198.51.100.0/24 within 40 s") and never contain request content or credentials.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

MAX_EVIDENCE = 20


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return tuple(Severity).index(self)

    @property
    def risk_points(self) -> int:
        """How much a finding of this severity adds to its entity's risk score (0-100)."""
        return (10, 25, 50, 80)[self.rank]


@dataclass(frozen=True, slots=True)
class Draft:
    """A detector's raw result for one event."""

    detection: str  # "D2"
    severity: Severity
    confidence: float  # 0..1
    entity_type: str  # principal | org | family | key | network | compartment
    entity: str
    explanation: str
    evidence: tuple[str, ...]  # audit event ids
    techniques: tuple[str, ...] = ()
    principal: str = ""  # whose risk score it raises ("" = none)
    org: str = ""


@dataclass(frozen=True, slots=True)
class Finding:
    id: str
    detection: str
    severity: Severity
    confidence: float
    techniques: tuple[str, ...]
    entity_type: str
    entity: str
    principal: str
    org: str
    explanation: str
    evidence: tuple[str, ...]
    first_seen: float
    last_seen: float
    count: int = 1
    status: str = "open"  # open | learning | suppressed
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.detection, self.entity_type, self.entity)

    @classmethod
    def from_draft(cls, draft: Draft, time: float, status: str = "open") -> Finding:
        return cls(
            id="fd_" + secrets.token_hex(8),
            detection=draft.detection,
            severity=draft.severity,
            confidence=round(draft.confidence, 3),
            techniques=draft.techniques,
            entity_type=draft.entity_type,
            entity=draft.entity,
            principal=draft.principal,
            org=draft.org,
            explanation=draft.explanation,
            evidence=draft.evidence[:MAX_EVIDENCE],
            first_seen=time,
            last_seen=time,
            status=status,
        )

    def merged(self, draft: Draft, time: float) -> Finding:
        """The same finding seen again: one more occurrence, the stronger severity and
        confidence, the latest explanation, evidence kept up to :data:`MAX_EVIDENCE` ids."""
        evidence = tuple(dict.fromkeys((*self.evidence, *draft.evidence)))[:MAX_EVIDENCE]
        severity = max(self.severity, draft.severity, key=lambda s: s.rank)
        return replace(
            self,
            severity=severity,
            confidence=max(self.confidence, round(draft.confidence, 3)),
            explanation=draft.explanation,
            evidence=evidence,
            last_seen=max(self.last_seen, time),
            count=self.count + 1,
        )

"""D10: offensive-cyber prompt content, and bursts of refusals, on a cyber-capable model.

Prompts are never stored: the gateway's content classifier (``detect/content.py``) puts a label
and a score on each request to the compartments it watches, and the upstream's refusals are
noted (Anthropic ``stop_reason: refusal``; OpenAI ``finish_reason: content_filter`` or a
``refusal`` message). Per principal, on ``restricted`` and ``critical`` compartments:

- a request labelled with one of ``detection.content.labels`` (the shipped offensive-cyber and
  jailbreak categories) at a score of at least ``detection.content.threshold``: **medium**;
- ``burst`` (5) such requests within ``span`` (10 min): **high**;
- ``refusals`` (3) upstream refusals within ``span``: **medium** — someone pushing a model toward
  what it will not do.

False-positive traps it stays quiet on: a mention below the threshold ("what is ransomware?"
scores 0.35), labels outside the list (a plug-in classifier's ``benign``), any label on ``open``
or ``internal`` compartments, and a single or second refusal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from bastion.config.models import Level

from ..detector import Context, StatefulDetector, Structure
from ..findings import Draft, Severity
from ..observation import Observation
from ..state import Window, Windows

CYBER_CAPABLE = frozenset({Level.RESTRICTED, Level.CRITICAL})
_SEP = "\t"


class ContentSignals(StatefulDetector):
    id: ClassVar[str] = "D10"
    title: ClassVar[str] = "Offensive-cyber content or refusal bursts on a cyber-capable model"
    techniques: ClassVar[tuple[str, ...]] = ("AML.T0051", "AML.T0054", "AML.T0068")
    window: ClassVar[float] = 3600.0

    def __init__(
        self,
        *,
        span: float = 600.0,
        burst: int = 5,
        refusals: int = 3,
        cap_principals: int = 20_000,
        cap_items: int = 64,
    ) -> None:
        self.burst = burst
        self.refusals_needed = refusals
        self.labelled = Windows(span, cap_principals, cap_items)
        self.refusals = Windows(span, cap_principals, cap_items)

    def structures(self) -> Mapping[str, Structure]:
        return {"labelled": self.labelled, "refusals": self.refusals}

    def observe(self, obs: Observation, ctx: Context) -> list[Draft]:
        if not obs.is_request or not obs.principal or not obs.compartment:
            return []
        level = ctx.level(obs.compartment)
        if level not in CYBER_CAPABLE:
            return []
        drafts = []
        options = ctx.config.detection.content
        if obs.content_label in options.labels and obs.content_score >= options.threshold:
            drafts.append(self._labelled(obs, ctx, str(level)))
        if obs.refused:
            refused = self._refused(obs, ctx, str(level))
            if refused is not None:
                drafts.append(refused)
        return drafts

    def _labelled(self, obs: Observation, ctx: Context, level: str) -> Draft:
        window = self.labelled.of(obs.principal)
        window.add(obs.time, obs.content_label + _SEP + obs.id)
        count = window.count()
        minutes = self.labelled.span / 60
        if count >= self.burst:
            labels = ", ".join(sorted({value.split(_SEP)[0] for _, value, _ in window.items}))
            text = (
                f"principal {obs.principal} sent {count} requests labelled {labels} to "
                f"{level} models within {minutes:g} min (last: {obs.model})"
            )
            return self._draft(obs, ctx, window, Severity.HIGH, 0.85, text)
        text = (
            f"principal {obs.principal} sent a request labelled {obs.content_label} "
            f"(score {obs.content_score:.2f}) to {level} model {obs.model}"
        )
        return self._draft(obs, ctx, window, Severity.MEDIUM, 0.5 + obs.content_score / 4, text)

    def _refused(self, obs: Observation, ctx: Context, level: str) -> Draft | None:
        window = self.refusals.of(obs.principal)
        window.add(obs.time, "refused" + _SEP + obs.id)
        count = window.count()
        if count < self.refusals_needed:
            return None
        text = (
            f"{level} models refused {count} requests of principal {obs.principal} within "
            f"{self.refusals.span / 60:g} min (last: {obs.model})"
        )
        return self._draft(obs, ctx, window, Severity.MEDIUM, 0.6, text)

    def _draft(
        self,
        obs: Observation,
        ctx: Context,
        window: Window,
        severity: Severity,
        confidence: float,
        explanation: str,
    ) -> Draft:
        return Draft(
            detection=self.id,
            severity=severity,
            confidence=confidence,
            entity_type="principal",
            entity=obs.principal,
            explanation=explanation,
            evidence=tuple(value.rsplit(_SEP, 1)[-1] for _, value, _ in window.items),
            techniques=self.techniques,
            principal=obs.principal,
            org=obs.org or ctx.org_of(obs.principal),
        )

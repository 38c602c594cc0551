"""D6: output volume — a principal receiving far more model output than it usually does, or
more than a sensitive compartment should ever give one principal in an hour (T5: harvesting,
extraction).

Counted from ``request.decided`` events of allowed calls (``tokens_out``: what the model sent
back, streamed or not, including streams that were cut), per principal over a sliding hour:

- **baseline**: the hour is at least ``z`` (4) deviations above the principal's baseline of
  active hours (an EWMA with a ``half_life`` of 7 days) *and* at least ``min_tokens`` (50,000):
  **medium**, **high** at twice both. No baseline judgement during warm-up: the first
  ``min_history`` (a day) of a principal, and until ``warmup_hours`` (6) active hours are
  learnt — a new hire's first day is never compared with nothing.
- **ceiling**: more than the compartment level's ceiling in one compartment in the last hour
  (``critical``: 200,000, ``restricted``: 1,000,000 by default): **high**, whatever the
  baseline. A compartment whose per-principal ``tokens_per_hour`` quota is larger raises its
  ceiling to the quota (the operator sized that use). A principal whose own established
  baseline in that compartment is already at ``established_share`` (half) of the ceiling — a
  batch service that is steadily high — is judged on its baseline instead.

A finding is raised once per hour per principal, again only if it gets worse.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from bastion.config.models import Level

from ..detector import Context, StatefulDetector, Structure
from ..findings import Draft, Severity
from ..observation import Observation
from .volume import HOUR, HourlyVolume, Volumes

DAY = 86_400.0
CEILINGS: Mapping[Level, int] = {Level.CRITICAL: 200_000, Level.RESTRICTED: 1_000_000}


class OutputVolume(StatefulDetector):
    id: ClassVar[str] = "D6"
    title: ClassVar[str] = "Output volume above the principal's baseline or a compartment ceiling"
    techniques: ClassVar[tuple[str, ...]] = (
        "T1030",
        "T1567",
        "T1496.004",
        "AML.T0024.002",
        "AML.T0034",
    )
    window: ClassVar[float] = HOUR

    def __init__(
        self,
        *,
        z: float = 4.0,
        min_tokens: int = 50_000,
        ceilings: Mapping[Level, int] = CEILINGS,
        half_life: float = 7 * DAY,
        warmup_hours: int = 6,
        min_history: float = DAY,
        established_share: float = 0.5,
        cap_principals: int = 20_000,
        cap_compartments: int = 20_000,
    ) -> None:
        self.z = z
        self.min_tokens = min_tokens
        self.ceilings = dict(ceilings)
        self.min_history = min_history
        self.established_share = established_share
        self.principals = Volumes(cap_principals, half_life, warmup_hours)
        # (principal, compartment) for compartments with a ceiling
        self.compartments = Volumes(cap_compartments, half_life, warmup_hours)
        self._ceilings: tuple[object, dict[str, tuple[Level, int] | None]] = (None, {})

    def structures(self) -> Mapping[str, Structure]:
        return {"principals": self.principals, "compartments": self.compartments}

    def observe(self, obs: Observation, ctx: Context) -> list[Draft]:
        if obs.name != "request.decided" or not obs.allowed or obs.tokens_out <= 0:
            return []
        if not obs.principal:
            return []
        now = obs.time
        volume = self.principals.of(obs.principal, now)
        volume.add(now, obs.tokens_out, self.z)
        found = self._over_baseline(volume, now)
        over = self._over_ceiling(obs, ctx)
        if over is not None:
            found = over
        if found is None or not volume.alert(found[0].rank, now, self.window):
            return []
        severity, confidence, text = found
        return [
            Draft(
                detection=self.id,
                severity=severity,
                confidence=confidence,
                entity_type="principal",
                entity=obs.principal,
                explanation=f"principal {obs.principal} received {text}",
                evidence=(obs.id,),
                techniques=self.techniques,
                principal=obs.principal,
                org=obs.org or ctx.org_of(obs.principal),
            )
        ]

    def _over_baseline(
        self, volume: HourlyVolume, now: float
    ) -> tuple[Severity, float, str] | None:
        total = volume.total(now)
        if total < self.min_tokens:
            return None
        z = volume.score(total, now, self.min_history)
        if z is None or z < self.z:
            return None
        high = z >= 2 * self.z and total >= 2 * self.min_tokens
        text = (
            f"{total:,.0f} output tokens in the last hour against a baseline of "
            f"{volume.baseline.mean:,.0f} per active hour ({z:.1f} deviations above)"
        )
        return (Severity.HIGH if high else Severity.MEDIUM), min(0.5 + z / 40, 0.85), text

    def _ceiling(self, compartment: str, ctx: Context) -> tuple[Level, int] | None:
        """The compartment's level and ceiling (None: no ceiling), cached per config."""
        config, known = self._ceilings
        if config is not ctx.config:
            known = {}
            self._ceilings = (ctx.config, known)
        if compartment not in known:
            declared = ctx.config.compartments.get(compartment)
            ceiling = None
            if declared is not None and declared.level in self.ceilings:
                quota = declared.quotas.principal.tokens_per_hour or 0
                ceiling = declared.level, max(self.ceilings[declared.level], quota)
            known[compartment] = ceiling
        return known[compartment]

    def _over_ceiling(self, obs: Observation, ctx: Context) -> tuple[Severity, float, str] | None:
        found = self._ceiling(obs.compartment, ctx)
        if found is None:
            return None
        level, ceiling = found
        now = obs.time
        volume = self.compartments.of(f"{obs.principal} {obs.compartment}", now)
        volume.add(now, obs.tokens_out, self.z)
        total = volume.total(now)
        if total <= ceiling:
            return None
        steady = volume.warm(now, self.min_history) and (
            volume.baseline.mean >= self.established_share * ceiling
        )
        if steady:
            return None  # steadily this high (a batch service): the baseline rule judges it
        text = (
            f"{total:,.0f} output tokens from {level} compartment "
            f"{obs.compartment} in the last hour, above its ceiling of {ceiling:,} per principal"
        )
        return Severity.HIGH, 0.9, text

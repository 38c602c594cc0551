"""D5: model enumeration — a principal probing models it was never given (T4 of the threat model).

The model list only shows what the caller may use, so someone who asks for models outside it is
guessing or probing. Per principal, over the last ``span`` seconds (5 min), the gateway's
entitlement denials — ``not_granted``, ``above_vendor_ceiling``, or an unknown model (404 on a
model route) — are kept, and:

- ``models`` (3) distinct models denied: **high**, raised at the very request that makes the
  third one, so the finding is there within a second of the probe;
- denials in ``compartments`` (2) distinct compartments: **medium** (a principal looking beyond
  what it holds, across boundaries).

Unknown models do not name the model in the audit event (the gateway records only models it
knows), so all of a window's unknown-model 404s count as one distinct model. Repeating a denied
call (a retry loop, two denials of the same model) adds nothing; listing models is not a denial;
other denials (locks, networks, hours, quotas) are other detections' business.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from ..detector import Context, StatefulDetector, Structure
from ..findings import Draft, Severity
from ..observation import Observation
from ..state import Window, Windows

ENTITLEMENT_REASONS = frozenset({"not_granted", "above_vendor_ceiling"})
UNKNOWN = "?"  # the label of an unknown model the event does not name
_SEP = "\t"
_LISTED = 5


class Enumeration(StatefulDetector):
    id: ClassVar[str] = "D5"
    title: ClassVar[str] = "Model enumeration: denied models or compartments in a burst"
    techniques: ClassVar[tuple[str, ...]] = ("T1526", "T1580", "AML.T0075", "AML.T0014")
    window: ClassVar[float] = 3600.0

    def __init__(
        self,
        *,
        span: float = 300.0,
        models: int = 3,
        compartments: int = 2,
        reasons: frozenset[str] = ENTITLEMENT_REASONS,
        cap_principals: int = 20_000,
        cap_denials: int = 64,
    ) -> None:
        self.models = models
        self.compartments = compartments
        self.reasons = reasons
        self.denials = Windows(span, cap_principals, cap_denials)

    def structures(self) -> Mapping[str, Structure]:
        return {"denials": self.denials}

    def observe(self, obs: Observation, ctx: Context) -> list[Draft]:
        if obs.name != "request.decided" or obs.allowed or not obs.principal:
            return []
        probe = self._probe(obs)
        if probe is None:
            return []
        model, reason = probe
        window = self.denials.of(obs.principal)
        window.expire(obs.time)
        models, compartments = _denied(window)
        new_model = model not in models
        new_compartment = bool(obs.compartment) and obs.compartment not in compartments
        window.add(obs.time, _SEP.join((model, obs.compartment, reason, obs.id)))
        if new_model:
            models[model] = reason
        if new_compartment:
            compartments.add(obs.compartment)
        if new_model and len(models) >= self.models:
            text = _models_text(models, self.denials.span)
            return [self._draft(obs, ctx, window, Severity.HIGH, 0.85, text)]
        if new_compartment and len(compartments) >= self.compartments:
            text = f"models in {len(compartments)} compartments it holds no grant to within "
            text += f"{self.denials.span / 60:g} min: " + ", ".join(sorted(compartments)[:_LISTED])
            return [self._draft(obs, ctx, window, Severity.MEDIUM, 0.6, text)]
        return []

    def _probe(self, obs: Observation) -> tuple[str, str] | None:
        """(model label, reason) when ``obs`` is an entitlement denial, else None."""
        if obs.status == 404 and obs.route.startswith("POST /v1/"):
            if obs.error in ("model_not_found", ""):
                return UNKNOWN + obs.model, "unknown model"
            return None
        if not obs.model:
            return None
        for reason in obs.reasons:
            if reason in self.reasons:
                return obs.model, reason
        return None

    def _draft(
        self,
        obs: Observation,
        ctx: Context,
        window: Window,
        severity: Severity,
        confidence: float,
        what: str,
    ) -> Draft:
        return Draft(
            detection=self.id,
            severity=severity,
            confidence=confidence,
            entity_type="principal",
            entity=obs.principal,
            explanation=(
                f"principal {obs.principal} was denied {what} "
                f"(last from {obs.source_ip or 'an unknown address'})"
            ),
            evidence=tuple(value.rsplit(_SEP, 1)[-1] for _, value, _ in window.items),
            techniques=self.techniques,
            principal=obs.principal,
            org=obs.org or ctx.org_of(obs.principal),
        )


def _denied(window: Window) -> tuple[dict[str, str], set[str]]:
    """The distinct models (first reason each) and compartments denied in ``window``."""
    models: dict[str, str] = {}
    compartments: set[str] = set()
    for _, value, _ in window.items:
        model, compartment, reason, _ = value.split(_SEP, 3)
        models.setdefault(model, reason)
        if compartment:
            compartments.add(compartment)
    return models, compartments


def _models_text(models: dict[str, str], span: float) -> str:
    shown = [
        "an unknown model" if model == UNKNOWN else f"{model.removeprefix(UNKNOWN)} ({reason})"
        for model, reason in list(models.items())[:_LISTED]
    ]
    more = f" and {len(models) - _LISTED} more" if len(models) > _LISTED else ""
    return f"{len(models)} distinct models within {span / 60:g} min: " + ", ".join(shown) + more

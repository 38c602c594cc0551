"""D11: a call from an anonymizer or hosting provider the caller's org has not declared
(T1090.002, T1090.003) — someone reaching Bastion through infrastructure that hides where they are.

Inline, with ``detection.ip_intel`` configured, the gateway records the source's origin on every
request and the policy ``forbid-undeclared-origin`` denies restricted and critical models
(``undeclared_origin``). This detector raises the finding: **high** when such a request was
denied, **medium** when an undeclared anonymizer or hosting origin reached a lower compartment
(allowed there, but still worth a look). Orgs list what they legitimately use in
``allowed_origins`` (a vendor's cloud build farm is ``hosting``), and those are never findings.
Without an IP database, origins are empty and D11 is silent.
"""

from __future__ import annotations

from typing import ClassVar

from ..detector import Context, StatefulDetector
from ..findings import Draft, Severity
from ..observation import Observation


class UndeclaredOrigin(StatefulDetector):
    id: ClassVar[str] = "D11"
    title: ClassVar[str] = "anonymizer or hosting origin not declared for the principal's org"
    techniques: ClassVar[tuple[str, ...]] = ("T1090.002", "T1090.003")
    window: ClassVar[float] = 3600.0

    def observe(self, obs: Observation, ctx: Context) -> list[Draft]:
        if not obs.is_request or not obs.origin or not obs.principal:
            return []
        org = obs.org or ctx.org_of(obs.principal)
        declared = ctx.config.orgs.get(org)
        if declared is not None and obs.origin in declared.allowed_origins:
            return []
        denied = "undeclared_origin" in obs.reasons
        if not denied and not obs.allowed:
            return []  # denied for another reason: other detections speak to it
        where = f"AS{obs.asn}" if obs.asn else obs.network
        return [
            Draft(
                detection=self.id,
                severity=Severity.HIGH if denied else Severity.MEDIUM,
                confidence=0.8,
                entity_type="principal",
                entity=obs.principal,
                explanation=(
                    f"{obs.principal} called {obs.model or 'the gateway'} from an undeclared "
                    f"{obs.origin} origin ({where}, {obs.source_ip})"
                    + ("; denied" if denied else "")
                ),
                evidence=(obs.id,),
                techniques=self.techniques,
                principal=obs.principal,
                org=org,
            )
        ]

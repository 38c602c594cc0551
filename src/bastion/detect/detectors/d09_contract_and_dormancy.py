"""D9: access after the contract ended, after a grant ended, or from a dormant or disabled
account — someone still using access they should no longer have (T7 of the threat model).

The gateway already refuses these calls inline (Cedar: ``outside_contract``,
``dormant_principal``, ``principal_disabled``; an ended grant leaves ``not_granted``). This
detector turns the *first* such denial for a principal into a finding at once, deterministically
(no baseline, no threshold), so the responder hears about it within a second:

- ``outside_contract``, ``dormant_principal``, ``principal_disabled``: **high**;
- ``not_granted`` only when the principal held a time-bound grant to that compartment: known
  from ``grant.created`` and ``grant.revoked`` events (the access service's record), matched to
  the compartment when the event names it, else to a compartment the principal used since the
  grant. **High** after a revocation (an admin or an access review took it away), **medium**
  after a plain expiry (a script still running past the end of a just-in-time grant is the usual
  benign case, and still worth a look). Other ``not_granted`` denials are D5's business.

Repeats merge into the one finding per principal for ``window`` (a day).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from ..detector import Context, StatefulDetector, Structure
from ..findings import Draft, Severity
from ..observation import Observation
from ..state import FirstSeen

DAY = 86_400.0
ANY = "*"  # a grant whose compartment the event does not name
ENDED_ACCESS = {
    "outside_contract": "outside the contract window of its org",
    "dormant_principal": "from a dormant account",
    "principal_disabled": "from a disabled account",
}


_REFUSED_LOGINS = (("is dormant", "dormant_principal"), ("is disabled", "principal_disabled"))


class ContractAndDormancy(StatefulDetector):
    id: ClassVar[str] = "D9"
    title: ClassVar[str] = "Access after contract end, grant end, or from a dormant account"
    techniques: ClassVar[tuple[str, ...]] = ("T1078", "T1199")
    window: ClassVar[float] = DAY

    def __init__(self, *, memory: float = 30 * DAY, cap_principals: int = 20_000) -> None:
        self.memory = memory
        # principal -> compartment (or ANY) -> when a grant to it was created / revoked
        self.granted = FirstSeen(memory, cap_principals, cap_values=16)
        self.revoked = FirstSeen(memory, cap_principals, cap_values=16)
        # principal (with a grant) -> compartment -> last allowed use
        self.used = FirstSeen(memory, cap_principals, cap_values=16)

    def structures(self) -> Mapping[str, Structure]:
        return {"granted": self.granted, "revoked": self.revoked, "used": self.used}

    def observe(self, obs: Observation, ctx: Context) -> list[Draft]:
        if obs.name == "request.decided":
            return self._request(obs, ctx)
        if obs.name == "token.refused" and obs.principal:
            # a login refused because of who is logging in (the token service names them)
            for marker, reason in (
                ("is dormant", "dormant_principal"),
                ("is disabled", "principal_disabled"),
            ):
                if marker in obs.reason:
                    what = f"tried to log in {ENDED_ACCESS[reason]}"
                    return [self._draft(obs, ctx, Severity.HIGH, 0.9, what, reason)]
            return []
        if obs.name in ("grant.created", "grant.revoked") and obs.target_type == "principal":
            book = self.granted if obs.name == "grant.created" else self.revoked
            if obs.target:
                book.seen(obs.target, obs.compartment or ANY, obs.time)
        return []

    def _request(self, obs: Observation, ctx: Context) -> list[Draft]:
        principal = obs.principal
        if not principal:
            return []
        if obs.allowed:
            if obs.compartment and self.granted.known(principal):
                self.used.seen(principal, obs.compartment, obs.time)
            return []
        for reason in obs.reasons:
            if reason in ENDED_ACCESS:
                what = f"called {obs.model or 'the gateway'} {ENDED_ACCESS[reason]}"
                return [self._draft(obs, ctx, Severity.HIGH, 0.95, what, reason)]
        if "not_granted" in obs.reasons and obs.compartment:
            ended = self._ended_grant(principal, obs.compartment, obs.time)
            if ended is not None:
                severity, how = ended
                what = f"called {obs.model} after its grant to {obs.compartment} {how}"
                return [self._draft(obs, ctx, severity, 0.8, what, "not_granted")]
        return []

    def _ended_grant(
        self, principal: str, compartment: str, now: float
    ) -> tuple[Severity, str] | None:
        """How the principal's time-bound grant to ``compartment`` ended, if it held one."""
        since = now - self.memory
        granted = self.granted.values(principal, since)
        if not granted:
            return None
        named = compartment in granted
        if not named and not (ANY in granted and self._used_since(principal, compartment, granted)):
            return None
        granted_at = granted[compartment if named else ANY]
        revoked = self.revoked.values(principal, granted_at)
        if compartment in revoked or (ANY in revoked and not named):
            return Severity.HIGH, "was revoked"
        return Severity.MEDIUM, "expired"

    def _used_since(self, principal: str, compartment: str, granted: dict[str, float]) -> bool:
        used = self.used.values(principal, granted[ANY]).get(compartment)
        return used is not None

    def _draft(
        self,
        obs: Observation,
        ctx: Context,
        severity: Severity,
        confidence: float,
        what: str,
        reason: str,
    ) -> Draft:
        org = obs.org or ctx.org_of(obs.principal)
        return Draft(
            detection=self.id,
            severity=severity,
            confidence=confidence,
            entity_type="principal",
            entity=obs.principal,
            explanation=(
                f"principal {obs.principal}{f' of {org}' if org else ''} {what}; "
                f"denied inline ({reason}) from {obs.source_ip or 'an unknown address'}"
            ),
            evidence=(obs.id,),
            techniques=self.techniques,
            principal=obs.principal,
            org=org,
        )

"""D14: a honeytoken or known-leaked credential presented.

``detection.honeytokens`` lists principals and device-key thumbprints no legitimate caller ever
uses (decoys planted where an intruder looks, or credentials known to have leaked). The gateway
and the token endpoint already refuse them inline (the caller is told ``not_granted`` or
``invalid_grant``, nothing more); this detector turns every event that presents one into a
**critical** finding: a gateway request, a token issued, refused or refreshed, or a control-plane
action by that principal — by the principal, the actor of a delegated token, or the device key.

False-positive trap it stays quiet on: the operator setting the decoy up (creating the principal,
enrolling its key, locking it) — admin events *about* a honeytoken are not presenting it.
"""

from __future__ import annotations

from typing import ClassVar

from bastion.config.detection import Honeytokens

from ..detector import Context, StatefulDetector
from ..findings import Draft, Severity
from ..observation import Observation

_PRESENTING = ("request.", "token.")


class HoneytokenPresented(StatefulDetector):
    id: ClassVar[str] = "D14"
    title: ClassVar[str] = "Honeytoken or known-leaked credential presented"
    techniques: ClassVar[tuple[str, ...]] = ("T1552.001", "AML.T0055")
    window: ClassVar[float] = 3600.0

    def __init__(self) -> None:
        self._tokens: Honeytokens | None = None
        self._principals: frozenset[str] = frozenset()
        self._keys: frozenset[str] = frozenset()

    def observe(self, obs: Observation, ctx: Context) -> list[Draft]:
        tokens = ctx.config.detection.honeytokens
        if tokens is not self._tokens:
            self._tokens = tokens
            self._principals, self._keys = frozenset(tokens.principals), frozenset(tokens.keys)
        if not self._principals and not self._keys:
            return []
        # gateway and token events present their principal (and actor); control-plane actions
        # only their actor's (the target of an admin action is not presenting anything)
        presenting = obs.name.startswith(_PRESENTING)
        names = (obs.principal, *obs.act) if presenting else (obs.actor,)
        principal = next((name for name in names if name in self._principals), "")
        key = obs.jkt if obs.jkt in self._keys else ""
        if not principal and not key:
            return []
        what = f"honeytoken principal {principal}" if principal else "honeytoken device key"
        if key:
            what += f" (key {key[:8]}…)" if principal else f" {key[:8]}…"
        where = f" from {obs.network or obs.source_ip}" if obs.source_ip else ""
        verdict = "allowed" if obs.allowed else "refused"
        action = f"{obs.name} ({verdict})" if obs.is_request else obs.name
        return [
            Draft(
                detection=self.id,
                severity=Severity.CRITICAL,
                confidence=0.99,
                entity_type="principal" if principal else "key",
                entity=principal or key,
                explanation=f"{what} presented{where}: {action}",
                evidence=(obs.id,),
                techniques=self.techniques,
                principal=principal or obs.principal,
                org=obs.org or ctx.org_of(principal or obs.principal),
            )
        ]

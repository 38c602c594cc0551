"""Step-up (RFC 9470): when a refusal is a request to authenticate again rather than a "no".

The gateway answers 401 ``insufficient_user_authentication`` only when fresh MFA would turn the
decision into an allow. A caller who would be refused anyway (no grant, a boundary, a lock) gets
the 403 with every reason, stale MFA included, so stepping up is never asked for in vain.
"""

from __future__ import annotations

from dataclasses import replace

from .authorize import Caller
from .decide import decide
from .decision import Decision, Reason
from .snapshot import Snapshot

STALE_MFA_POLICY = "forbid-stale-mfa"


def decide_with_step_up(
    snapshot: Snapshot,
    caller: Caller,
    model: str,
    compartment: str,
    source_ip: str,
    api: str,
    now: float,
) -> tuple[Decision, bool]:
    """:func:`~.decide.decide`, and whether to ask for a step-up: ``(decision, True)`` when
    stale MFA is all that stands between the caller and an allow; otherwise ``(decision to
    enforce, False)``, with stale MFA among its reasons if it also holds."""
    decision = decide(snapshot, caller, model, compartment, source_ip, api, now)
    if decision.allowed or Reason.INSUFFICIENT_USER_AUTHENTICATION not in decision.reasons:
        return decision, False
    fresh = decide(snapshot, replace(caller, mfa_at=now), model, compartment, source_ip, api, now)
    if fresh.allowed:
        return decision, True
    reasons = tuple(dict.fromkeys((*fresh.reasons, Reason.INSUFFICIENT_USER_AUTHENTICATION)))
    policies = tuple(sorted({*fresh.policies, STALE_MFA_POLICY}))
    return Decision(False, reasons, policies, decision.epoch), False

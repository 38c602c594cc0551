"""Step-up (RFC 9470): when a refusal is a request to authenticate again rather than a "no".

The gateway answers 401 ``insufficient_user_authentication`` only when fresh MFA would turn the
decision into an allow. A caller who would be refused anyway (no grant, a boundary, a lock) gets
the 403 with every reason, stale MFA included, so stepping up is never asked for in vain.

Two things ask for a step-up: a compartment's ``max_mfa_age_minutes`` (the ``forbid-stale-mfa``
policy) and a step-up lock on the principal (an MFA login after the lock was placed passes).
"""

from __future__ import annotations

import math
from dataclasses import replace

from bastion.errors import InsufficientUserAuthentication

from .authorize import Caller, step_up_lock
from .decide import decide
from .decision import Decision, Reason
from .mfa import max_mfa_age
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
    locked = [policy for policy in decision.policies if policy.startswith("lock:")]
    policies = tuple(sorted({*fresh.policies, *(locked or [STALE_MFA_POLICY])}))
    return Decision(False, reasons, policies, decision.epoch), False


def step_up_error(
    snapshot: Snapshot, caller: Caller, model: str | None, compartment: str | None, now: float
) -> InsufficientUserAuthentication:
    """The RFC 9470 challenge for ``caller``. ``max_age`` is the strictest of what asks: the
    compartment's MFA age limit, and the seconds since a step-up lock not yet satisfied was
    placed (so any MFA login from now on satisfies both)."""
    limit = max_mfa_age(snapshot, compartment)
    lock = step_up_lock(snapshot, caller, now)
    if lock is None:
        max_age = limit or 0
        return InsufficientUserAuthentication(
            f"model {model!r} needs an MFA login at most {max_age} s old: log in again with MFA",
            max_age,
        )
    since = max(0, math.floor(now - lock.created_at))
    max_age = since if limit is None else min(limit, since)
    return InsufficientUserAuthentication(
        f"principal {lock.target!r} must log in again with MFA (step-up lock placed {since} s ago)",
        max_age,
    )

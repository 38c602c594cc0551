"""The whole decision for one call to one model, as the gateway makes it (no I/O).

Locks first (O(1)), then Cedar for the caller with the facts of this request. A delegated token
(RFC 8693 ``act``) needs a second answer: the actor — a vendor acting under its sponsor's grant —
is evaluated with the sponsor's allow standing in for a grant of its own, so every boundary of
the actor (network, contract, hours, ceiling, seats, MFA) still applies. Both must allow.
"""

from __future__ import annotations

from dataclasses import replace

from .authorize import Caller, authorize, check_locks
from .decision import Decision
from .facts import request_facts
from .snapshot import Snapshot


def decide(
    snapshot: Snapshot,
    caller: Caller,
    model: str,
    compartment: str,
    source_ip: str,
    api: str,
    now: float,
) -> Decision:
    locked = check_locks(snapshot, caller, compartment, now)
    if locked is not None:
        return locked
    facts = request_facts(snapshot, caller, compartment, source_ip, api, now)
    decision = authorize(snapshot, caller, model, facts)
    if not decision.allowed or not caller.actor:
        return decision
    actor = caller.acting()
    actor_facts = request_facts(snapshot, actor, compartment, source_ip, api, now)
    return authorize(snapshot, actor, model, replace(actor_facts, delegated_grant=True))

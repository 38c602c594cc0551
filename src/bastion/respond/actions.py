"""Response actions: what each one targets, and how it is carried out with locks.

Every containing action is a lock (``respond/locks.py``), so it takes effect on the next request
in every process, cuts open streams, and is undone by releasing the lock:

==================  =====================================================================
action              lock
==================  =====================================================================
step_up             ``stepup`` on the principal if it has an MFA factor (its next requests
                    need an MFA login newer than the lock); otherwise ``family`` locks on
                    its live token families (it must log in again with its device key)
throttle            ``throttle`` on the principal, ``rate`` requests per minute
revoke_family       ``family`` on the token family (and a CAEP session-revoked signal)
suspend_principal   ``principal``
suspend_org         ``org`` (vendor orgs only; never an internal org automatically)
lock_compartment    ``compartment`` (break-glass: always after an admin's approval)
lock_key            ``key`` on the device key
lock_network        ``network`` on the source network (/24 or /64)
==================  =====================================================================

``notify`` and ``open_incident`` lock nothing and cannot be undone.
"""

from __future__ import annotations

from dataclasses import dataclass

from bastion.detect.findings import Finding

from .entities import Implicated

LOCK_OF = {
    "throttle": "throttle",
    "revoke_family": "family",
    "suspend_principal": "principal",
    "suspend_org": "org",
    "lock_compartment": "compartment",
    "lock_key": "key",
    "lock_network": "network",
}
CONTAINING = frozenset({"step_up", *LOCK_OF})
DEFAULT_TTL = {"throttle": 3600, "step_up": 86400, "lock_network": 86400}
DEFAULT_RATE = 6.0
MAX_TARGETS = 3  # per action and finding: a finding with wide evidence must not lock widely


@dataclass(frozen=True, slots=True)
class Target:
    target_type: str
    target: str


def targets_of(
    action: str, finding: Finding, implicated: Implicated, org_kind: str
) -> tuple[list[Target], str]:
    """What ``action`` acts on for this finding, or ([], why it acts on nothing)."""
    if action == "notify":
        return [Target("webhook", "*")], ""
    if action == "open_incident":
        return [Target("incident", "")], ""
    if action.startswith("suspend_") and finding.detection == "D8":
        return [], "D8 (off-hours use) alone never suspends"
    if action in ("step_up", "throttle", "suspend_principal"):
        principal = finding.principal or (
            finding.entity if finding.entity_type == "principal" else ""
        )
        if not principal:
            return [], "the finding names no principal"
        return [Target("principal", principal)], ""
    if action == "suspend_org":
        if not finding.org:
            return [], "the finding names no org"
        if org_kind != "vendor":
            return [], "an internal org is never suspended automatically"
        return [Target("org", finding.org)], ""
    kind = LOCK_OF[action]
    pool = {
        "family": implicated.families,
        "key": implicated.keys,
        "network": implicated.networks,
        "compartment": implicated.compartments,
    }[kind]
    first = [finding.entity] if finding.entity_type == kind else []
    chosen = list(dict.fromkeys([*first, *sorted(pool)]))[:MAX_TARGETS]
    if not chosen:
        return [], f"the finding and its evidence name no {kind}"
    return [Target(kind, value) for value in chosen], ""

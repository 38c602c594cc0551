"""Decisions over a snapshot: the O(1) lock check, then Cedar. No I/O, no exceptions escape:
any evaluation error is a deny."""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import cedarpy

from .decision import Decision, Reason
from .snapshot import NS, LockFacts, Snapshot

_ACTION = {"type": f"{NS}::Action", "id": "invoke"}
_LOCK_REASONS = {
    "all": Reason.LOCKED_ALL,
    "principal": Reason.LOCKED_PRINCIPAL,
    "org": Reason.LOCKED_ORG,
    "key": Reason.LOCKED_KEY,
    "family": Reason.LOCKED_FAMILY,
    "compartment": Reason.LOCKED_COMPARTMENT,
    "network": Reason.LOCKED_NETWORK,
}
# Network locks are looked up in O(1) per prefix length, so only these lengths can be locked.
NETWORK_PREFIXES: Mapping[int, tuple[int, ...]] = {4: (32, 24, 16), 6: (128, 64, 48)}


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, as established by authentication."""

    principal: str
    org: str
    jkt: str
    family: str
    # A delegated token (RFC 8693 ``act``): the principal making the calls for ``principal``.
    actor: str = ""
    actor_org: str = ""
    # When the token's login passed MFA (its ``auth_time``); None when it did not.
    mfa_at: float | None = None
    # The detection engine's risk score (0-100) for this caller when the request came in.
    risk: int = 0
    # D2 inline: this token family was used from another network moments ago (two places at once).
    family_moved: bool = False
    # The source address as the gateway resolved it (trusted proxies applied): network locks.
    source: str = ""

    def acting(self) -> Caller:
        """The actor as a caller of its own (same key and family)."""
        return Caller(
            principal=self.actor,
            org=self.actor_org,
            jkt=self.jkt,
            family=self.family,
            mfa_at=self.mfa_at,  # the actor holds the key: the token's MFA is the actor's
            risk=self.risk,
            source=self.source,
        )


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """Facts the gateway computed about this request; they become the Cedar context."""

    token_bound: bool
    source_ip: str
    api: str
    # The caller's boundary (always true for internal principals but the network check):
    network_allowed: bool = True
    in_contract: bool = True
    within_hours: bool = True
    # For everyone: the compartment has no allowed hours, or now is inside them.
    compartment_hours_ok: bool = True
    seat_ok: bool = True
    sponsor_active: bool = True
    # The caller's org has an access review past due; the caller has been idle too long.
    review_overdue: bool = False
    dormant: bool = False
    jit_granted: bool = False
    delegated_grant: bool = False
    # The compartment asks for no MFA, or the caller's MFA is recent enough (step-up, RFC 9470).
    mfa_fresh: bool = True
    # The detection engine's risk score, and whether it reached detection.risk.forbid_critical_at.
    risk: int = 0
    risk_high: bool = False
    family_moved: bool = False
    # D14: the caller (principal or device key) is a honeytoken. D11: the source address is an
    # anonymizer or hosting provider the caller's org has not declared in allowed_origins.
    honeytoken: bool = False
    undeclared_origin: bool = False

    def context(self) -> dict[str, object]:
        return {
            "token_bound": self.token_bound,
            "source_ip": self.source_ip,
            "api": self.api,
            "network_allowed": self.network_allowed,
            "in_contract": self.in_contract,
            "within_hours": self.within_hours,
            "compartment_hours_ok": self.compartment_hours_ok,
            "seat_ok": self.seat_ok,
            "sponsor_active": self.sponsor_active,
            "review_overdue": self.review_overdue,
            "dormant": self.dormant,
            "jit_granted": self.jit_granted,
            "delegated_grant": self.delegated_grant,
            "mfa_fresh": self.mfa_fresh,
            "risk": self.risk,
            "risk_high": self.risk_high,
            "family_moved": self.family_moved,
            "honeytoken": self.honeytoken,
            "undeclared_origin": self.undeclared_origin,
        }


@lru_cache(maxsize=4096)
def network_targets(source: str) -> tuple[tuple[str, str], ...]:
    """The network lock targets that cover ``source``, one per lockable prefix length (none for
    a value that is not an address). Cached: a gateway sees the same addresses over and over,
    and this runs on every request while any network is locked."""
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return ()
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
    return tuple(
        ("network", str(ipaddress.ip_network((address, length), strict=False)))
        for length in NETWORK_PREFIXES[address.version]
    )


def lock_targets(
    caller: Caller, compartment: str | None, networks: bool = True
) -> list[tuple[str, str]]:
    """Every target whose lock refuses this caller outright, broadest first. ``networks=False``
    skips the source-network targets (the snapshot knows when no network is locked). Step-up
    and throttle locks are not among them: they do not refuse outright (see
    :func:`step_up_lock` and :func:`throttle_locks`)."""
    targets = [
        ("all", "*"),
        ("principal", caller.principal),
        ("org", caller.org),
        ("key", caller.jkt),
        ("family", caller.family),
    ]
    if caller.actor:
        targets += [("principal", caller.actor), ("org", caller.actor_org)]
    if compartment is not None:
        targets.append(("compartment", compartment))
    if networks and caller.source:
        targets += network_targets(caller.source)
    return targets


def _principals(caller: Caller) -> tuple[str, ...]:
    """The principals a principal-scoped lock may name: the caller and a delegation's actor."""
    return (caller.principal, caller.actor) if caller.actor else (caller.principal,)


def step_up_lock(snapshot: Snapshot, caller: Caller, now: float) -> LockFacts | None:
    """The active step-up lock on the caller (or its actor) that the token's MFA does not
    satisfy: a login without MFA, or with MFA from before the lock. ``auth_time`` has whole
    seconds, so a lock counts from the start of the second it was placed in."""
    if not snapshot.locks:
        return None
    for principal in _principals(caller):
        lock = snapshot.locks.get(("stepup", principal))
        if lock is None or not lock.active(now):
            continue
        if caller.mfa_at is None or caller.mfa_at < math.floor(lock.created_at):
            return lock
    return None


def throttle_locks(snapshot: Snapshot, caller: Caller, now: float) -> list[LockFacts]:
    """The active throttle locks on the caller (or its actor). They refuse nothing here: the
    gateway holds the principal to the lock's rate (``QuotaBuckets.throttle``)."""
    if not snapshot.locks:
        return []
    found = []
    for principal in _principals(caller):
        lock = snapshot.locks.get(("throttle", principal))
        if lock is not None and lock.rate is not None and lock.active(now):
            found.append(lock)
    return found


def check_locks(
    snapshot: Snapshot, caller: Caller, compartment: str | None, now: float
) -> Decision | None:
    """A deny naming the lock if any target is locked, else None. A step-up lock the token's
    MFA does not satisfy denies too, with ``insufficient_user_authentication`` (the gateway
    answers it with the RFC 9470 challenge); an outright lock wins over it."""
    targets = lock_targets(caller, compartment, snapshot.has_network_locks)
    lock = snapshot.lock_on(targets, now)
    if lock is not None:
        return Decision.deny(_LOCK_REASONS[lock.target_type], snapshot.epoch, (f"lock:{lock.id}",))
    step_up = step_up_lock(snapshot, caller, now)
    if step_up is not None:
        reason = Reason.INSUFFICIENT_USER_AUTHENTICATION
        return Decision.deny(reason, snapshot.epoch, (f"lock:{step_up.id}",))
    return None


def _request(principal: str, model: str, facts: RequestFacts) -> dict[str, object]:
    return {
        "principal": {"type": f"{NS}::Principal", "id": principal},
        "action": _ACTION,
        "resource": {"type": f"{NS}::Model", "id": model},
        "context": facts.context(),
    }


def _to_decision(snapshot: Snapshot, result: cedarpy.AuthzResult) -> Decision:
    diagnostics = result.diagnostics
    if diagnostics.errors or result.decision is cedarpy.Decision.NoDecision:
        return Decision.deny(Reason.POLICY_ERROR, snapshot.epoch)
    names = diagnostics.id_annotations_by_reason
    policies = tuple(sorted(names.get(pid, pid) for pid in diagnostics.reasons))
    if result.allowed:
        return Decision(True, (Reason.GRANTED,), policies, snapshot.epoch)
    if not policies:
        return Decision.deny(Reason.NOT_GRANTED, snapshot.epoch)
    reasons = tuple(
        dict.fromkeys(snapshot.cedar.reasons.get(p, Reason.FORBIDDEN_BY_POLICY) for p in policies)
    )
    return Decision(False, reasons, policies, snapshot.epoch)


MAX_MEMO = 65536


def authorize(snapshot: Snapshot, caller: Caller, model: str, facts: RequestFacts) -> Decision:
    """Cedar's answer for ``caller`` invoking ``model``; errors and unknowns deny.

    Answers are memoized per snapshot: the same principal, model and facts against the same
    snapshot always get the same decision, so Cedar runs once per distinct question."""
    key = (caller.principal, model, facts)
    memo = snapshot.decisions
    decision = memo.get(key)
    if decision is None:
        decision = _evaluate(snapshot, caller, model, facts)
        if len(memo) >= MAX_MEMO:
            memo.clear()
        memo[key] = decision
    assert isinstance(decision, Decision)
    return decision


def _evaluate(snapshot: Snapshot, caller: Caller, model: str, facts: RequestFacts) -> Decision:
    if caller.principal not in snapshot.principals:
        return Decision.deny(Reason.UNKNOWN_PRINCIPAL, snapshot.epoch)
    cedar = snapshot.cedar
    try:
        result = cedarpy.is_authorized(
            _request(caller.principal, model, facts), cedar.policies, cedar.entities, cedar.schema
        )
    except Exception:  # any failure of the evaluator is a deny, never an allow
        return Decision.deny(Reason.POLICY_ERROR, snapshot.epoch)
    return _to_decision(snapshot, result)


ADMIN_ACTIONS = frozenset({"audit_read", "access_request", "access_decide", "access_admin"}) | {
    "directory_read",
    "directory_admin",
    "lock_admin",
    "review_read",
    "review_decide",
    "console_access",  # signing in to the console (internal users only)
    "overview_read",  # the console's overview page
}


def authorize_admin(snapshot: Snapshot, caller: Caller, action: str) -> Decision:
    """Cedar's answer for a control-plane ``action`` on the service (deny by default)."""
    if action not in ADMIN_ACTIONS:
        return Decision.deny(Reason.FORBIDDEN_BY_POLICY, snapshot.epoch)
    if caller.principal not in snapshot.principals:
        return Decision.deny(Reason.UNKNOWN_PRINCIPAL, snapshot.epoch)
    honeytoken = snapshot.config.detection.honeytokens.covers(caller.principal, caller.jkt)
    facts = RequestFacts(token_bound=True, source_ip="", api="admin", honeytoken=honeytoken)
    request = {
        "principal": {"type": f"{NS}::Principal", "id": caller.principal},
        "action": {"type": f"{NS}::Action", "id": action},
        "resource": {"type": f"{NS}::Service", "id": "bastion"},
        "context": facts.context(),
    }
    cedar = snapshot.cedar
    try:
        result = cedarpy.is_authorized(request, cedar.policies, cedar.entities, cedar.schema)
    except Exception:
        return Decision.deny(Reason.POLICY_ERROR, snapshot.epoch)
    return _to_decision(snapshot, result)


def authorize_many(
    snapshot: Snapshot, caller: Caller, models: Sequence[str], facts: RequestFacts
) -> list[Decision]:
    """Batch form for listing models: one evaluator call for all of them."""
    if caller.principal not in snapshot.principals:
        return [Decision.deny(Reason.UNKNOWN_PRINCIPAL, snapshot.epoch) for _ in models]
    cedar = snapshot.cedar
    try:
        results = cedarpy.is_authorized_batch(
            [_request(caller.principal, model, facts) for model in models],
            cedar.policies,
            cedar.entities,
            cedar.schema,
        )
    except Exception:
        return [Decision.deny(Reason.POLICY_ERROR, snapshot.epoch) for _ in models]
    return [_to_decision(snapshot, result) for result in results]

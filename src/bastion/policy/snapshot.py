"""The hot path's view of the world: one immutable snapshot, built off the hot path, swapped whole.

A snapshot holds everything a decision needs — routes to upstreams, principals and their device
keys, active locks, and the Cedar policy and entity handles parsed once — stamped with the state
epoch it was built from. Building one is pure (no I/O): the caller reads the config and the store
and hands the rows in. A build that fails raises, and the holder keeps the last good snapshot.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from types import MappingProxyType
from typing import Any

import cedarpy

from bastion.config.models import AuditMode, BastionConfig, Quotas, TokenBinding
from bastion.detect.ipintel import Origin
from bastion.detect.signals import NO_SIGNALS, Signals
from bastion.errors import ConfigError
from bastion.store.access import GrantRow
from bastion.store.keys import DeviceKeyRow
from bastion.store.locks import LockRow
from bastion.store.principals import PrincipalRow
from bastion.store.reviews import ReviewRow

from .decision import Reason

NS = "Bastion"
LOCK_TYPES = (
    "all",
    "principal",
    "org",
    "key",
    "family",
    "compartment",
    "network",
    "stepup",
    "throttle",
)


def _uid(kind: str, name: str) -> dict[str, str]:
    return {"type": f"{NS}::{kind}", "id": name}


def _ref(kind: str, name: str) -> dict[str, dict[str, str]]:
    return {"__entity": _uid(kind, name)}


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """Where a model name goes: upstream URL, API style, upstream id and compartment."""

    name: str
    compartment: str
    upstream: str
    upstream_model: str
    api: str
    base_url: str
    connect_timeout: float
    read_timeout: float
    api_key: str | None = field(default=None, repr=False)
    api_key_env: str | None = None
    forward_headers: frozenset[str] = frozenset()
    audit_required: bool = False
    quotas: Quotas = field(default_factory=Quotas)
    audience: str = ""  # `aud` of the upstream assertion; "" means base_url (gateway/assertion.py)
    assertion: bool = True  # whether to send it (not to third-party APIs: it names principals)


@dataclass(frozen=True, slots=True)
class PrincipalFacts:
    name: str
    kind: str
    org: str
    disabled: bool
    roles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LockFacts:
    id: str
    target_type: str
    target: str
    reason: str
    expires_at: float | None
    created_at: float = 0.0  # step-up locks pass logins with MFA after this time
    rate: float | None = None  # throttle locks: requests per minute

    def active(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at > now


@dataclass(frozen=True, slots=True)
class CedarHandles:
    schema: cedarpy.Schema
    policies: cedarpy.PolicySet
    entities: cedarpy.Entities
    reasons: Mapping[str, Reason]  # policy @id -> reason


@dataclass(frozen=True, slots=True)
class Snapshot:
    epoch: int
    config: BastionConfig
    models: Mapping[str, ModelRoute]
    principals: Mapping[str, PrincipalFacts]
    device_keys: Mapping[str, tuple[str, Mapping[str, str]]]  # jkt -> (principal, public JWK)
    locks: Mapping[tuple[str, str], LockFacts]
    cedar: CedarHandles = field(repr=False)
    # Principals beyond their vendor org's seat limit (the latest-created ones are over).
    over_seats: frozenset[str] = frozenset()
    # Time-bound grants: (principal, compartment) -> latest expiry; checked to the second.
    grants: Mapping[tuple[str, str], float] = field(default_factory=dict)
    # Access reviews: vendor org -> due time of its open review (past it, the org is suspended
    # from restricted compartments and above).
    review_due: Mapping[str, float] = field(default_factory=dict)
    # Dormancy: principal -> last activity (token issued or refreshed; created_at if never), and
    # the idle time after which a principal is dormant (None: never).
    activity: Mapping[str, float] = field(default_factory=dict)
    dormant_after: float | None = None
    # Gateway-side detection signals (content classifier, IP intelligence), loaded with the config.
    signals: Signals = field(default=NO_SIGNALS, repr=False, compare=False)
    # Memo of Cedar decisions for this snapshot (decisions are pure functions of the snapshot
    # and the request facts); bounded, and gone with the snapshot on the next swap.
    decisions: dict[Hashable, Any] = field(default_factory=dict, repr=False, compare=False)
    # Whether any source network is locked: without one, requests skip the network lookups.
    has_network_locks: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        network = any(target_type == "network" for target_type, _ in self.locks)
        object.__setattr__(self, "has_network_locks", network)  # derived, so always in step

    def lock_on(self, targets: Iterable[tuple[str, str]], now: float) -> LockFacts | None:
        """The first active lock on any of ``targets`` (each an O(1) lookup), or None."""
        if not self.locks:
            return None
        for target in targets:
            lock = self.locks.get(target)
            if lock is not None and lock.active(now):
                return lock
        return None

    def review_overdue(self, org: str, now: float) -> bool:
        """Whether ``org`` has an open access review past its due time (exact to the second)."""
        due = self.review_due.get(org)
        return due is not None and now >= due

    def dormant(self, principal: str, now: float) -> bool:
        """Whether ``principal`` has been idle longer than the dormancy limit. A principal with
        no recorded creation or activity counts as dormant (fail closed)."""
        if self.dormant_after is None:
            return False
        last = self.activity.get(principal)
        return last is None or now - last >= self.dormant_after

    def origin(self, address: str) -> Origin:
        """ASN, country and origin of a source address (empty without IP intelligence)."""
        return self.signals.origin(address)

    def device_key(self, principal: str, jkt: str) -> Mapping[str, str] | None:
        entry = self.device_keys.get(jkt)
        return entry[1] if entry is not None and entry[0] == principal else None


def load_policy_text() -> tuple[str, str]:
    """The shipped Cedar schema and policies (package data)."""
    root = resources.files("bastion.policy")
    schema = (root / "bastion.cedarschema").read_text(encoding="utf-8")
    policies = "\n".join(
        entry.read_text(encoding="utf-8")
        for entry in sorted(root.joinpath("policies").iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".cedar")
    )
    return schema, policies


def build_cedar(
    schema_text: str, policy_text: str, entities: Sequence[Mapping[str, object]]
) -> CedarHandles:
    """Parse and validate policies and entities once; every policy needs a unique ``@id``."""
    schema, policies, reasons = compile_policies(schema_text, policy_text)
    try:
        handle = cedarpy.Entities.from_json_str(json.dumps(list(entities)), schema)
    except ValueError as exc:
        raise ConfigError("policies", [f"entities do not match the schema: {exc}"]) from None
    return CedarHandles(schema=schema, policies=policies, entities=handle, reasons=reasons)


@functools.lru_cache(maxsize=4)
def compile_policies(
    schema_text: str, policy_text: str
) -> tuple[cedarpy.Schema, cedarpy.PolicySet, Mapping[str, Reason]]:
    """The parsed schema and policies and each policy's reason, validated. Cached by text: a
    snapshot is rebuilt on every state change (a lock, say) while the policies rarely change,
    and compiling them is most of a rebuild's Cedar work (~20 ms). The handles are read-only, so
    snapshots share them. A failure is not cached (raised again on the next try)."""
    problems: list[str] = []
    try:
        schema = cedarpy.Schema.from_str(schema_text)
        policies = cedarpy.PolicySet.from_str(policy_text)
        parsed = json.loads(cedarpy.policies_to_json_str(policy_text))
    except ValueError as exc:
        raise ConfigError("policies", [f"Cedar parse error: {exc}"]) from None
    validation = cedarpy.validate_policies(policy_text, schema_text)
    if not validation.validation_passed:
        problems += [str(error) for error in validation.errors]
    reasons: dict[str, Reason] = {}
    for policy_id, policy in parsed.get("staticPolicies", {}).items():
        annotations = policy.get("annotations", {})
        name = annotations.get("id")
        if not name:
            problems.append(f"policy {policy_id} has no @id annotation")
        elif name in reasons:
            problems.append(f"duplicate policy @id {name!r}")
        else:
            reasons[name] = Reason.parse(annotations.get("reason"))
    if problems:
        raise ConfigError("policies", problems)
    return schema, policies, MappingProxyType(reasons)


def _principal_facts(
    config: BastionConfig, rows: Sequence[PrincipalRow]
) -> dict[str, PrincipalFacts]:
    facts = {
        row.name: PrincipalFacts(row.name, row.kind, row.org, row.disabled)
        for row in rows
        if row.org in config.orgs  # a principal whose org left the config cannot be used
    }
    for name, principal in config.principals.items():
        facts[name] = PrincipalFacts(
            name,
            principal.kind,
            principal.org,
            principal.disabled,
            tuple(str(role) for role in principal.roles),
        )
    return facts


def _entities(
    config: BastionConfig, principals: Mapping[str, PrincipalFacts]
) -> list[dict[str, object]]:
    granted_to: dict[tuple[str, str], list[dict[str, str]]] = {}
    for name, compartment in config.compartments.items():
        for granted_org in compartment.grants.orgs:
            granted_to.setdefault(("org", granted_org), []).append(_uid("Compartment", name))
        for principal in compartment.grants.principals:
            granted_to.setdefault(("principal", principal), []).append(_uid("Compartment", name))
    entities: list[dict[str, object]] = []
    for name, compartment in config.compartments.items():
        entities.append(
            {
                "uid": _uid("Compartment", name),
                "attrs": {
                    "level": str(compartment.level),
                    "level_rank": compartment.level.rank,
                    "token_binding_required": compartment.token_binding is TokenBinding.REQUIRED,
                },
                "parents": [],
            }
        )
    for org_name, org in config.orgs.items():
        entities.append(
            {
                "uid": _uid("Org", org_name),
                "attrs": {"kind": str(org.kind), "ceiling_rank": org.ceiling.rank},
                "parents": granted_to.get(("org", org_name), []),
            }
        )
    for name, facts in principals.items():
        entities.append(
            {
                "uid": _uid("Principal", name),
                "attrs": {
                    "kind": facts.kind,
                    "org": _ref("Org", facts.org),
                    "disabled": facts.disabled,
                    "roles": list(facts.roles),
                },
                "parents": [_uid("Org", facts.org), *granted_to.get(("principal", name), [])],
            }
        )
    entities.append({"uid": _uid("Service", "bastion"), "attrs": {}, "parents": []})
    for model in config.models:
        entities.append(
            {
                "uid": _uid("Model", model.name),
                "attrs": {"compartment": _ref("Compartment", model.compartment)},
                "parents": [_uid("Compartment", model.compartment)],
            }
        )
    return entities


def _routes(config: BastionConfig, env: Mapping[str, str]) -> dict[str, ModelRoute]:
    routes = {}
    for model in config.models:
        upstream = config.upstreams[model.upstream]
        routes[model.name] = ModelRoute(
            name=model.name,
            compartment=model.compartment,
            upstream=model.upstream,
            upstream_model=model.upstream_model or model.name,
            api=str(upstream.api),
            base_url=str(upstream.base_url).rstrip("/"),
            connect_timeout=upstream.connect_timeout_seconds,
            read_timeout=upstream.timeout_seconds,
            api_key=env.get(upstream.api_key_env) if upstream.api_key_env else None,
            api_key_env=upstream.api_key_env,
            forward_headers=frozenset(upstream.forward_headers),
            audit_required=config.compartments[model.compartment].audit is AuditMode.REQUIRED,
            quotas=config.compartments[model.compartment].quotas,
            audience=upstream.assertion_audience or "",
            assertion=upstream.assertion,
        )
    return routes


def _over_seats(
    config: BastionConfig, facts: Mapping[str, PrincipalFacts], rows: Sequence[PrincipalRow]
) -> frozenset[str]:
    """Who is over a vendor seat limit: the earliest-created active principals hold the seats."""
    created = {row.name: row.created_at for row in rows}
    over: set[str] = set()
    for org_name, org in config.orgs.items():
        if org.seat_limit is None:
            continue
        members = sorted(
            (f.name for f in facts.values() if f.org == org_name and not f.disabled),
            key=lambda name: (created.get(name, float("inf")), name),
        )
        over.update(members[org.seat_limit :])
    return frozenset(over)


def _grant_index(rows: Sequence[GrantRow]) -> dict[tuple[str, str], float]:
    index: dict[tuple[str, str], float] = {}
    for row in rows:
        key = (row.principal, row.compartment)
        if row.revoked_at is None and row.expires_at > index.get(key, 0.0):
            index[key] = row.expires_at
    return index


def _lock_index(rows: Sequence[LockRow]) -> dict[tuple[str, str], LockFacts]:
    """One entry per target: the lock that lasts longest (no expiry beats any expiry). Step-up
    and throttle locks are merged instead (see :func:`_merged`)."""
    index: dict[tuple[str, str], LockFacts] = {}
    for row in rows:
        lock = LockFacts(
            row.id,
            row.target_type,
            row.target,
            row.reason,
            row.expires_at,
            row.created_at,
            row.rate,
        )
        held = index.get((row.target_type, row.target))
        if held is not None and row.target_type in ("stepup", "throttle"):
            index[(row.target_type, row.target)] = _merged(held, lock)
        elif held is None or (
            held.expires_at is not None
            and (lock.expires_at is None or lock.expires_at > held.expires_at)
        ):
            index[(row.target_type, row.target)] = lock
    return index


def _merged(held: LockFacts, lock: LockFacts) -> LockFacts:
    """Two step-up or throttle locks on one principal as one that is at least as strict as
    both, for as long as either lasts: the latest step-up (an MFA login after it satisfies the
    earlier one too), the lowest rate. Keeping only the longest-lasting one would let a second
    step-up pass logins that satisfied the first."""
    if held.expires_at is None or lock.expires_at is None:
        expires_at = None
    else:
        expires_at = max(held.expires_at, lock.expires_at)
    if lock.target_type == "stepup":
        strict = lock if lock.created_at >= held.created_at else held
    else:
        unset = float("inf")  # a throttle row always has a rate; a row without one holds nobody
        strict = lock if (lock.rate or unset) < (held.rate or unset) else held
    return replace(strict, expires_at=expires_at)


def _review_due(config: BastionConfig, reviews: Sequence[ReviewRow]) -> dict[str, float]:
    """Each vendor org's open review's due time (the earliest, should a race have left two)."""
    due: dict[str, float] = {}
    for row in reviews:
        org = config.orgs.get(row.org)
        if row.completed_at is None and org is not None and org.review_interval_days:
            due[row.org] = min(row.due_at, due.get(row.org, row.due_at))
    return due


def _activity(rows: Sequence[PrincipalRow]) -> dict[str, float]:
    return {
        row.name: row.last_active_at if row.last_active_at is not None else row.created_at
        for row in rows
    }


def build_snapshot(
    *,
    epoch: int,
    config: BastionConfig,
    principals: Sequence[PrincipalRow],
    device_keys: Sequence[DeviceKeyRow],
    locks: Sequence[LockRow],
    env: Mapping[str, str],
    grants: Sequence[GrantRow] = (),
    reviews: Sequence[ReviewRow] = (),
    policy_text: tuple[str, str] | None = None,
    signals: Signals = NO_SIGNALS,
) -> Snapshot:
    """Build a snapshot from the config and rows read from the store (pure; raises on error)."""
    schema_text, policies = policy_text or load_policy_text()
    facts = _principal_facts(config, principals)
    return Snapshot(
        epoch=epoch,
        config=config,
        models=_routes(config, env),
        principals=facts,
        device_keys={
            key.jkt: (key.principal, key.public_jwk)
            for key in device_keys
            if key.revoked_at is None and key.principal in facts
        },
        locks=_lock_index(locks),
        cedar=build_cedar(schema_text, policies, _entities(config, facts)),
        over_seats=_over_seats(config, facts, principals),
        grants=_grant_index(grants),
        review_due=_review_due(config, reviews),
        activity=_activity(principals),
        dormant_after=(
            config.lifecycle.dormant_after_days * 86400.0
            if config.lifecycle.dormant_after_days is not None
            else None
        ),
        signals=signals,
    )

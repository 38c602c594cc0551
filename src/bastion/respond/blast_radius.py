"""An incident's blast radius: what the implicated principals reached, and what they still can.

From the audit log (the same pass as the timeline): the models and compartments their allowed
requests touched, how many requests were served and denied, the output tokens served, and the
other principals seen on the same device keys or source networks. From the store, as of now:
their token families that can still call, and the grants they hold (time-bound ones from access
requests and standing ones from bastion.yaml).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from bastion.config import BastionConfig
from bastion.store import access as access_rows
from bastion.store import locks as lock_rows
from bastion.store import principals as principal_rows
from bastion.store import tokens as token_rows

from .entities import Implicated, network_of

MAX_LISTED = 500  # other principals, families, grants: a blast radius is read by a person


@dataclass(frozen=True, slots=True)
class ModelUse:
    model: str
    compartment: str
    requests: int  # allowed
    tokens_out: int


@dataclass(frozen=True, slots=True)
class SharedUse:
    """Another principal seen on the incident's infrastructure, and on which part of it."""

    principal: str
    via: tuple[str, ...]  # "key <thumbprint>", "network <cidr>"


@dataclass(frozen=True, slots=True)
class LiveFamily:
    id: str
    principal: str
    jkt: str
    created_at: float
    locked: bool = False  # a lock on the family holds: its tokens are refused until released


@dataclass(frozen=True, slots=True)
class GrantHeld:
    principal: str
    compartment: str
    kind: str  # standing | time-bound
    via: str  # "principal", "org <name>" (standing) or the grant id (time-bound)
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class BlastRadius:
    since: float
    until: float
    models: tuple[ModelUse, ...]
    compartments: tuple[str, ...]
    requests_served: int
    requests_denied: int
    tokens_out: int
    shared_infrastructure: tuple[SharedUse, ...]
    live_families: tuple[LiveFamily, ...]
    grants: tuple[GrantHeld, ...]
    partial: bool = False  # the audit log window was not read in full

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Tally:
    """A timeline visitor counting what the implicated principals did in the window."""

    def __init__(self, entities: Implicated) -> None:
        self._entities = entities
        self._requests: Counter[tuple[str, str]] = Counter()
        self._tokens: Counter[tuple[str, str]] = Counter()
        self.denied = 0
        self._shared: defaultdict[str, set[str]] = defaultdict(set)

    def __call__(
        self, idx: int, event_id: str, time: float, name: str, record: Mapping[str, Any]
    ) -> None:
        if name != "request.decided" and not name.startswith("token."):
            return
        principal = record.get("principal")
        if not isinstance(principal, str) or not principal:
            return
        if principal not in self._entities.principals:
            self._other(principal, record)
        elif name == "request.decided":
            self._request(record)

    def _request(self, record: Mapping[str, Any]) -> None:
        if not record.get("allowed"):
            self.denied += 1
            return
        model, compartment = record.get("model"), record.get("compartment")
        key = (model if isinstance(model, str) else "-", _or_dash(compartment))
        self._requests[key] += 1
        tokens = record.get("tokens_out")
        if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens > 0:
            self._tokens[key] += tokens

    def _other(self, principal: str, record: Mapping[str, Any]) -> None:
        """Someone else on an implicated device key or source network."""
        if principal not in self._shared and len(self._shared) >= MAX_LISTED:
            return
        jkt, source = record.get("jkt"), record.get("source_ip")
        if isinstance(jkt, str) and jkt in self._entities.keys:
            self._shared[principal].add(f"key {jkt}")
        network = network_of(source) if isinstance(source, str) else ""
        if network and network in self._entities.networks:
            self._shared[principal].add(f"network {network}")

    def result(
        self,
        *,
        since: float,
        until: float,
        partial: bool,
        families: Sequence[LiveFamily],
        grants: Sequence[GrantHeld],
    ) -> BlastRadius:
        models = tuple(
            ModelUse(model, compartment, count, self._tokens[(model, compartment)])
            for (model, compartment), count in sorted(self._requests.items())
        )
        return BlastRadius(
            since=since,
            until=until,
            models=models,
            compartments=tuple(sorted({use.compartment for use in models})),
            requests_served=sum(self._requests.values()),
            requests_denied=self.denied,
            tokens_out=sum(self._tokens.values()),
            shared_infrastructure=tuple(
                SharedUse(principal, tuple(sorted(via)))
                for principal, via in sorted(self._shared.items())
                if via
            ),
            live_families=tuple(families),
            grants=tuple(grants),
            partial=partial,
        )


def _or_dash(value: object) -> str:
    return value if isinstance(value, str) and value else "-"


def live_families(
    conn: sa.Connection, principals: frozenset[str], now: float, access_ttl: float
) -> list[LiveFamily]:
    rows = token_rows.unexpired_families(
        conn, sorted(principals), now, access_ttl, limit=MAX_LISTED
    )
    locked = {lock.target for lock in lock_rows.active(conn, now) if lock.target_type == "family"}
    return [
        LiveFamily(row.id, row.principal, row.jkt, row.created_at, row.id in locked) for row in rows
    ]


def grants_held(
    conn: sa.Connection,
    principals: frozenset[str],
    now: float,
    config: Callable[[], BastionConfig | None],
) -> list[GrantHeld]:
    """Time-bound grants in force, then the standing grants of the current configuration
    (to the principal, or to its org)."""
    held = [
        GrantHeld(g.principal, g.compartment, "time-bound", g.id, g.expires_at)
        for g in access_rows.active_grants(conn, now)
        if g.principal in principals
    ]
    current = config()
    if current is not None:
        for principal in sorted(principals):
            held += _standing(conn, current, principal)
    return held[:MAX_LISTED]


def _standing(conn: sa.Connection, config: BastionConfig, principal: str) -> list[GrantHeld]:
    declared = config.principals.get(principal)
    if declared is not None:
        org: str | None = declared.org
    else:
        row = principal_rows.get(conn, principal)
        org = row.org if row is not None else None
    held = []
    for name, compartment in sorted(config.compartments.items()):
        if principal in compartment.grants.principals:
            held.append(GrantHeld(principal, name, "standing", "principal", None))
        elif org is not None and org in compartment.grants.orgs:
            held.append(GrantHeld(principal, name, "standing", f"org {org}", None))
    return held

"""Incidents: findings about the same entity or campaign, grouped, with a status and an owner.

The response service hands each finding it acts on to :meth:`IncidentService.attach`, inside its
own transaction, so a finding, the incident it joins and the actions taken on it commit together.
A finding joins the most recently updated incident that is not resolved, was updated within
``group_window`` and implicates the same principal, token family, device key or source network;
findings about a whole org (D7, D12) also group by org — others never do, or every finding about
one vendor would become one incident. Otherwise it opens a new incident.

What a responder reads — the timeline and the blast radius — is assembled from the audit log and
the store on request (:meth:`IncidentService.detail`), from ``lookback`` seconds before the first
signal to now. Every change is an ``admin.action`` audit event in the same transaction.
"""

from __future__ import annotations

import builtins
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from bastion.audit.events import AdminAction
from bastion.audit.log import AuditLog
from bastion.config import BastionConfig
from bastion.detect.findings import Finding
from bastion.errors import BadRequest, Conflict, NotFound
from bastion.identity.access_tokens import MAX_TTL as MAX_ACCESS_TTL
from bastion.store import Store
from bastion.store import actions as action_rows
from bastion.store import findings as finding_rows
from bastion.store import incidents as incident_rows
from bastion.store.actions import ActionRow
from bastion.store.incidents import STATUSES, IncidentRow

from .blast_radius import BlastRadius, Tally, grants_held, live_families
from .entities import KINDS, Implicated
from .timeline import Scope, Timeline, TimelineBuilder, read_window

ACTOR = "bastion:response"
MAX_TITLE = 300
MAX_REASON = 1000
MAX_ENTITIES = 200  # per kind, after merging: an incident stays readable and cheap to match
MAX_FINDINGS = 1000
_OWNER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")


def incident_dict(row: IncidentRow) -> dict[str, Any]:
    """An incident as JSON-ready values (the API's and ``--json``'s shape)."""
    data = _fields(row)
    data["severity"] = str(row.severity)
    data["entities"] = row.entities.as_dict()
    return data


@dataclass(frozen=True, slots=True)
class IncidentDetail:
    incident: IncidentRow
    findings: tuple[Finding, ...]
    actions: tuple[ActionRow, ...]  # oldest first
    timeline: Timeline
    blast_radius: BlastRadius

    def as_dict(self) -> dict[str, Any]:
        return {
            "incident": incident_dict(self.incident),
            "findings": [{**asdict(f), "severity": str(f.severity)} for f in self.findings],
            "actions": [asdict(action) for action in self.actions],
            "timeline": self.timeline.as_dict(),
            "blast_radius": self.blast_radius.as_dict(),
        }


class IncidentService:
    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        clock: Callable[[], float] = time.time,
        lookback: float = 3600.0,
        group_window: float = 86400.0,
        *,
        config: Callable[[], BastionConfig | None] = lambda: None,
        access_ttl: float = MAX_ACCESS_TTL,
    ) -> None:
        """``config`` gives the current configuration (for standing grants; None: time-bound
        grants only); ``access_ttl`` is how long an access token may outlive its issuing."""
        self._store = store
        self._audit = audit
        self._clock = clock
        self._lookback = lookback
        self._group_window = group_window
        self._config = config
        self._access_ttl = access_ttl

    # -- grouping (inside the response service's transaction) ---------------------------------

    def attach(
        self, conn: sa.Connection, finding: Finding, implicated: Implicated, now: float
    ) -> tuple[IncidentRow, bool]:
        """The incident this finding belongs to, joining or opening one; True if opened."""
        existing = incident_rows.incident_of_finding(conn, finding.id)
        if existing is not None:
            row = incident_rows.get(conn, existing)
            if row is not None:
                return row, False
        by_org = finding.entity_type == "org"
        by_network = finding.entity_type == "network"
        for candidate in incident_rows.open_incidents(conn, updated_since=now - self._group_window):
            if implicated.overlaps(candidate.entities, orgs=by_org, networks=by_network):
                return self._join(conn, candidate, finding, implicated, now), False
        return self._open(conn, finding, implicated, now), True

    def _join(
        self,
        conn: sa.Connection,
        row: IncidentRow,
        finding: Finding,
        implicated: Implicated,
        now: float,
    ) -> IncidentRow:
        severity = max(row.severity, finding.severity, key=lambda s: s.rank)
        values: dict[str, Any] = {
            "entities": _merge(row.entities, implicated),
            "severity": severity,
            "first_signal_at": min(row.first_signal_at, finding.first_seen),
            "updated_at": now,
        }
        incident_rows.update(conn, row.id, **values)
        incident_rows.add_finding(conn, row.id, finding.id, now)
        self._audit.append(conn, [_event("incident.finding_added", row.id, finding, now)])
        return IncidentRow(**{**_fields(row), **values})

    def _open(
        self, conn: sa.Connection, finding: Finding, implicated: Implicated, now: float
    ) -> IncidentRow:
        row = IncidentRow(
            id="in_" + secrets.token_hex(8),
            title=title_of(finding),
            severity=finding.severity,
            status="open",
            owner=None,
            entities=implicated,
            opened_at=now,
            first_signal_at=min(finding.first_seen, now),
            updated_at=now,
        )
        incident_rows.insert(conn, row)
        incident_rows.add_finding(conn, row.id, finding.id, now)
        self._audit.append(conn, [_event("incident.opened", row.id, finding, now)])
        return row

    def contained(
        self, conn: sa.Connection, incident_id: str, now: float, *, by: str = ACTOR
    ) -> None:
        """An open incident is contained (an action stopped it); any other stays as it is."""
        row = self._require(conn, incident_id)
        if row.status != "open":
            return
        incident_rows.update(conn, row.id, status="contained", contained_at=now, updated_at=now)
        event = AdminAction(
            actor=by,
            time=now,
            action="incident.contained",
            target_type="incident",
            target=row.id,
        )
        self._audit.append(conn, [event])

    # -- people's changes -----------------------------------------------------------------------

    def contain(self, incident_id: str, *, by: str) -> None:
        """A person's lock or revocation stopped it (the console's buttons): open → contained,
        audited with their name; an incident already contained or resolved stays as it is."""
        with self._store.begin() as conn:
            self.contained(conn, incident_id, self._clock(), by=by)

    def resolve(self, incident_id: str, *, by: str, reason: str) -> IncidentRow:
        reason = reason.strip()
        if not reason or len(reason) > MAX_REASON:
            raise BadRequest(
                f"resolving an incident needs a reason of 1 to {MAX_REASON} characters"
            )
        now = self._clock()
        with self._store.begin() as conn:
            row = self._require(conn, incident_id)
            changed = incident_rows.update(
                conn,
                row.id,
                unless_status="resolved",
                status="resolved",
                resolved_at=now,
                resolved_by=by[:128],
                resolution=reason,
                updated_at=now,
            )
            if not changed:
                raise Conflict(f"incident {row.id} is already resolved")
            event = AdminAction(
                actor=by,
                time=now,
                action="incident.resolved",
                target_type="incident",
                target=row.id,
                reason=reason,
                detail={"status": row.status},
            )
            self._audit.append(conn, [event])
            return self._require(conn, row.id)

    def assign(self, incident_id: str, *, owner: str, by: str) -> IncidentRow:
        if not _OWNER.fullmatch(owner):
            raise BadRequest(
                "an owner is a name of 1 to 128 letters, digits, '.', '_', '@' or '-' "
                "(e.g. a principal's name)"
            )
        now = self._clock()
        with self._store.begin() as conn:
            row = self._require(conn, incident_id)
            incident_rows.update(conn, row.id, owner=owner, updated_at=now)
            event = AdminAction(
                actor=by,
                time=now,
                action="incident.assigned",
                target_type="incident",
                target=row.id,
                detail={"owner": owner, "previous": row.owner},
            )
            self._audit.append(conn, [event])
            return self._require(conn, row.id)

    # -- reading --------------------------------------------------------------------------------

    def get(self, incident_id: str) -> IncidentRow:
        with self._store.read() as conn:
            return self._require(conn, incident_id)

    def detail(self, incident_id: str) -> IncidentDetail:
        """The incident with its findings, actions, timeline and blast radius as of now."""
        now = self._clock()
        with self._store.read() as conn:
            row = self._require(conn, incident_id)
            finding_ids = incident_rows.findings_of(conn, row.id, limit=MAX_FINDINGS)
            found = (finding_rows.get(conn, fid) for fid in finding_ids)
            findings = sorted((f for f in found if f), key=lambda f: (f.first_seen, f.id))
            actions = action_rows.of_incidents(conn, [row.id])
            scope = Scope(
                row.entities,
                row.id,
                findings=frozenset(finding_ids),
                actions=frozenset(action.id for action in actions),
                locks=frozenset(action.lock for action in actions if action.lock),
            )
            since = row.first_signal_at - self._lookback
            builder, tally = TimelineBuilder(scope), Tally(row.entities)
            window = read_window(conn, since, now, [builder, tally])
            principals = row.entities.principals
            blast = tally.result(
                since=since,
                until=now,
                partial=window.unscanned is not None,
                families=live_families(conn, principals, now, self._access_ttl),
                grants=grants_held(conn, principals, now, self._config),
            )
        return IncidentDetail(row, tuple(findings), tuple(actions), builder.timeline(window), blast)

    def _require(self, conn: sa.Connection, incident_id: str) -> IncidentRow:
        row = incident_rows.get(conn, incident_id)
        if row is None:
            raise NotFound(f"no incident {incident_id[:40]!r}")
        return row

    def list(self, status: str | None = None, limit: int = 100) -> builtins.list[IncidentRow]:
        """Incidents newest first, optionally in one status."""
        if status is not None and status not in STATUSES:
            raise BadRequest(f"unknown incident status {status[:20]!r}: use {', '.join(STATUSES)}")
        if not 1 <= limit <= 1000:
            raise BadRequest("limit must be between 1 and 1000")
        with self._store.read() as conn:
            return incident_rows.query(conn, status=status, limit=limit)


def title_of(finding: Finding) -> str:
    """E.g. "D2 on family fam_x: token family fam_x used from two networks" (one line)."""
    text = f"{finding.detection} on {finding.entity_type} {finding.entity}: {finding.explanation}"
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    return text if len(text) <= MAX_TITLE else text[: MAX_TITLE - 1] + "…"


def _merge(old: Implicated, new: Implicated) -> Implicated:
    """Both sets of entities, each kind kept to :data:`MAX_ENTITIES` (the first ones stay)."""
    merged: dict[str, frozenset[str]] = {}
    for kind in KINDS:
        mine, theirs = getattr(old, kind), getattr(new, kind)
        room = max(0, MAX_ENTITIES - len(mine))
        merged[kind] = mine | frozenset(sorted(theirs - mine)[:room])
    return Implicated(**merged)


def _fields(row: IncidentRow) -> dict[str, Any]:
    return {name: getattr(row, name) for name in IncidentRow.__slots__}


def _event(action: str, incident: str, finding: Finding, now: float) -> AdminAction:
    return AdminAction(
        actor=ACTOR,
        time=now,
        action=action,
        target_type="incident",
        target=incident,
        detail={
            "finding": finding.id,
            "detection": finding.detection,
            "severity": str(finding.severity),
        },
    )

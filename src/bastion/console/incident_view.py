"""What the incident pages show, as plain values for the templates: an incident's summary, and
its detail (findings, actions, timeline, blast radius, the targets its forms offer and the locks
on what it names). Pure functions of the incident service's answer; the pages are in
``incidents.py``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from bastion.respond.incidents import MAX_REASON as MAX_RESOLUTION
from bastion.respond.incidents import IncidentDetail
from bastion.store.incidents import IncidentRow
from bastion.store.locks import LockRow
from bastion.timefmt import relative, when

from .guard import PREFIX

MAX_REASON = 500  # a lock's, a release's and a revocation's reason (LockService's bound)
# What each kind of implicated entity may be locked as (the incident's entity set -> lock type).
LOCKABLE = {
    "principal": "principals",
    "org": "orgs",
    "family": "families",
    "key": "keys",
    "network": "networks",
}


def audit_link(event_id: str) -> str:
    """The Audit page's view of one event (the page's only contract with it)."""
    return f"{PREFIX}/audit/events/{quote(event_id, safe='')}"


@dataclass(frozen=True, slots=True)
class Target:
    """Something the incident implicates, as the forms offer it."""

    kind: str
    value: str

    @property
    def field(self) -> str:
        return f"{self.kind}:{self.value}"

    @property
    def label(self) -> str:
        return f"{self.kind} {self.value}"


def summary(row: IncidentRow) -> dict[str, Any]:
    entities = row.entities
    return {
        "id": row.id,
        "title": row.title,
        "severity": str(row.severity),
        "status": row.status,
        "owner": row.owner or "-",
        "opened": when(row.opened_at),
        "principals": sorted(entities.principals),
        "orgs": sorted(entities.orgs),
    }


def revocable(detail: IncidentDetail) -> dict[str, list[str]]:
    """Token families (implicated, or still live for an implicated principal) and device keys
    a responder may revoke from this incident."""
    entities = detail.incident.entities
    live = [family.id for family in detail.blast_radius.live_families]
    return {
        "family": sorted(set(entities.families) | set(live)),
        "key": sorted(entities.keys),
    }


def detail_context(detail: IncidentDetail, locks: list[LockRow]) -> dict[str, Any]:
    """Everything the detail page shows; ``locks`` are the active locks on what it names."""
    row = detail.incident
    return {
        "incident": {
            **summary(row),
            "first_signal": when(row.first_signal_at),
            "contained": when(row.contained_at),
            "resolved": when(row.resolved_at),
            "resolved_by": row.resolved_by or "-",
            "resolution": row.resolution or "",
            "entities": [(kind, values) for kind, values in row.entities.as_dict().items()],
        },
        "findings": _findings(detail),
        "actions": _actions(detail),
        "timeline": _timeline(detail),
        "blast": _blast(detail),
        "lockable": [
            Target(kind, value)
            for kind, attr in LOCKABLE.items()
            for value in sorted(getattr(row.entities, attr))
        ],
        "revocable": [
            Target(kind, value) for kind, values in revocable(detail).items() for value in values
        ],
        "locks": [
            {
                "id": lock.id,
                "target": f"{lock.target_type} {lock.target}",
                "reason": lock.reason,
                "author": lock.author,
                "since": when(lock.created_at),
                "expires": when(lock.expires_at),
            }
            for lock in locks
        ],
        "max_reason": MAX_REASON,
        "max_resolution": MAX_RESOLUTION,
    }


def _findings(detail: IncidentDetail) -> list[dict[str, Any]]:
    signal = detail.incident.first_signal_at
    return [
        {
            "id": f.id,
            "detection": f.detection,
            "severity": str(f.severity),
            "entity": f"{f.entity_type} {f.entity}",
            "seen": f"{relative(f.first_seen - signal)}, {f.count}x",
            "explanation": f.explanation,
            "techniques": ", ".join(f.techniques),
            "evidence": [(event, audit_link(event)) for event in f.evidence],
        }
        for f in detail.findings
    ]


def _actions(detail: IncidentDetail) -> list[dict[str, Any]]:
    signal = detail.incident.first_signal_at
    return [
        {
            "id": a.id,
            "action": a.action,
            "target": f"{a.target_type} {a.target}".strip(),
            "status": f"{a.status} ({a.mode})",
            "when": relative(a.created_at - signal),
            "by": a.author,
            "finding": a.finding or "",
            "locks": [str(lock) for lock in a.detail.get("locks", [])],
        }
        for a in detail.actions
    ]


def _timeline(detail: IncidentDetail) -> dict[str, Any]:
    signal = detail.incident.first_signal_at
    timeline = detail.timeline
    return {
        "matched": timeline.matched,
        "note": timeline.note,
        "start": when(timeline.start),
        "entries": [
            {
                "when": relative(e.time - signal),
                "time": when(e.time),
                "kind": e.kind,
                "summary": e.summary,
                "link": audit_link(e.id),
                "id": e.id,
            }
            for e in timeline.entries
        ],
    }


def _blast(detail: IncidentDetail) -> dict[str, Any]:
    blast = detail.blast_radius
    return {
        "since": when(blast.since),
        "partial": blast.partial,
        "served": blast.requests_served,
        "denied": blast.requests_denied,
        "tokens_out": blast.tokens_out,
        "models": blast.models,
        "compartments": blast.compartments,
        "shared": [(s.principal, ", ".join(s.via)) for s in blast.shared_infrastructure],
        "families": [
            (f.id, f.principal, when(f.created_at) + (", locked" if f.locked else ""))
            for f in blast.live_families
        ],
        "families_locked": sum(1 for f in blast.live_families if f.locked),
        "grants": [
            (g.principal, g.compartment, g.kind, g.via, when(g.expires_at)) for g in blast.grants
        ],
    }

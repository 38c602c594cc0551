"""Incidents and the findings grouped into them.

An incident row keeps what is decided about it (status, owner, resolution) and the entities it
implicates; its timeline and blast radius are read from the audit log when asked for, so they
are never stale and never a second copy of the evidence.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from bastion.detect.findings import Severity
from bastion.respond.entities import Implicated
from bastion.store.tables import incident_findings, incidents

STATUSES = ("open", "contained", "resolved")


@dataclass(frozen=True, slots=True)
class IncidentRow:
    id: str
    title: str
    severity: Severity
    status: str  # open | contained | resolved
    owner: str | None
    entities: Implicated
    opened_at: float
    first_signal_at: float
    updated_at: float
    contained_at: float | None = None
    resolved_at: float | None = None
    resolved_by: str | None = None
    resolution: str | None = None


def _values(values: dict[str, Any]) -> dict[str, Any]:
    """Column values: entities as JSON, severity as its name."""
    out = dict(values)
    if "entities" in out:
        out["entities"] = json.dumps(out["entities"].as_dict(), sort_keys=True)
    if "severity" in out:
        out["severity"] = str(out["severity"])
    return out


def _row(row: sa.Row[Any]) -> IncidentRow:
    data = dict(row._mapping)
    data["entities"] = Implicated.from_dict(json.loads(data["entities"]))
    data["severity"] = Severity(data["severity"])
    return IncidentRow(**data)


def insert(conn: sa.Connection, row: IncidentRow) -> None:
    values = {name: getattr(row, name) for name in IncidentRow.__slots__}
    values["title"] = row.title[:300]
    conn.execute(incidents.insert().values(**_values(values)))


def get(conn: sa.Connection, incident_id: str) -> IncidentRow | None:
    row = conn.execute(sa.select(incidents).where(incidents.c.id == incident_id)).first()
    return _row(row) if row else None


def update(
    conn: sa.Connection, incident_id: str, *, unless_status: str | None = None, **values: Any
) -> bool:
    """Change an incident; with ``unless_status``, only if it is not in that status (so two
    people resolving at once cannot both succeed). Returns whether a row changed."""
    statement = incidents.update().where(incidents.c.id == incident_id)
    if unless_status is not None:
        statement = statement.where(incidents.c.status != unless_status)
    return conn.execute(statement.values(_values(values))).rowcount > 0


def query(
    conn: sa.Connection,
    *,
    status: str | None = None,
    since: float | None = None,
    limit: int = 100,
) -> list[IncidentRow]:
    """Newest first (by when they were opened)."""
    statement = sa.select(incidents).order_by(incidents.c.opened_at.desc()).limit(limit)
    if status is not None:
        statement = statement.where(incidents.c.status == status)
    if since is not None:
        statement = statement.where(incidents.c.opened_at >= since)
    return [_row(row) for row in conn.execute(statement)]


def open_incidents(conn: sa.Connection, *, updated_since: float | None = None) -> list[IncidentRow]:
    """Incidents not resolved yet, most recently updated first."""
    statement = (
        sa.select(incidents)
        .where(incidents.c.status != "resolved")
        .order_by(incidents.c.updated_at.desc())
    )
    if updated_since is not None:
        statement = statement.where(incidents.c.updated_at >= updated_since)
    return [_row(row) for row in conn.execute(statement)]


def add_finding(conn: sa.Connection, incident: str, finding: str, now: float) -> bool:
    """Group a finding into an incident; False if it already was (nothing changes)."""
    present = conn.execute(
        sa.select(incident_findings.c.finding).where(
            incident_findings.c.incident == incident, incident_findings.c.finding == finding
        )
    ).first()
    if present is not None:
        return False
    conn.execute(
        incident_findings.insert().values(incident=incident, finding=finding, added_at=now)
    )
    return True


def findings_of(conn: sa.Connection, incident: str, limit: int = 1000) -> list[str]:
    """The incident's finding ids, in the order they were added."""
    rows = conn.execute(
        sa.select(incident_findings.c.finding)
        .where(incident_findings.c.incident == incident)
        .order_by(incident_findings.c.added_at, incident_findings.c.finding)
        .limit(limit)
    )
    return [str(row.finding) for row in rows]


def incident_of_finding(conn: sa.Connection, finding: str) -> str | None:
    row = conn.execute(
        sa.select(incident_findings.c.incident)
        .where(incident_findings.c.finding == finding)
        .order_by(incident_findings.c.added_at)
        .limit(1)
    ).first()
    return str(row.incident) if row else None

"""Findings and the detection engine's saved state."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from bastion.detect.findings import Finding, Severity
from bastion.store.tables import detector_state, findings


def _row(finding: Finding) -> dict[str, Any]:
    return {
        "id": finding.id,
        "detection": finding.detection,
        "severity": str(finding.severity),
        "confidence": finding.confidence,
        "techniques": json.dumps(list(finding.techniques)),
        "entity_type": finding.entity_type,
        "entity": finding.entity[:200],
        "principal": finding.principal[:64],
        "org": finding.org[:64],
        "explanation": finding.explanation[:1000],
        "evidence": json.dumps(list(finding.evidence)),
        "first_seen": finding.first_seen,
        "last_seen": finding.last_seen,
        "count": finding.count,
        "status": finding.status,
    }


def _finding(row: sa.Row[Any]) -> Finding:
    m = row._mapping
    return Finding(
        id=m["id"],
        detection=m["detection"],
        severity=Severity(m["severity"]),
        confidence=m["confidence"],
        techniques=tuple(json.loads(m["techniques"])),
        entity_type=m["entity_type"],
        entity=m["entity"],
        principal=m["principal"],
        org=m["org"],
        explanation=m["explanation"],
        evidence=tuple(json.loads(m["evidence"])),
        first_seen=m["first_seen"],
        last_seen=m["last_seen"],
        count=m["count"],
        status=m["status"],
    )


def upsert(conn: sa.Connection, batch: Sequence[Finding]) -> None:
    """Insert new findings and update the ones seen again (the last version of each id wins)."""
    latest = {finding.id: finding for finding in batch}
    if not latest:
        return
    existing = {
        row.id
        for row in conn.execute(sa.select(findings.c.id).where(findings.c.id.in_(list(latest))))
    }
    new = [_row(f) for i, f in latest.items() if i not in existing]
    if new:
        conn.execute(findings.insert(), new)
    for finding_id in existing:
        row = _row(latest[finding_id])
        del row["id"]
        conn.execute(findings.update().where(findings.c.id == finding_id).values(**row))


def query(
    conn: sa.Connection,
    *,
    since: float | None = None,
    detection: str | None = None,
    principal: str | None = None,
    status: str | None = None,
    limit: int = 100,
) -> list[Finding]:
    statement = sa.select(findings).order_by(findings.c.last_seen.desc()).limit(limit)
    if since is not None:
        statement = statement.where(findings.c.last_seen >= since)
    if detection:
        statement = statement.where(findings.c.detection == detection)
    if principal:
        statement = statement.where(findings.c.principal == principal)
    if status:
        statement = statement.where(findings.c.status == status)
    return [_finding(row) for row in conn.execute(statement)]


def get(conn: sa.Connection, finding_id: str) -> Finding | None:
    row = conn.execute(sa.select(findings).where(findings.c.id == finding_id)).first()
    return _finding(row) if row else None


def load_state(conn: sa.Connection, key: str) -> Any | None:
    row = conn.execute(sa.select(detector_state.c.data).where(detector_state.c.key == key)).first()
    return json.loads(row.data) if row else None


def save_state(conn: sa.Connection, key: str, data: Any, now: float) -> None:
    text = json.dumps(data, separators=(",", ":"))
    updated = conn.execute(
        detector_state.update().where(detector_state.c.key == key).values(data=text, saved_at=now)
    ).rowcount
    if not updated:
        conn.execute(detector_state.insert().values(key=key, data=text, saved_at=now))

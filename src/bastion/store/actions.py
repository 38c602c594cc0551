"""Response actions: what Bastion did (or would have done) to contain a finding, and undos."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from bastion.store.tables import response_actions


@dataclass(frozen=True, slots=True)
class ActionRow:
    id: str
    action: str  # step_up | throttle | revoke_family | suspend_principal | suspend_org | ...
    target_type: str  # principal | org | family | key | network | compartment | webhook
    target: str
    mode: str  # enforce | dry-run
    status: str  # done | dry_run | pending_approval | rate_limited | skipped | failed | undone
    playbook: str  # "" for a manual action
    finding: str | None
    incident: str | None
    author: str
    reason: str
    created_at: float
    detail: dict[str, Any] = field(default_factory=dict)
    lock: str | None = None
    executed_at: float | None = None
    undone_at: float | None = None
    undone_by: str | None = None


def insert(conn: sa.Connection, row: ActionRow) -> None:
    values = {name: getattr(row, name) for name in ActionRow.__slots__}
    values["detail"] = json.dumps(row.detail, sort_keys=True)
    values["target"] = row.target[:128]
    values["reason"] = row.reason[:500]
    conn.execute(response_actions.insert().values(**values))


def update(conn: sa.Connection, action_id: str, **values: Any) -> None:
    if "detail" in values:
        values["detail"] = json.dumps(values["detail"], sort_keys=True)
    conn.execute(response_actions.update().where(response_actions.c.id == action_id).values(values))


def _row(row: sa.Row[Any]) -> ActionRow:
    data = dict(row._mapping)
    data["detail"] = json.loads(data["detail"])
    return ActionRow(**data)


def get(conn: sa.Connection, action_id: str) -> ActionRow | None:
    row = conn.execute(
        sa.select(response_actions).where(response_actions.c.id == action_id)
    ).first()
    return _row(row) if row else None


def query(
    conn: sa.Connection,
    *,
    status: str | None = None,
    finding: str | None = None,
    incident: str | None = None,
    since: float | None = None,
    limit: int = 100,
) -> list[ActionRow]:
    """Newest first."""
    q = sa.select(response_actions).order_by(response_actions.c.created_at.desc()).limit(limit)
    if status is not None:
        q = q.where(response_actions.c.status == status)
    if finding is not None:
        q = q.where(response_actions.c.finding == finding)
    if incident is not None:
        q = q.where(response_actions.c.incident == incident)
    if since is not None:
        q = q.where(response_actions.c.created_at >= since)
    return [_row(row) for row in conn.execute(q)]


def of_incidents(conn: sa.Connection, incidents: Sequence[str]) -> list[ActionRow]:
    """Every action of these incidents, oldest first."""
    if not incidents:
        return []
    q = (
        sa.select(response_actions)
        .where(response_actions.c.incident.in_(list(incidents)))
        .order_by(response_actions.c.created_at)
    )
    return [_row(row) for row in conn.execute(q)]

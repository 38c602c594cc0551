"""Audit events as persisted rows: sequence number, id, name, time and the canonical JSON body."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from bastion.store.tables import audit_events


@dataclass(frozen=True, slots=True)
class EventRow:
    seq: int
    id: str
    name: str
    time: float
    body: str


def append(conn: sa.Connection, rows: Sequence[tuple[str, str, float, str]]) -> None:
    """Append (id, name, time, body) tuples in order, in the caller's transaction."""
    if rows:
        conn.execute(
            audit_events.insert(),
            [{"id": i, "name": n, "time": t, "body": b} for i, n, t, b in rows],
        )


def after(conn: sa.Connection, seq: int, limit: int = 500) -> list[EventRow]:
    rows = conn.execute(
        sa.select(audit_events)
        .where(audit_events.c.seq > seq)
        .order_by(audit_events.c.seq)
        .limit(limit)
    )
    return [EventRow(**row._mapping) for row in rows]


def last(conn: sa.Connection, count: int, name_prefix: str | None = None) -> list[EventRow]:
    query = sa.select(audit_events).order_by(audit_events.c.seq.desc()).limit(count)
    if name_prefix:
        query = query.where(audit_events.c.name.startswith(name_prefix))
    rows = list(conn.execute(query))
    return [EventRow(**row._mapping) for row in reversed(rows)]


def count(conn: sa.Connection) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(audit_events)).scalar_one())

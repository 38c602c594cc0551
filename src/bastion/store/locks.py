"""Locks: active containments on a target, with reason, author and optional expiry."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from bastion.store.tables import locks


@dataclass(frozen=True, slots=True)
class LockRow:
    id: str
    target_type: str
    target: str
    reason: str
    author: str
    created_at: float
    expires_at: float | None
    released_at: float | None
    released_by: str | None
    rate: float | None = None  # throttle locks: requests per minute allowed while it holds


def insert(conn: sa.Connection, row: LockRow) -> None:
    conn.execute(
        locks.insert().values(
            id=row.id,
            target_type=row.target_type,
            target=row.target,
            reason=row.reason,
            author=row.author,
            created_at=row.created_at,
            expires_at=row.expires_at,
            rate=row.rate,
        )
    )


def active(conn: sa.Connection, now: float) -> list[LockRow]:
    rows = conn.execute(
        sa.select(locks)
        .where(
            locks.c.released_at.is_(None),
            sa.or_(locks.c.expires_at.is_(None), locks.c.expires_at > now),
        )
        .order_by(locks.c.created_at)
    )
    return [LockRow(**row._mapping) for row in rows]


def release(
    conn: sa.Connection, target_type: str, target: str, by: str, now: float
) -> list[LockRow]:
    """Release every active lock on the target; returns what was released."""
    current = [
        lock
        for lock in active(conn, now)
        if (lock.target_type, lock.target) == (target_type, target)
    ]
    if current:
        conn.execute(
            locks.update()
            .where(locks.c.id.in_([lock.id for lock in current]))
            .values(released_at=now, released_by=by)
        )
    return current


def release_one(conn: sa.Connection, lock_id: str, by: str, now: float) -> LockRow | None:
    """Release one active lock by id; returns it, or None if no such lock is active."""
    row = conn.execute(
        sa.select(locks).where(
            locks.c.id == lock_id,
            locks.c.released_at.is_(None),
            sa.or_(locks.c.expires_at.is_(None), locks.c.expires_at > now),
        )
    ).first()
    if row is None:
        return None
    conn.execute(
        locks.update().where(locks.c.id == lock_id).values(released_at=now, released_by=by)
    )
    return LockRow(**row._mapping)

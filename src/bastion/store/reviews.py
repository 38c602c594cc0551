"""Access reviews and their per-principal decisions; the lifecycle sweep's lock and memory.

A review is open while ``completed_at`` is None; the sweep keeps at most one open per vendor org.
Sweeps in several processes serialize on ``take_sweep_lock`` (a row of the ``state`` table), so
"is one open already?" and "was this dormancy already recorded?" are answered race-free.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bastion.store.tables import audit_events, review_decisions, reviews, state

SWEEP_KEY = "lifecycle_sweep"
DISABLED_EVENT = "principal.disabled"


@dataclass(frozen=True, slots=True)
class ReviewRow:
    id: str
    org: str
    opened_at: float
    due_at: float
    completed_at: float | None
    completed_by: str | None

    @property
    def open(self) -> bool:
        return self.completed_at is None


@dataclass(frozen=True, slots=True)
class DecisionRow:
    review: str
    principal: str
    decision: str  # keep | remove
    reason: str
    decided_by: str
    at: float


def take_sweep_lock(conn: sa.Connection) -> None:
    """Serialize sweeps for the rest of the transaction (PostgreSQL's row lock, SQLite's write
    lock). The first sweep creates the row; concurrent first sweeps do not collide on it."""
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    conn.execute(
        insert(state).values(key=SWEEP_KEY, value=0).on_conflict_do_nothing(index_elements=["key"])
    )
    conn.execute(state.update().where(state.c.key == SWEEP_KEY).values(value=state.c.value + 1))


def insert(conn: sa.Connection, row: ReviewRow) -> None:
    conn.execute(
        reviews.insert().values(
            id=row.id,
            org=row.org,
            opened_at=row.opened_at,
            due_at=row.due_at,
            completed_at=row.completed_at,
            completed_by=row.completed_by,
        )
    )


def get(conn: sa.Connection, review_id: str) -> ReviewRow | None:
    row = conn.execute(sa.select(reviews).where(reviews.c.id == review_id)).first()
    return ReviewRow(**row._mapping) if row else None


def list_reviews(conn: sa.Connection, *, open_only: bool = False) -> list[ReviewRow]:
    query = sa.select(reviews).order_by(reviews.c.opened_at, reviews.c.id)
    if open_only:
        query = query.where(reviews.c.completed_at.is_(None))
    return [ReviewRow(**row._mapping) for row in conn.execute(query)]


def open_reviews(conn: sa.Connection) -> list[ReviewRow]:
    """Every open review (what the snapshot needs: each org's due time)."""
    return list_reviews(conn, open_only=True)


def last_completed(conn: sa.Connection, org: str) -> ReviewRow | None:
    row = conn.execute(
        sa.select(reviews)
        .where(reviews.c.org == org, reviews.c.completed_at.is_not(None))
        .order_by(reviews.c.completed_at.desc())
        .limit(1)
    ).first()
    return ReviewRow(**row._mapping) if row else None


def complete(conn: sa.Connection, review_id: str, by: str, now: float) -> bool:
    """Close an open review; False if it was no longer open."""
    result = conn.execute(
        reviews.update()
        .where(reviews.c.id == review_id, reviews.c.completed_at.is_(None))
        .values(completed_at=now, completed_by=by)
    )
    return result.rowcount == 1


def add_decision(conn: sa.Connection, row: DecisionRow) -> None:
    """Record a decision; a second one for the same principal violates the primary key."""
    conn.execute(
        review_decisions.insert().values(
            review=row.review,
            principal=row.principal,
            decision=row.decision,
            reason=row.reason,
            decided_by=row.decided_by,
            at=row.at,
        )
    )


def decisions_of(conn: sa.Connection, review_id: str) -> list[DecisionRow]:
    rows = conn.execute(
        sa.select(review_decisions)
        .where(review_decisions.c.review == review_id)
        .order_by(review_decisions.c.at, review_decisions.c.principal)
    )
    return [DecisionRow(**row._mapping) for row in rows]


def disabled_since(conn: sa.Connection, since: float) -> dict[str, float]:
    """Principals with a ``principal.disabled`` event at or after ``since``: name -> latest time.

    Those events are few (one per principal per dormancy), so reading their bodies is cheap."""
    rows = conn.execute(
        sa.select(audit_events.c.time, audit_events.c.body).where(
            audit_events.c.name == DISABLED_EVENT, audit_events.c.time >= since
        )
    )
    latest: dict[str, float] = {}
    for at, body in rows:
        target = orjson.loads(body).get("target")
        if isinstance(target, str) and at > latest.get(target, float("-inf")):
            latest[target] = float(at)
    return latest


def org_of_reviews(rows: Iterable[ReviewRow]) -> dict[str, ReviewRow]:
    """Open reviews by org (at most one each; the earliest-opened wins if a race left two)."""
    by_org: dict[str, ReviewRow] = {}
    for row in rows:
        if row.open and row.org not in by_org:
            by_org[row.org] = row
    return by_org

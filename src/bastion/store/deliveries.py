"""Webhook deliveries: dead letters, kept so an operator can see (and replay) what was lost."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from bastion.store.tables import deliveries


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    webhook: str
    kind: str
    payload: dict[str, Any]
    attempts: int
    last_error: str
    created_at: float
    delivered_at: float | None
    dead_at: float | None


def add(conn: sa.Connection, delivery: Delivery) -> None:
    conn.execute(
        deliveries.insert().values(
            id=delivery.id,
            webhook=delivery.webhook[:64],
            kind=delivery.kind[:32],
            payload=json.dumps(delivery.payload, sort_keys=True),
            attempts=delivery.attempts,
            last_error=delivery.last_error[:500],
            created_at=delivery.created_at,
            delivered_at=delivery.delivered_at,
            dead_at=delivery.dead_at,
        )
    )


def dead(conn: sa.Connection, webhook: str | None = None, limit: int = 100) -> list[Delivery]:
    """Dead letters, newest first; of one webhook if named."""
    query = sa.select(deliveries).where(deliveries.c.dead_at.is_not(None))
    if webhook is not None:
        query = query.where(deliveries.c.webhook == webhook)
    rows = conn.execute(query.order_by(deliveries.c.dead_at.desc()).limit(limit))
    return [_delivery(row) for row in rows]


def _delivery(row: sa.Row[Any]) -> Delivery:
    m = row._mapping
    return Delivery(
        id=m["id"],
        webhook=m["webhook"],
        kind=m["kind"],
        payload=json.loads(m["payload"]),
        attempts=m["attempts"],
        last_error=m["last_error"],
        created_at=m["created_at"],
        delivered_at=m["delivered_at"],
        dead_at=m["dead_at"],
    )

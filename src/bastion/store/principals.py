"""Principals: users and services, each in exactly one org."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from bastion.store.tables import principals


@dataclass(frozen=True, slots=True)
class PrincipalRow:
    name: str
    kind: str
    org: str
    source: str
    disabled: bool
    created_at: float
    last_active_at: float | None = None


def get(conn: sa.Connection, name: str) -> PrincipalRow | None:
    row = conn.execute(sa.select(principals).where(principals.c.name == name)).first()
    return PrincipalRow(**row._mapping) if row else None


def list_all(conn: sa.Connection) -> list[PrincipalRow]:
    rows = conn.execute(sa.select(principals).order_by(principals.c.name))
    return [PrincipalRow(**row._mapping) for row in rows]


def insert(conn: sa.Connection, row: PrincipalRow) -> None:
    conn.execute(
        principals.insert().values(
            name=row.name,
            kind=row.kind,
            org=row.org,
            source=row.source,
            disabled=row.disabled,
            created_at=row.created_at,
        )
    )


def update(conn: sa.Connection, name: str, *, kind: str, org: str, disabled: bool) -> None:
    conn.execute(
        principals.update()
        .where(principals.c.name == name)
        .values(kind=kind, org=org, disabled=disabled)
    )


def touch(conn: sa.Connection, name: str, now: float) -> None:
    """Record activity (a token issued or refreshed): dormancy counts from the last one."""
    conn.execute(principals.update().where(principals.c.name == name).values(last_active_at=now))

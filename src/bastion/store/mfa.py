"""MFA factors: one TOTP factor per principal, its secret encrypted (see ``identity/mfa.py``).

``last_step`` only ever grows, in a conditional update, so one TOTP time step is accepted once
even when two requests race with the same code. ``failures`` counts wrong codes since the last
accepted one (the brute-force throttle).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from bastion.store.tables import mfa_factors


@dataclass(frozen=True, slots=True)
class FactorRow:
    principal: str
    secret: str  # the encrypted secret, never the secret itself
    created_at: float
    confirmed_at: float | None
    last_step: int | None
    failures: int = 0
    failed_at: float | None = None


def get(conn: sa.Connection, principal: str) -> FactorRow | None:
    row = conn.execute(sa.select(mfa_factors).where(mfa_factors.c.principal == principal)).first()
    return FactorRow(**row._mapping) if row else None


def list_all(conn: sa.Connection) -> list[FactorRow]:
    rows = conn.execute(sa.select(mfa_factors).order_by(mfa_factors.c.principal))
    return [FactorRow(**row._mapping) for row in rows]


def insert(conn: sa.Connection, principal: str, secret: str, now: float) -> None:
    conn.execute(
        mfa_factors.insert().values(principal=principal, secret=secret, created_at=now, failures=0)
    )


def delete(conn: sa.Connection, principal: str) -> bool:
    result = conn.execute(mfa_factors.delete().where(mfa_factors.c.principal == principal))
    return result.rowcount > 0


def accept_step(conn: sa.Connection, principal: str, step: int, now: float) -> bool:
    """Record ``step`` as used if it is later than any used before; False otherwise (a replay,
    or a concurrent use of the same code). The first accepted code confirms the factor."""
    result = conn.execute(
        mfa_factors.update()
        .where(
            mfa_factors.c.principal == principal,
            sa.or_(mfa_factors.c.last_step.is_(None), mfa_factors.c.last_step < step),
        )
        .values(
            last_step=step,
            confirmed_at=sa.func.coalesce(mfa_factors.c.confirmed_at, now),
            failures=0,
            failed_at=None,
        )
    )
    return result.rowcount == 1


def record_failure(conn: sa.Connection, principal: str, now: float) -> None:
    conn.execute(
        mfa_factors.update()
        .where(mfa_factors.c.principal == principal)
        .values(failures=mfa_factors.c.failures + 1, failed_at=now)
    )

"""Console sessions and one-time login codes (``console/sessions.py`` is the service).

Rows are keyed by SHA-256 digests: the session id lives only in the browser's cookie and the
login code only in the link the CLI printed, so a copy of the database signs nobody in. Using a
code is one conditional update (unused and unexpired), so two browsers racing with one link get
one session between them.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from bastion.store.tables import console_login_codes, console_sessions


@dataclass(frozen=True, slots=True)
class SessionRow:
    id_hash: str
    principal: str
    method: str
    created_at: float
    last_seen_at: float
    expires_at: float
    mfa_pending: bool
    mfa_at: float | None
    ended_at: float | None = None
    ended_reason: str | None = None


def insert_session(conn: sa.Connection, row: SessionRow) -> None:
    conn.execute(
        console_sessions.insert().values(
            id_hash=row.id_hash,
            principal=row.principal,
            method=row.method,
            created_at=row.created_at,
            last_seen_at=row.last_seen_at,
            expires_at=row.expires_at,
            mfa_pending=row.mfa_pending,
            mfa_at=row.mfa_at,
        )
    )


def get_session(conn: sa.Connection, id_hash: str) -> SessionRow | None:
    row = conn.execute(
        sa.select(console_sessions).where(console_sessions.c.id_hash == id_hash)
    ).first()
    return SessionRow(**row._mapping) if row else None


def touch(conn: sa.Connection, id_hash: str, now: float) -> None:
    conn.execute(
        console_sessions.update()
        .where(console_sessions.c.id_hash == id_hash, console_sessions.c.ended_at.is_(None))
        .values(last_seen_at=now)
    )


def end_session(conn: sa.Connection, id_hash: str, reason: str, now: float) -> bool:
    """End a live session; False if it had already ended (or never existed)."""
    result = conn.execute(
        console_sessions.update()
        .where(console_sessions.c.id_hash == id_hash, console_sessions.c.ended_at.is_(None))
        .values(ended_at=now, ended_reason=reason)
    )
    return result.rowcount == 1


def end_sessions_of(conn: sa.Connection, principal: str, reason: str, now: float) -> int:
    """End every live session of ``principal``; returns how many there were."""
    result = conn.execute(
        console_sessions.update()
        .where(console_sessions.c.principal == principal, console_sessions.c.ended_at.is_(None))
        .values(ended_at=now, ended_reason=reason)
    )
    return int(result.rowcount)


def insert_code(
    conn: sa.Connection, code_hash: str, principal: str, now: float, expires_at: float
) -> None:
    conn.execute(
        console_login_codes.insert().values(
            code_hash=code_hash, principal=principal, created_at=now, expires_at=expires_at
        )
    )


def use_code(conn: sa.Connection, code_hash: str, now: float) -> str | None:
    """Spend an unused, unexpired code; its principal, or None (unknown, used or expired)."""
    result = conn.execute(
        console_login_codes.update()
        .where(
            console_login_codes.c.code_hash == code_hash,
            console_login_codes.c.used_at.is_(None),
            console_login_codes.c.expires_at > now,
        )
        .values(used_at=now)
    )
    if result.rowcount != 1:
        return None
    principal = conn.execute(
        sa.select(console_login_codes.c.principal).where(
            console_login_codes.c.code_hash == code_hash
        )
    ).scalar_one()
    return str(principal)


def purge(conn: sa.Connection, before: float) -> None:
    """Forget codes and sessions that expired or ended before ``before``."""
    conn.execute(console_login_codes.delete().where(console_login_codes.c.expires_at < before))
    conn.execute(
        console_sessions.delete().where(
            sa.or_(console_sessions.c.expires_at < before, console_sessions.c.ended_at < before)
        )
    )

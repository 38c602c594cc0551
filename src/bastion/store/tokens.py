"""Token families (one login on one device key) and their rotating refresh tokens (hashed)."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from bastion.store.tables import refresh_tokens, token_families


@dataclass(frozen=True, slots=True)
class FamilyRow:
    id: str
    principal: str
    jkt: str
    created_at: float
    revoked_at: float | None
    revoked_reason: str | None
    mfa_at: float | None = None  # when the login that started the family passed MFA


@dataclass(frozen=True, slots=True)
class RefreshRow:
    token_hash: str
    family: str
    issued_at: float
    expires_at: float
    rotated_at: float | None


def add_family(
    conn: sa.Connection,
    family_id: str,
    principal: str,
    jkt: str,
    now: float,
    mfa_at: float | None = None,
) -> None:
    conn.execute(
        token_families.insert().values(
            id=family_id, principal=principal, jkt=jkt, created_at=now, mfa_at=mfa_at
        )
    )


def get_family(conn: sa.Connection, family_id: str) -> FamilyRow | None:
    row = conn.execute(sa.select(token_families).where(token_families.c.id == family_id)).first()
    return FamilyRow(**row._mapping) if row else None


def revoke_family(conn: sa.Connection, family_id: str, reason: str, now: float) -> bool:
    result = conn.execute(
        token_families.update()
        .where(token_families.c.id == family_id, token_families.c.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=reason)
    )
    return result.rowcount > 0


def add_refresh(
    conn: sa.Connection, token_hash: str, family_id: str, now: float, expires_at: float
) -> None:
    conn.execute(
        refresh_tokens.insert().values(
            token_hash=token_hash, family=family_id, issued_at=now, expires_at=expires_at
        )
    )


def get_refresh(conn: sa.Connection, token_hash: str) -> RefreshRow | None:
    row = conn.execute(
        sa.select(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash)
    ).first()
    return RefreshRow(**row._mapping) if row else None


def rotate_refresh(conn: sa.Connection, token_hash: str, now: float) -> bool:
    """Mark a refresh token used; False if it was already rotated (a concurrent or replayed use)."""
    result = conn.execute(
        refresh_tokens.update()
        .where(refresh_tokens.c.token_hash == token_hash, refresh_tokens.c.rotated_at.is_(None))
        .values(rotated_at=now)
    )
    return result.rowcount == 1


def unexpired_families(
    conn: sa.Connection, principals: list[str], now: float, access_ttl: float, limit: int = 500
) -> list[FamilyRow]:
    """These principals' families that can still call, newest first: not revoked, and holding
    an unexpired refresh token (each refresh issues one for a full lifetime, so a family kept
    refreshed lives on past its first) or an access token that may not have expired yet (one
    issued within ``access_ttl``: token-exchange families have no refresh token)."""
    if not principals:
        return []
    recent = now - access_ttl
    refresh_alive = sa.exists().where(
        refresh_tokens.c.family == token_families.c.id,
        sa.or_(refresh_tokens.c.expires_at > now, refresh_tokens.c.issued_at > recent),
    )
    rows = conn.execute(
        sa.select(token_families)
        .where(
            token_families.c.principal.in_(principals),
            token_families.c.revoked_at.is_(None),
            sa.or_(token_families.c.created_at > recent, refresh_alive),
        )
        .order_by(token_families.c.created_at.desc())
        .limit(limit)
    )
    return [FamilyRow(**row._mapping) for row in rows]

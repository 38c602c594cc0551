"""Enrolled device keys (public JWKs keyed by RFC 7638 thumbprint) and one-time enrollment codes."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import sqlalchemy as sa

from bastion.store.tables import device_keys, enrollment_codes


@dataclass(frozen=True, slots=True)
class DeviceKeyRow:
    jkt: str
    principal: str
    public_jwk: dict[str, str]
    alg: str
    created_at: float
    revoked_at: float | None


def _row(mapping: sa.RowMapping) -> DeviceKeyRow:
    values = dict(mapping)
    values["public_jwk"] = orjson.loads(values["public_jwk"])
    return DeviceKeyRow(**values)


def get(conn: sa.Connection, jkt: str) -> DeviceKeyRow | None:
    row = conn.execute(sa.select(device_keys).where(device_keys.c.jkt == jkt)).first()
    return _row(row._mapping) if row else None


def active(conn: sa.Connection) -> list[DeviceKeyRow]:
    rows = conn.execute(sa.select(device_keys).where(device_keys.c.revoked_at.is_(None)))
    return [_row(row._mapping) for row in rows]


def for_principal(conn: sa.Connection, principal: str) -> list[DeviceKeyRow]:
    rows = conn.execute(
        sa.select(device_keys)
        .where(device_keys.c.principal == principal)
        .order_by(device_keys.c.created_at)
    )
    return [_row(row._mapping) for row in rows]


def insert(conn: sa.Connection, row: DeviceKeyRow) -> None:
    conn.execute(
        device_keys.insert().values(
            jkt=row.jkt,
            principal=row.principal,
            public_jwk=orjson.dumps(row.public_jwk).decode(),
            alg=row.alg,
            created_at=row.created_at,
            revoked_at=row.revoked_at,
        )
    )


def revoke(conn: sa.Connection, jkt: str, now: float) -> bool:
    result = conn.execute(
        device_keys.update()
        .where(device_keys.c.jkt == jkt, device_keys.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return result.rowcount > 0


def add_code(
    conn: sa.Connection, principal: str, code_hash: str, now: float, expires_at: float
) -> None:
    conn.execute(
        enrollment_codes.insert().values(
            code_hash=code_hash, principal=principal, created_at=now, expires_at=expires_at
        )
    )


def redeem_code(conn: sa.Connection, principal: str, code_hash: str, now: float) -> bool:
    """Mark the code used if it exists for ``principal``, is unexpired and unused (single use)."""
    result = conn.execute(
        enrollment_codes.update()
        .where(
            enrollment_codes.c.code_hash == code_hash,
            enrollment_codes.c.principal == principal,
            enrollment_codes.c.used_at.is_(None),
            enrollment_codes.c.expires_at > now,
        )
        .values(used_at=now)
    )
    return result.rowcount == 1

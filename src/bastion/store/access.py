"""Access requests, approvals and time-bound grants."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from bastion.store.tables import access_requests, approvals, grants


@dataclass(frozen=True, slots=True)
class RequestRow:
    id: str
    principal: str
    compartment: str
    reason: str
    duration: float
    status: str
    created_at: float
    expires_at: float
    decided_at: float | None


@dataclass(frozen=True, slots=True)
class ApprovalRow:
    request: str
    approver: str
    decision: str
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class GrantRow:
    id: str
    principal: str
    compartment: str
    request: str | None
    granted_at: float
    expires_at: float
    revoked_at: float | None
    revoked_by: str | None


def add_request(conn: sa.Connection, row: RequestRow) -> None:
    conn.execute(
        access_requests.insert().values(
            id=row.id,
            principal=row.principal,
            compartment=row.compartment,
            reason=row.reason,
            duration=row.duration,
            status=row.status,
            created_at=row.created_at,
            expires_at=row.expires_at,
            decided_at=row.decided_at,
        )
    )


def get_request(conn: sa.Connection, request_id: str) -> RequestRow | None:
    row = conn.execute(sa.select(access_requests).where(access_requests.c.id == request_id)).first()
    return RequestRow(**row._mapping) if row else None


def list_requests(conn: sa.Connection, status: str | None = None) -> list[RequestRow]:
    query = sa.select(access_requests).order_by(access_requests.c.created_at)
    if status:
        query = query.where(access_requests.c.status == status)
    return [RequestRow(**row._mapping) for row in conn.execute(query)]


def set_status(conn: sa.Connection, request_id: str, status: str, now: float) -> bool:
    """Move a pending request to ``status``; False if it was no longer pending."""
    result = conn.execute(
        access_requests.update()
        .where(access_requests.c.id == request_id, access_requests.c.status == "pending")
        .values(status=status, decided_at=now)
    )
    return result.rowcount == 1


def add_approval(conn: sa.Connection, row: ApprovalRow) -> None:
    conn.execute(
        approvals.insert().values(
            request=row.request,
            approver=row.approver,
            decision=row.decision,
            reason=row.reason,
            at=row.at,
        )
    )


def approvals_of(conn: sa.Connection, request_id: str) -> list[ApprovalRow]:
    rows = conn.execute(
        sa.select(approvals).where(approvals.c.request == request_id).order_by(approvals.c.at)
    )
    return [ApprovalRow(**row._mapping) for row in rows]


def add_grant(conn: sa.Connection, row: GrantRow) -> None:
    conn.execute(
        grants.insert().values(
            id=row.id,
            principal=row.principal,
            compartment=row.compartment,
            request=row.request,
            granted_at=row.granted_at,
            expires_at=row.expires_at,
        )
    )


def active_grants(conn: sa.Connection, now: float) -> list[GrantRow]:
    rows = conn.execute(
        sa.select(grants).where(grants.c.revoked_at.is_(None), grants.c.expires_at > now)
    )
    return [GrantRow(**row._mapping) for row in rows]


def revoke_grant(conn: sa.Connection, grant_id: str, by: str, now: float) -> GrantRow | None:
    row = conn.execute(sa.select(grants).where(grants.c.id == grant_id)).first()
    if row is None or row.revoked_at is not None:
        return None
    conn.execute(
        grants.update().where(grants.c.id == grant_id).values(revoked_at=now, revoked_by=by)
    )
    return GrantRow(**row._mapping)

"""Just-in-time access: a principal asks for a compartment for a while; approvers decide.

The compartment's ``access`` rule says how many distinct approvers are needed and who they may
be. Enforced here, server-side, whatever the caller claims: the requester never approves their
own request; an approver is never from a vendor requester's org; a ``critical`` compartment
needs two approvals at least; a vendor can never be granted above its ceiling. When enough
approvals are in, a grant valid for the requested duration is created; the gateway checks its
expiry to the second on every request. Every step is an audit event, written with the change.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from bastion.audit.events import AdminAction
from bastion.audit.log import AuditLog
from bastion.config.models import BastionConfig, Level, OrgKind
from bastion.errors import AccessDenied, BadRequest, Conflict, NotFound
from bastion.store import Store, state
from bastion.store import access as rows
from bastion.store import principals as principal_rows
from bastion.store.access import ApprovalRow, GrantRow, RequestRow

PENDING_TTL = 3600.0


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """A pending request as approvers see it: the two-person rule made visible."""

    request: RequestRow
    approvals: tuple[ApprovalRow, ...]  # decisions so far, oldest first
    needed: int  # approvals that create the grant
    eligible: tuple[str, ...]  # approvers who may still decide (never the requester)

    @property
    def approved(self) -> int:
        return sum(1 for a in self.approvals if a.decision == "approve")


def approvals_needed(config: BastionConfig, compartment: str) -> int:
    """Distinct approvals that turn a request for ``compartment`` into a grant."""
    declared = config.compartments[compartment]
    needed = declared.access.approvals if declared.access is not None else 2
    if declared.level is Level.CRITICAL:
        needed = max(needed, 2)  # the two-person rule, whatever the config says
    return needed


class AccessService:
    def __init__(
        self, store: Store, audit: AuditLog, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock

    def _org_of(self, config: BastionConfig, principal: str) -> str:
        declared = config.principals.get(principal)
        if declared is not None:
            return declared.org
        with self._store.read() as conn:
            row = principal_rows.get(conn, principal)
        if row is None:
            raise NotFound(f"no principal named {principal!r}")
        return row.org

    def request(
        self,
        config: BastionConfig,
        principal: str,
        target: str,
        *,
        reason: str,
        duration: float,
    ) -> RequestRow:
        """Ask for a compartment (or the compartment of a model) for ``duration`` seconds."""
        compartment_name = target if target in config.compartments else None
        if compartment_name is None and (model := config.model(target)) is not None:
            compartment_name = model.compartment
        if compartment_name is None:
            raise NotFound(f"no compartment or model named {target[:64]!r}")
        compartment = config.compartments[compartment_name]
        if compartment.access is None:
            raise BadRequest(f"compartment {compartment_name!r} takes no access requests")
        reason = reason.strip()
        if not 1 <= len(reason) <= 500:
            raise BadRequest("an access request needs a reason of 1 to 500 characters")
        if not 0 < duration <= compartment.access.max_duration_hours * 3600:
            raise BadRequest(
                f"duration must be between 1 second and "
                f"{compartment.access.max_duration_hours:g} hours for {compartment_name!r}"
            )
        org = config.orgs[self._org_of(config, principal)]
        if org.kind is OrgKind.VENDOR and compartment.level.rank > org.ceiling.rank:
            raise AccessDenied(
                f"{compartment_name!r} is above the vendor's ceiling ({org.ceiling})",
                ("above_vendor_ceiling",),
            )
        now = self._clock()
        row = RequestRow(
            id="rq_" + secrets.token_hex(6),
            principal=principal,
            compartment=compartment_name,
            reason=reason,
            duration=duration,
            status="pending",
            created_at=now,
            expires_at=now + PENDING_TTL,
            decided_at=None,
        )
        event = self._event(principal, "access.requested", row, reason)
        with self._store.begin() as conn:
            rows.add_request(conn, row)
            self._audit.append(conn, [event])
            if compartment.access.approvals == 0:
                self._grant(conn, row, now)
        return self.get(row.id)

    def decide(
        self, config: BastionConfig, request_id: str, approver: str, *, approve: bool, reason: str
    ) -> RequestRow:
        """An approver approves or denies; the last needed approval creates the grant."""
        now = self._clock()
        with self._store.begin() as conn:
            request = rows.get_request(conn, request_id)
            if request is None:
                raise NotFound(f"no access request {request_id[:40]!r}")
            if request.status != "pending":
                raise Conflict(f"access request {request.id} is already {request.status}")
            if request.expires_at <= now:
                rows.set_status(conn, request.id, "expired", now)
                raise Conflict(f"access request {request.id} expired unanswered")
            self._check_approver(config, request, approver, conn)
            rows.add_approval(
                conn,
                ApprovalRow(
                    request.id,
                    approver,
                    "approve" if approve else "deny",
                    reason.strip()[:500],
                    now,
                ),
            )
            name = "access.approved" if approve else "access.denied"
            self._audit.append(conn, [self._event(approver, name, request, reason)])
            if not approve:
                rows.set_status(conn, request.id, "denied", now)
            else:
                given = sum(
                    1 for a in rows.approvals_of(conn, request.id) if a.decision == "approve"
                )
                if given >= approvals_needed(config, request.compartment):
                    self._grant(conn, request, now)
        return self.get(request_id)

    def _check_approver(
        self, config: BastionConfig, request: RequestRow, approver: str, conn: sa.Connection
    ) -> None:
        decided = {a.approver for a in rows.approvals_of(conn, request.id)}
        refusal = self._refusal(config, request, approver, decided)
        if refusal is not None:
            raise refusal

    def _refusal(
        self, config: BastionConfig, request: RequestRow, approver: str, decided: set[str]
    ) -> AccessDenied | Conflict | None:
        """Why ``approver`` may not decide on ``request`` (None: they may)."""
        access = config.compartments[request.compartment].access
        if approver == request.principal:
            return AccessDenied(
                "the requester cannot approve their own request", ("self_approval",)
            )
        if access is None or approver not in access.approvers:
            return AccessDenied(
                f"{approver!r} is not an approver of {request.compartment!r}",
                ("not_an_approver",),
            )
        requester_org = self._org_of(config, request.principal)
        if (
            config.orgs[requester_org].kind is OrgKind.VENDOR
            and self._org_of(config, approver) == requester_org
        ):
            return AccessDenied(
                "an approver cannot be from the vendor requester's own org", ("same_org_approval",)
            )
        if approver in decided:
            return Conflict(f"{approver!r} already decided on {request.id}")
        return None

    def _grant(self, conn: sa.Connection, request: RequestRow, now: float) -> None:
        rows.set_status(conn, request.id, "approved", now)
        grant = GrantRow(
            id="gr_" + secrets.token_hex(6),
            principal=request.principal,
            compartment=request.compartment,
            request=request.id,
            granted_at=now,
            expires_at=now + request.duration,
            revoked_at=None,
            revoked_by=None,
        )
        rows.add_grant(conn, grant)
        event = AdminAction(
            actor="bastion:access",
            time=now,
            action="grant.created",
            target_type="principal",
            target=request.principal,
            detail={
                "grant": grant.id,
                "compartment": grant.compartment,
                "expires_at": grant.expires_at,
                "request": request.id,
            },
        )
        self._audit.append(conn, [event])
        state.bump_epoch(conn)

    def revoke(self, grant_id: str, *, author: str, reason: str) -> GrantRow:
        now = self._clock()
        with self._store.begin() as conn:
            grant = rows.revoke_grant(conn, grant_id, author, now)
            if grant is None:
                raise NotFound(f"no active grant {grant_id[:40]!r}")
            event = AdminAction(
                actor=author,
                time=now,
                action="grant.revoked",
                target_type="principal",
                target=grant.principal,
                reason=reason,
                detail={"grant": grant.id, "compartment": grant.compartment},
            )
            self._audit.append(conn, [event])
            state.bump_epoch(conn)
        return grant

    def get(self, request_id: str) -> RequestRow:
        with self._store.read() as conn:
            row = rows.get_request(conn, request_id)
        if row is None:
            raise NotFound(f"no access request {request_id[:40]!r}")
        return row

    def pending(self) -> list[RequestRow]:
        with self._store.read() as conn:
            return rows.list_requests(conn, "pending")

    def pending_detail(self, config: BastionConfig) -> list[PendingRequest]:
        """Pending requests with their decisions so far, how many approvals each needs and who
        may still decide (the same rules ``decide`` enforces)."""
        now = self._clock()
        with self._store.read() as conn:
            found = [
                (row, tuple(rows.approvals_of(conn, row.id)))
                for row in rows.list_requests(conn, "pending")
                if row.expires_at > now and row.compartment in config.compartments
            ]
        details = []
        for row, given in found:
            access = config.compartments[row.compartment].access
            decided = {a.approver for a in given}
            eligible = tuple(
                name
                for name in (access.approvers if access is not None else ())
                if self._eligible(config, row, name, decided)
            )
            details.append(
                PendingRequest(row, given, approvals_needed(config, row.compartment), eligible)
            )
        return details

    def _eligible(
        self, config: BastionConfig, request: RequestRow, approver: str, decided: set[str]
    ) -> bool:
        try:
            return self._refusal(config, request, approver, decided) is None
        except NotFound:  # an approver named in the config who is no principal (yet)
            return False

    def grants(self) -> list[GrantRow]:
        with self._store.read() as conn:
            return rows.active_grants(conn, self._clock())

    def _event(self, actor: str, name: str, request: RequestRow, reason: str) -> AdminAction:
        return AdminAction(
            time=self._clock(),
            actor=actor,
            action=name,
            target_type="principal",
            target=request.principal,
            reason=reason.strip()[:500],
            detail={
                "request": request.id,
                "compartment": request.compartment,
                "duration": request.duration,
            },
        )

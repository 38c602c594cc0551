"""Access reviews: a vendor org's sponsor recertifies, or removes, each of its principals.

Every vendor org has one open review at a time. The lifecycle sweep opens it (``open_due``), due
one review period (``review_every_days``, 90 by default) after the last completed review, or after
the moment the first one opens. The org's sponsor, or an admin, decides for every principal of
the org: ``keep`` recertifies it; ``remove`` revokes its time-bound grants and locks it (through
the lock service, so the lock holds on the next request in every process). The review completes
only when every current principal of the org has a decision. While an open review is past due, the
snapshot marks the org overdue and Cedar denies its principals restricted compartments and above.

The rules mirror just-in-time access, server-side whatever the caller claims: a vendor principal
never takes part; nobody but the sponsor or an admin decides; a decision is final. Every step is
an audit event written in the same transaction as the change.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from bastion.audit.events import AdminAction
from bastion.audit.log import AuditLog
from bastion.config.models import BastionConfig, OrgKind, Role
from bastion.errors import AccessDenied, BadRequest, Conflict, NotFound
from bastion.respond.locks import LockService
from bastion.store import Store, state
from bastion.store import access as grant_rows
from bastion.store import principals as principal_rows
from bastion.store import reviews as rows
from bastion.store.access import GrantRow
from bastion.store.reviews import DecisionRow, ReviewRow

DAY = 86400.0
SWEEP_ACTOR = "bastion:reviews"
DECISIONS = ("keep", "remove")
MAX_REASON = 500
_LISTED_MISSING = 10


def review_due_at(*, every_days: int, last_completed_at: float | None, now: float) -> float:
    """When a newly opened review is due: one period after the last completed review of the org,
    or after ``now`` when the org was never reviewed."""
    start = now if last_completed_at is None else last_completed_at
    return start + every_days * DAY


def is_overdue(review: ReviewRow, now: float) -> bool:
    """An open review is overdue from its due time on (the same second the snapshot uses)."""
    return review.completed_at is None and now >= review.due_at


@dataclass(frozen=True, slots=True)
class Member:
    """A principal of the reviewed org, what it can reach, and the decision on it so far."""

    principal: str
    kind: str
    standing: tuple[str, ...]  # compartments granted in bastion.yaml (to the org or to it)
    grants: tuple[GrantRow, ...]  # active time-bound grants
    decision: DecisionRow | None


@dataclass(frozen=True, slots=True)
class ReviewDetail:
    review: ReviewRow
    overdue: bool
    members: tuple[Member, ...]


class ReviewService:
    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        locks: LockService,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._audit = audit
        self._locks = locks
        self._clock = clock

    # -- the sweep --------------------------------------------------------------------------------

    def open_due(self, config: BastionConfig) -> list[ReviewRow]:
        """Open a review for every vendor org that has none open; returns the opened ones."""
        now = self._clock()
        opened: list[ReviewRow] = []
        with self._store.begin() as conn:
            rows.take_sweep_lock(conn)
            already = {row.org for row in rows.open_reviews(conn)}
            for name, org in config.orgs.items():
                days = org.review_interval_days
                if days is None or name in already:
                    continue
                last = rows.last_completed(conn, name)
                row = ReviewRow(
                    id="rv_" + secrets.token_hex(6),
                    org=name,
                    opened_at=now,
                    due_at=review_due_at(
                        every_days=days,
                        last_completed_at=last.completed_at if last else None,
                        now=now,
                    ),
                    completed_at=None,
                    completed_by=None,
                )
                rows.insert(conn, row)
                opened.append(row)
            if opened:
                self._audit.append(conn, [self._opened(row) for row in opened])
                state.bump_epoch(conn)
        return opened

    def _opened(self, row: ReviewRow) -> AdminAction:
        return AdminAction(
            actor=SWEEP_ACTOR,
            time=row.opened_at,
            action="review.opened",
            target_type="org",
            target=row.org,
            detail={"review": row.id, "due_at": row.due_at},
        )

    # -- reading ----------------------------------------------------------------------------------

    def overdue(self, review: ReviewRow) -> bool:
        return is_overdue(review, self._clock())

    def reviews(
        self, config: BastionConfig, viewer: str, *, open_only: bool = False
    ) -> list[ReviewRow]:
        """The reviews ``viewer`` may see: all for admins and auditors, else its sponsored orgs'."""
        with self._store.read() as conn:
            found = rows.list_reviews(conn, open_only=open_only)
            if self._sees_all(conn, config, viewer):
                return found
        return [row for row in found if _sponsor(config, row.org) == viewer]

    def detail(self, config: BastionConfig, review_id: str, viewer: str) -> ReviewDetail:
        now = self._clock()
        with self._store.read() as conn:
            review = self._review(conn, review_id)
            if not self._sees_all(conn, config, viewer):
                self._check_reviewer(conn, config, review.org, viewer)
            members = self._members(conn, config, review.org)
            decisions = {d.principal: d for d in rows.decisions_of(conn, review.id)}
            grants = grant_rows.active_grants(conn, now)
        standing = {
            name: tuple(
                compartment
                for compartment, declared in config.compartments.items()
                if review.org in declared.grants.orgs or name in declared.grants.principals
            )
            for name in {*members, *decisions}
        }
        return ReviewDetail(
            review=review,
            overdue=is_overdue(review, now),
            members=tuple(
                Member(
                    principal=name,
                    kind=members.get(name, ""),
                    standing=standing[name],
                    grants=tuple(g for g in grants if g.principal == name),
                    decision=decisions.get(name),
                )
                for name in sorted({*members, *decisions})
            ),
        )

    def get(self, review_id: str) -> ReviewRow:
        with self._store.read() as conn:
            return self._review(conn, review_id)

    # -- deciding ---------------------------------------------------------------------------------

    def decide(
        self,
        config: BastionConfig,
        review_id: str,
        principal: str,
        decider: str,
        *,
        decision: str,
        reason: str,
    ) -> DecisionRow:
        """Keep or remove one principal of the reviewed org; ``remove`` locks it and revokes its
        time-bound grants. A decision is final."""
        if decision not in DECISIONS:
            raise BadRequest(f"a review decision is one of {', '.join(DECISIONS)}")
        reason = reason.strip()
        if not 1 <= len(reason) <= MAX_REASON:
            raise BadRequest(f"a review decision needs a reason of 1 to {MAX_REASON} characters")
        with self._store.read() as conn:
            review = self._open_review(conn, review_id)
            self._check_reviewer(conn, config, review.org, decider)
            self._check_member(conn, config, review.org, principal)
            if any(d.principal == principal for d in rows.decisions_of(conn, review.id)):
                raise Conflict(f"{principal!r} already has a decision in review {review.id}")
        if decision == "remove":  # lock first: if recording fails below, the lock still holds
            self._locks.lock(
                "principal",
                principal,
                reason=f"removed in access review {review.id}",
                author=f"principal:{decider}",
            )
        now = self._clock()
        row = DecisionRow(review.id, principal, decision, reason, decider, now)
        try:
            with self._store.begin() as conn:
                self._open_review(conn, review.id)
                rows.add_decision(conn, row)
                events = [self._decided(row, review.org)]
                if decision == "remove":
                    events += self._revoke_grants(conn, row)
                self._audit.append(conn, events)
                state.bump_epoch(conn)
        except sa.exc.IntegrityError:  # a concurrent decision on the same principal won
            raise Conflict(f"{principal!r} already has a decision in review {review.id}") from None
        return row

    def _decided(self, row: DecisionRow, org: str) -> AdminAction:
        return AdminAction(
            actor=row.decided_by,
            time=row.at,
            action="review.decided",
            target_type="principal",
            target=row.principal,
            reason=row.reason,
            detail={"review": row.review, "org": org, "decision": row.decision},
        )

    def _revoke_grants(self, conn: sa.Connection, row: DecisionRow) -> list[AdminAction]:
        events = []
        author = f"principal:{row.decided_by}"
        for grant in grant_rows.active_grants(conn, row.at):
            if grant.principal != row.principal:
                continue
            if grant_rows.revoke_grant(conn, grant.id, author, row.at) is None:
                continue
            events.append(
                AdminAction(
                    actor=author,
                    time=row.at,
                    action="grant.revoked",
                    target_type="principal",
                    target=grant.principal,
                    reason=f"removed in access review {row.review}",
                    detail={
                        "grant": grant.id,
                        "compartment": grant.compartment,
                        "review": row.review,
                    },
                )
            )
        return events

    def complete(self, config: BastionConfig, review_id: str, decider: str) -> ReviewRow:
        """Close the review once every current principal of the org has a decision."""
        now = self._clock()
        with self._store.begin() as conn:
            review = self._open_review(conn, review_id)
            self._check_reviewer(conn, config, review.org, decider)
            decisions = rows.decisions_of(conn, review.id)
            decided = {d.principal for d in decisions}
            missing = sorted(set(self._members(conn, config, review.org)) - decided)
            if missing:
                shown = ", ".join(missing[:_LISTED_MISSING])
                extra = len(missing) - _LISTED_MISSING
                more = f" and {extra} more" if extra > 0 else ""
                raise Conflict(
                    f"review {review.id} cannot be completed: {len(missing)} principal(s) of "
                    f"{review.org!r} have no decision yet: {shown}{more}"
                )
            if not rows.complete(conn, review.id, decider, now):
                raise Conflict(f"review {review.id} is already completed")
            event = AdminAction(
                actor=decider,
                time=now,
                action="review.completed",
                target_type="org",
                target=review.org,
                detail={
                    "review": review.id,
                    "kept": sum(1 for d in decisions if d.decision == "keep"),
                    "removed": sum(1 for d in decisions if d.decision == "remove"),
                    "overdue": is_overdue(review, now),
                },
            )
            self._audit.append(conn, [event])
            state.bump_epoch(conn)
        return self.get(review_id)

    # -- rules ------------------------------------------------------------------------------------

    def _review(self, conn: sa.Connection, review_id: str) -> ReviewRow:
        review = rows.get(conn, review_id)
        if review is None:
            raise NotFound(f"no access review {review_id[:40]!r}")
        return review

    def _open_review(self, conn: sa.Connection, review_id: str) -> ReviewRow:
        review = self._review(conn, review_id)
        if not review.open:
            raise Conflict(f"access review {review.id} is already completed")
        return review

    def _org_of(self, conn: sa.Connection, config: BastionConfig, name: str) -> str | None:
        declared = config.principals.get(name)
        if declared is not None:
            return declared.org
        row = principal_rows.get(conn, name)
        return row.org if row is not None else None

    def _kind_of(self, conn: sa.Connection, config: BastionConfig, name: str) -> OrgKind | None:
        """The kind of ``name``'s org (None: no such principal, or its org left the config)."""
        org_name = self._org_of(conn, config, name)
        org = config.orgs.get(org_name) if org_name else None
        return org.kind if org is not None else None

    def _sees_all(self, conn: sa.Connection, config: BastionConfig, viewer: str) -> bool:
        declared = config.principals.get(viewer)
        if declared is None or self._kind_of(conn, config, viewer) is not OrgKind.INTERNAL:
            return False
        return Role.ADMIN in declared.roles or Role.AUDITOR in declared.roles

    def _check_reviewer(
        self, conn: sa.Connection, config: BastionConfig, org: str, who: str
    ) -> None:
        """Only the org's sponsor or an admin reviews; never a vendor principal."""
        kind = self._kind_of(conn, config, who)
        if kind is OrgKind.VENDOR:
            raise AccessDenied(
                "vendor principals cannot take part in access reviews", ("vendor_control_plane",)
            )
        declared = config.principals.get(who)
        admin = declared is not None and Role.ADMIN in declared.roles
        if kind is None or (not admin and _sponsor(config, org) != who):
            raise AccessDenied(
                f"{who!r} is neither the sponsor of {org!r} nor an admin", ("not_a_reviewer",)
            )

    def _members(self, conn: sa.Connection, config: BastionConfig, org: str) -> dict[str, str]:
        """The org's current principals (name -> kind); bastion.yaml overrides the store."""
        members: dict[str, str] = {}
        for row in principal_rows.list_all(conn):
            declared = config.principals.get(row.name)
            if declared is None and row.org == org:
                members[row.name] = row.kind
        for name, declared in config.principals.items():
            if declared.org == org:
                members[name] = str(declared.kind)
        return members

    def _check_member(
        self, conn: sa.Connection, config: BastionConfig, org: str, principal: str
    ) -> None:
        if principal in self._members(conn, config, org):
            return
        if self._org_of(conn, config, principal) is None:
            raise NotFound(f"no principal named {principal[:64]!r}")
        raise BadRequest(f"{principal!r} is not a principal of org {org!r}")


def _sponsor(config: BastionConfig, org: str) -> str | None:
    declared = config.orgs.get(org)
    return declared.sponsor if declared is not None else None

"""The Access page (``/console/access``): just-in-time requests, grants, vendors, compartments.

Pending requests show the two-person rule: who decided, how many approvals are in out of how
many needed, and who may still approve. The approve and deny forms are offered only to an
eligible approver (never the requester, never someone of a vendor requester's org) — and the
access service enforces the same rules whatever a form says, so a refusal is shown as a clear
message and changes nothing. A decision is recorded by the service (with the signed-in approver
as the actor) and reloads this process's snapshot, so a new grant counts from the next request.

Who sees what, as the admin API: every internal user may see pending requests and decide
(``access_decide``); active grants, vendors and compartments need ``directory_read`` (auditors
and admins). Compartments are read-only here: bastion.yaml is the source of truth.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bastion.access.reviews import ReviewService
from bastion.access.service import AccessService, PendingRequest
from bastion.config.models import BastionConfig, Compartment, OrgKind
from bastion.errors import AccessDenied, BadRequest, NotFound
from bastion.policy.snapshot import Snapshot
from bastion.store.reviews import ReviewRow

from .guard import ConsoleGuard, Form, Viewer

DECIDE = "access_decide"  # pending requests, approve / deny (any internal user, as the API)
READ = "directory_read"  # grants, vendors, compartments (auditors and admins, as the API)
REQUEST_ID = re.compile(r"rq_[0-9a-f]{12}")
MAX_REASON = 500
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# What the page may say after a decision, by key: never text taken from the request.
NOTICES = {
    "approved": "Approved. The request still needs more approvals.",
    "granted": "Approved. That was the last approval needed: the grant is active.",
    "denied": "Denied. The request is closed.",
}


def when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def remaining(seconds: float) -> str:
    """``2 h 05 min``, ``4 min 09 s``, ``expired`` — the countdown console.js keeps going."""
    left = int(max(0.0, seconds))
    if left == 0:
        return "expired"
    days, rest = divmod(left, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s"


@dataclass(frozen=True, slots=True)
class VendorView:
    name: str
    sponsor: str
    contract: str
    in_contract: bool
    seats_used: int
    seat_limit: int | None
    review: str
    overdue: bool


def _reason(form: Form, *, required: bool) -> str:
    reason = form.get("reason", "").strip()
    if required and not reason:
        raise BadRequest("a denial needs a reason (1 to 500 characters): it is recorded")
    if len(reason) > MAX_REASON:
        raise BadRequest(f"the reason is longer than {MAX_REASON} characters")
    if _CONTROL.search(reason):
        raise BadRequest("the reason contains control characters")
    return reason


def _request_id(request: Request) -> str:
    given = str(request.path_params.get("request_id", ""))
    if not REQUEST_ID.fullmatch(given):
        raise NotFound("no such access request (ids look like rq_0123456789ab)")
    return given


def _vendors(
    config: BastionConfig, snapshot: Snapshot, open_reviews: dict[str, ReviewRow], now: float
) -> list[VendorView]:
    views = []
    for name, org in sorted(config.orgs.items()):
        if org.kind is not OrgKind.VENDOR:
            continue
        seats = sum(1 for f in snapshot.principals.values() if f.org == name and not f.disabled)
        contract, in_contract = "no contract window", True
        if org.contract is not None:
            start, end = org.contract.start.timestamp(), org.contract.end.timestamp()
            contract = f"{when(start)} → {when(end)}"
            in_contract = start <= now < end
        review, overdue = "no reviews configured", False
        if (open_review := open_reviews.get(name)) is not None:
            overdue = now >= open_review.due_at
            state = "overdue since" if overdue else "due"
            review = f"{open_review.id} {state} {when(open_review.due_at)}"
        elif org.review_every_days is not None:
            review = f"every {org.review_every_days} days, none open"
        views.append(
            VendorView(
                name=name,
                sponsor=org.sponsor or "none",
                contract=contract,
                in_contract=in_contract,
                seats_used=seats,
                seat_limit=org.seat_limit,
                review=review,
                overdue=overdue,
            )
        )
    return views


def _controls(compartment: Compartment) -> list[tuple[str, str]]:
    """A compartment's controls, as label / value rows."""
    access = compartment.access
    hours = compartment.allowed_hours
    quotas = compartment.quotas

    def limits(rpm: int | None, tph: int | None) -> str:
        shown = [f"{rpm} req/min" if rpm else "", f"{tph} tokens/h" if tph else ""]
        return ", ".join(s for s in shown if s) or "none"

    standing = [f"org {o}" for o in compartment.grants.orgs] + list(compartment.grants.principals)
    return [
        ("standing grants", ", ".join(standing) or "none"),
        ("token binding", str(compartment.token_binding)),
        (
            "MFA freshness",
            f"≤ {compartment.max_mfa_age_minutes} min"
            if compartment.max_mfa_age_minutes
            else "no MFA",
        ),
        ("networks", ", ".join(str(n) for n in compartment.allowed_networks) or "any"),
        (
            "approval rule",
            "no access requests"
            if access is None
            else f"{access.approvals} of [{', '.join(access.approvers)}]",
        ),
        (
            "max grant",
            "-" if access is None else f"{access.max_duration_hours:g} h",
        ),
        ("audit", str(compartment.audit)),
        (
            "quota per principal",
            limits(quotas.principal.requests_per_minute, quotas.principal.tokens_per_hour),
        ),
        ("quota per org", limits(quotas.org.requests_per_minute, quotas.org.tokens_per_hour)),
        (
            "hours",
            "any time"
            if hours is None
            else f"{','.join(str(d) for d in hours.days)} {hours.start}-{hours.end} "
            f"{hours.timezone}",
        ),
        (
            "lock view",
            f"strict, ≤ {compartment.lock_view.max_age_seconds:g} s"
            if compartment.lock_view.strict
            else "lenient",
        ),
    ]


class AccessPage:
    def __init__(
        self,
        guard: ConsoleGuard,
        access: AccessService,
        reviews: ReviewService,
        on_change: Callable[[], Awaitable[object]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.guard = guard
        self.access = access
        self.reviews = reviews
        self._on_change = on_change
        self._clock = clock

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/access", self.guard.page(DECIDE)(self.page), methods=["GET"]),
            Route(
                "/access/requests/{request_id}/approve",
                self.guard.form(DECIDE)(self.approve),
                methods=["POST"],
            ),
            Route(
                "/access/requests/{request_id}/deny",
                self.guard.form(DECIDE)(self.deny),
                methods=["POST"],
            ),
        ]

    def _config(self) -> tuple[BastionConfig, Snapshot]:
        snapshot = self.guard.holder.require()
        return snapshot.config, snapshot

    def _reads_directory(self, request: Request, viewer: Viewer) -> bool:
        try:
            self.guard.admit(request, viewer.principal, READ, quiet=True)
        except AccessDenied:
            return False
        return True

    async def page(self, request: Request, viewer: Viewer) -> Response:
        config, snapshot = self._config()
        full = self._reads_directory(request, viewer)
        context = await anyio.to_thread.run_sync(self._collect, config, snapshot, viewer, full)
        notice = NOTICES.get(request.query_params.get("notice", ""), "")
        shown = request.query_params.get("request", "")
        return self.guard.render(
            request,
            "access.html",
            viewer,
            notice=notice,
            notice_request=shown if REQUEST_ID.fullmatch(shown) else "",
            full=full,
            **context,
        )

    def _collect(
        self, config: BastionConfig, snapshot: Snapshot, viewer: Viewer, full: bool
    ) -> dict[str, Any]:
        now = self._clock()
        pending = [
            self._pending_view(item, viewer.principal, now)
            for item in self.access.pending_detail(config)
        ]
        if not full:
            return {"pending": pending, "grants": [], "vendors": [], "compartments": []}
        grants = [
            {
                "id": g.id,
                "principal": g.principal,
                "compartment": g.compartment,
                "request": g.request or "standing",
                "granted": when(g.granted_at),
                "expires": when(g.expires_at),
                "seconds": int(g.expires_at - now),
                "remaining": remaining(g.expires_at - now),
            }
            for g in sorted(self.access.grants(), key=lambda g: g.expires_at)
        ]
        open_reviews = {
            row.org: row for row in self.reviews.reviews(config, viewer.principal, open_only=True)
        }
        compartments = [
            {
                "name": name,
                "level": str(compartment.level),
                "description": compartment.description,
                "models": [m.name for m in config.models if m.compartment == name],
                "controls": _controls(compartment),
            }
            for name, compartment in sorted(
                config.compartments.items(), key=lambda item: -item[1].level.rank
            )
        ]
        return {
            "pending": pending,
            "grants": grants,
            "vendors": _vendors(config, snapshot, open_reviews, now),
            "compartments": compartments,
        }

    def _pending_view(self, item: PendingRequest, viewer: str, now: float) -> dict[str, Any]:
        row = item.request
        decided = {a.approver for a in item.approvals}
        return {
            "id": row.id,
            "principal": row.principal,
            "compartment": row.compartment,
            "reason": row.reason,
            "hours": f"{row.duration / 3600:g}",
            "asked": when(row.created_at),
            "expires": remaining(row.expires_at - now),
            "approved": item.approved,
            "needed": item.needed,
            "approvals": item.approvals,
            "eligible": item.eligible,
            "may_decide": viewer in item.eligible,
            "is_requester": viewer == row.principal,
            "already": viewer in decided,
        }

    async def approve(self, request: Request, viewer: Viewer, form: Form) -> Response:
        return await self._decide(request, viewer, form, approve=True)

    async def deny(self, request: Request, viewer: Viewer, form: Form) -> Response:
        return await self._decide(request, viewer, form, approve=False)

    async def _decide(
        self, request: Request, viewer: Viewer, form: Form, *, approve: bool
    ) -> Response:
        request_id = _request_id(request)
        reason = _reason(form, required=not approve)
        config, _ = self._config()
        row = await anyio.to_thread.run_sync(
            lambda: self.access.decide(
                config, request_id, viewer.principal, approve=approve, reason=reason
            )
        )
        await self._on_change()
        notice = "denied" if not approve else "granted" if row.status == "approved" else "approved"
        return RedirectResponse(
            f"/console/access?notice={notice}&request={row.id}#requests", status_code=303
        )

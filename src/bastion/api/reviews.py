"""Admin API routes for access reviews: list, show, decide keep/remove, complete.

The caller is whoever the DPoP-bound token says. Cedar lets internal principals call these
routes and forbids vendors; the review service then lets only the org's sponsor or an admin
decide (and sponsors, admins and auditors read). Every change reloads this process's snapshot at
once, so a removal's lock or a completed review counts from the next request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Annotated, Any, Literal

import anyio
from fastapi import Depends, FastAPI, Query
from pydantic import BaseModel, ConfigDict, Field

from bastion.access.reviews import ReviewDetail, ReviewService
from bastion.config.models import BastionConfig
from bastion.policy.authorize import Caller
from bastion.policy.holder import SnapshotHolder
from bastion.store.reviews import ReviewRow

Guard = Callable[..., Awaitable[Caller]]


class ReviewDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    principal: str = Field(min_length=1, max_length=64, description="a principal of the org")
    decision: Literal["keep", "remove"]
    reason: str = Field(min_length=1, max_length=500, description="recorded in the audit log")


def summary(row: ReviewRow, overdue: bool) -> dict[str, Any]:
    return {**asdict(row), "overdue": overdue}


def detail_body(detail: ReviewDetail) -> dict[str, Any]:
    return {
        **summary(detail.review, detail.overdue),
        "principals": [
            {
                "principal": member.principal,
                "kind": member.kind,
                "standing": list(member.standing),
                "grants": [
                    {"id": g.id, "compartment": g.compartment, "expires_at": g.expires_at}
                    for g in member.grants
                ],
                "decision": asdict(member.decision) if member.decision else None,
            }
            for member in detail.members
        ],
    }


class ReviewRoutes:
    def __init__(
        self,
        service: ReviewService,
        holder: SnapshotHolder,
        on_change: Callable[[], Awaitable[object]],
    ) -> None:
        self._service = service
        self._holder = holder
        self._on_change = on_change

    def _config(self) -> BastionConfig:
        return self._holder.require().config

    def register(self, api: FastAPI, guard: Callable[[str], Guard]) -> None:
        service = self._service
        reader, decider = guard("review_read"), guard("review_decide")

        @api.get("/v1/reviews", summary="Access reviews the caller may see")
        def reviews(
            open_only: Annotated[bool, Query(alias="open")] = False,
            caller: Caller = Depends(reader),
        ) -> dict[str, Any]:
            found = service.reviews(self._config(), caller.principal, open_only=open_only)
            return {"reviews": [summary(row, service.overdue(row)) for row in found]}

        @api.get("/v1/reviews/{review_id}", summary="A review: principals, grants, decisions")
        def show(review_id: str, caller: Caller = Depends(reader)) -> dict[str, Any]:
            return detail_body(service.detail(self._config(), review_id, caller.principal))

        @api.post("/v1/reviews/{review_id}/decisions", summary="Keep or remove a principal")
        async def decide(
            review_id: str, body: ReviewDecision, caller: Caller = Depends(decider)
        ) -> dict[str, Any]:
            row = await anyio.to_thread.run_sync(
                lambda: service.decide(
                    self._config(),
                    review_id,
                    body.principal,
                    caller.principal,
                    decision=body.decision,
                    reason=body.reason,
                )
            )
            await self._on_change()
            return asdict(row)

        @api.post("/v1/reviews/{review_id}/complete", summary="Complete a fully decided review")
        async def complete(review_id: str, caller: Caller = Depends(decider)) -> dict[str, Any]:
            row = await anyio.to_thread.run_sync(
                lambda: service.complete(self._config(), review_id, caller.principal)
            )
            await self._on_change()
            return summary(row, service.overdue(row))

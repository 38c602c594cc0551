"""Admin API routes for automatic response: the actions playbooks took (or would have, or
wait to), approving or rejecting the ones waiting, and undoing the ones taken.

Reading needs ``audit_read`` (responders, auditors, admins); approving, rejecting and undoing
need ``lock_admin``, the same right as placing a lock by hand. Every change is audited with the
caller's name and reason.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Annotated, Any, Literal

import anyio
from fastapi import Depends, FastAPI, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from bastion.policy.authorize import Caller
from bastion.respond.service import ResponseService

Guard = Callable[..., Awaitable[Caller]]
ActionId = Annotated[str, Path(min_length=1, max_length=32, description="the action's id (ra_...)")]
Status = Literal[
    "done", "dry_run", "pending_approval", "rate_limited", "skipped", "failed", "undone", "rejected"
]


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500, description="recorded in the audit log")


class ResponseRoutes:
    def __init__(
        self, service: ResponseService, on_change: Callable[[], Awaitable[object]]
    ) -> None:
        self._service = service
        self._on_change = on_change

    def register(self, api: FastAPI, guard: Callable[[str], Guard]) -> None:
        service = self._service
        reader, admin = guard("audit_read"), guard("lock_admin")

        @api.get("/v1/response/actions", summary="Response actions, newest first")
        async def actions(
            _caller: Caller = Depends(reader),
            status: Status | None = None,
            finding: Annotated[str | None, Query(max_length=40)] = None,
            incident: Annotated[str | None, Query(max_length=40)] = None,
            limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        ) -> dict[str, Any]:
            rows = await anyio.to_thread.run_sync(
                lambda: service.actions(
                    status=status, finding=finding, incident=incident, limit=limit
                )
            )
            return {"actions": [asdict(row) for row in rows]}

        @api.get("/v1/response/actions/{action_id}", summary="One response action")
        async def action(action_id: ActionId, _caller: Caller = Depends(reader)) -> dict[str, Any]:
            return asdict(await anyio.to_thread.run_sync(service.action, action_id))

        async def change(
            verb: Callable[..., Any], action_id: str, body: Decision, caller: Caller
        ) -> dict[str, Any]:
            row = await anyio.to_thread.run_sync(
                lambda: verb(action_id, by=f"principal:{caller.principal}", reason=body.reason)
            )
            await self._on_change()
            return asdict(row)

        @api.post("/v1/response/actions/{action_id}/approve", summary="Carry out a waiting action")
        async def approve(
            action_id: ActionId, body: Decision, caller: Caller = Depends(admin)
        ) -> dict[str, Any]:
            return await change(service.approve, action_id, body, caller)

        @api.post("/v1/response/actions/{action_id}/reject", summary="Refuse a waiting action")
        async def reject(
            action_id: ActionId, body: Decision, caller: Caller = Depends(admin)
        ) -> dict[str, Any]:
            return await change(service.reject, action_id, body, caller)

        @api.post("/v1/response/actions/{action_id}/undo", summary="Undo a taken action")
        async def undo(
            action_id: ActionId, body: Decision, caller: Caller = Depends(admin)
        ) -> dict[str, Any]:
            return await change(service.undo, action_id, body, caller)

        @api.get("/v1/response/playbooks", summary="The playbooks in force")
        async def playbooks(_caller: Caller = Depends(reader)) -> dict[str, Any]:
            return service.playbooks_in_force()

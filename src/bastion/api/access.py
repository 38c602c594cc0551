"""Admin API routes for just-in-time access: request, approve, deny, list, revoke.

The caller is whoever the DPoP-bound token says: a request is made by its requester, an approval
by its approver. The access service enforces the approval rules; every change reloads this
process's snapshot at once, so a new or revoked grant counts from the next request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

import anyio
from fastapi import Depends, FastAPI
from pydantic import BaseModel, ConfigDict, Field

from bastion.access.service import AccessService
from bastion.config.models import BastionConfig
from bastion.policy.authorize import Caller
from bastion.policy.holder import SnapshotHolder

Guard = Callable[..., Awaitable[Caller]]


class NewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str = Field(min_length=1, max_length=64, description="compartment or model name")
    reason: str = Field(min_length=1, max_length=500)
    duration_seconds: float = Field(gt=0, le=30 * 24 * 3600)


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=500)


class AccessRoutes:
    def __init__(
        self,
        service: AccessService,
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
        requester, decider, admin = (
            guard("access_request"),
            guard("access_decide"),
            guard("access_admin"),
        )

        @api.post("/v1/access/requests", summary="Ask for a compartment for a while")
        async def request(body: NewRequest, caller: Caller = Depends(requester)) -> dict[str, Any]:
            row = await anyio.to_thread.run_sync(
                lambda: service.request(
                    self._config(),
                    caller.principal,
                    body.target,
                    reason=body.reason,
                    duration=body.duration_seconds,
                )
            )
            await self._on_change()
            return asdict(row)

        async def decide(request_id: str, caller: Caller, approve: bool, reason: str) -> Any:
            row = await anyio.to_thread.run_sync(
                lambda: service.decide(
                    self._config(), request_id, caller.principal, approve=approve, reason=reason
                )
            )
            await self._on_change()
            return asdict(row)

        @api.post("/v1/access/requests/{request_id}/approve", summary="Approve a request")
        async def approve(
            request_id: str, body: Decision, caller: Caller = Depends(decider)
        ) -> dict[str, Any]:
            result: dict[str, Any] = await decide(request_id, caller, True, body.reason)
            return result

        @api.post("/v1/access/requests/{request_id}/deny", summary="Deny a request")
        async def deny(
            request_id: str, body: Decision, caller: Caller = Depends(decider)
        ) -> dict[str, Any]:
            result: dict[str, Any] = await decide(request_id, caller, False, body.reason)
            return result

        @api.get("/v1/access/requests", summary="Pending requests")
        def pending(_caller: Caller = Depends(decider)) -> dict[str, Any]:
            return {"requests": [asdict(row) for row in service.pending()]}

        @api.get("/v1/access/grants", summary="Active time-bound grants")
        def grants(_caller: Caller = Depends(admin)) -> dict[str, Any]:
            return {"grants": [asdict(row) for row in service.grants()]}

        @api.post("/v1/access/grants/{grant_id}/revoke", summary="Revoke a grant now")
        async def revoke(
            grant_id: str, body: Decision, caller: Caller = Depends(admin)
        ) -> dict[str, Any]:
            row = await anyio.to_thread.run_sync(
                lambda: service.revoke(
                    grant_id, author=f"principal:{caller.principal}", reason=body.reason
                )
            )
            await self._on_change()
            return asdict(row)

"""Admin API routes for incidents: list, show (timeline and blast radius), resolve, assign.

Reading needs ``audit_read`` (auditors and admins; never vendors), as findings do: an incident's
timeline is a slice of the audit log. Resolving and assigning need ``lock_admin``, the
permission of those who contain: closing an incident is a response decision. The caller is the
actor recorded in the audit event (``principal:NAME``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

import anyio
from fastapi import Depends, FastAPI, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from bastion.policy.authorize import Caller
from bastion.respond.incidents import MAX_REASON, IncidentService, incident_dict

Guard = Callable[..., Awaitable[Caller]]
IncidentId = Annotated[str, Path(min_length=1, max_length=40, description="in_...")]


class IncidentResolution(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        min_length=1, max_length=MAX_REASON, description="recorded in the audit log"
    )


class IncidentAssignment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner: str = Field(min_length=1, max_length=128, description="who works on it, e.g. a name")


class IncidentRoutes:
    def __init__(self, service: IncidentService) -> None:
        self._service = service

    def register(self, api: FastAPI, guard: Callable[[str], Guard]) -> None:
        service = self._service
        reader, admin = guard("audit_read"), guard("lock_admin")

        @api.get("/v1/incidents", summary="Incidents, newest first")
        async def incidents(
            _caller: Caller = Depends(reader),
            status: Literal["open", "contained", "resolved"] | None = None,
            limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        ) -> dict[str, Any]:
            rows = await anyio.to_thread.run_sync(lambda: service.list(status=status, limit=limit))
            return {"incidents": [incident_dict(row) for row in rows]}

        @api.get(
            "/v1/incidents/{incident_id}",
            summary="One incident: findings, actions, timeline and blast radius",
        )
        async def incident(
            incident_id: IncidentId, _caller: Caller = Depends(reader)
        ) -> dict[str, Any]:
            detail = await anyio.to_thread.run_sync(service.detail, incident_id)
            return detail.as_dict()

        @api.post("/v1/incidents/{incident_id}/resolve", summary="Resolve an incident")
        async def resolve(
            incident_id: IncidentId, body: IncidentResolution, caller: Caller = Depends(admin)
        ) -> dict[str, Any]:
            row = await anyio.to_thread.run_sync(
                lambda: service.resolve(
                    incident_id, by=f"principal:{caller.principal}", reason=body.reason
                )
            )
            return incident_dict(row)

        @api.post("/v1/incidents/{incident_id}/assign", summary="Give an incident an owner")
        async def assign(
            incident_id: IncidentId, body: IncidentAssignment, caller: Caller = Depends(admin)
        ) -> dict[str, Any]:
            row = await anyio.to_thread.run_sync(
                lambda: service.assign(
                    incident_id, owner=body.owner, by=f"principal:{caller.principal}"
                )
            )
            return incident_dict(row)

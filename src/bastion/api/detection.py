"""Admin API routes for detection: findings and the engine's counters.

Read-only, for principals allowed ``audit_read`` (auditors and admins; never vendors): findings
name principals and describe behaviour, so they are as sensitive as the audit log itself.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Annotated, Any, Literal

import anyio
from fastapi import Depends, FastAPI, Path, Query

from bastion.detect.service import DetectionService
from bastion.errors import NotFound


class DetectionRoutes:
    def __init__(self, service: DetectionService) -> None:
        self._service = service

    def register(self, api: FastAPI, reader: Callable[..., Awaitable[Any]]) -> None:
        service = self._service
        needs = [Depends(reader)]

        @api.get("/v1/findings", summary="Findings, newest first", dependencies=needs)
        async def findings(
            since_seconds: Annotated[int, Query(ge=1, le=366 * 86400)] = 86400,
            detection: Annotated[str | None, Query(max_length=80)] = None,
            principal: Annotated[str | None, Query(max_length=64)] = None,
            status: Literal["open", "learning", "suppressed"] | None = None,
            limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        ) -> dict[str, Any]:
            found = await anyio.to_thread.run_sync(
                lambda: service.findings(
                    since=time.time() - since_seconds,
                    detection=detection,
                    principal=principal,
                    status=status,
                    limit=limit,
                )
            )
            return {"findings": [asdict(finding) for finding in found]}

        @api.get("/v1/findings/{finding_id}", summary="One finding", dependencies=needs)
        async def finding(finding_id: Annotated[str, Path(max_length=40)]) -> dict[str, Any]:
            found = await anyio.to_thread.run_sync(service.finding, finding_id)
            if found is None:
                raise NotFound(f"no finding {finding_id[:40]!r}")
            return asdict(found)

        @api.get(
            "/v1/detection/stats",
            summary="The engine's counters: processed, late, errors, state and evictions",
            dependencies=needs,
        )
        def stats() -> dict[str, Any]:
            return {**service.stats(), "top_risk": service.risk.top(time.time())}

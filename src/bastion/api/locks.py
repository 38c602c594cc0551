"""Admin API routes for locks: list, place, release.

A lock is containment, not configuration, so it may target anything (a config principal too).
Placing one on a target nobody has would contain nobody, so it is refused (404), as the CLI
does without ``--force``. Every change is written with its audit event by ``LockService`` and
reloads this process's snapshot before the response, so the next request is already refused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

import anyio
from fastapi import Depends, FastAPI, Path
from pydantic import BaseModel, ConfigDict, Field

from bastion.config.models import BastionConfig
from bastion.errors import NotFound
from bastion.policy.authorize import Caller
from bastion.policy.holder import SnapshotHolder
from bastion.respond.locks import MAX_RATE, MAX_TTL, LockService, validate_rate, validate_target
from bastion.store.locks import LockRow

Guard = Callable[..., Awaitable[Caller]]
TargetType = Literal[
    "principal", "org", "key", "family", "compartment", "network", "stepup", "throttle", "all"
]
LockId = Annotated[str, Path(min_length=1, max_length=32, description="the lock's id (lk_...)")]


class LockOut(BaseModel):
    """An active (or just released) lock."""

    id: str
    target_type: str
    target: str
    reason: str
    author: str
    created_at: float = Field(description="UNIX seconds")
    expires_at: float | None = Field(description="UNIX seconds; null: until released")
    rate: float | None = Field(
        default=None, description="throttle locks: requests per minute; null for other types"
    )

    @classmethod
    def of(cls, row: LockRow) -> LockOut:
        return cls(
            id=row.id,
            target_type=row.target_type,
            target=row.target,
            reason=row.reason,
            author=row.author,
            created_at=row.created_at,
            expires_at=row.expires_at,
            rate=row.rate,
        )


class LockList(BaseModel):
    locks: list[LockOut]


class LockChange(BaseModel):
    """A lock placed or released, and the state epoch that carries the change."""

    lock: LockOut
    epoch: int


class NewLock(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target_type: TargetType
    target: str = Field(
        default="*",
        min_length=1,
        max_length=128,
        description=(
            "name, device key thumbprint, token family id or network (CIDR: IPv4 /32, /24, "
            "/16; IPv6 /128, /64, /48); omitted for 'all'"
        ),
    )
    reason: str = Field(min_length=1, max_length=500, description="recorded in the audit log")
    expires_in_seconds: float | None = Field(
        default=None, gt=0, le=MAX_TTL, description="null: until released"
    )
    rate: float | None = Field(
        default=None,
        gt=0,
        le=MAX_RATE,
        allow_inf_nan=False,
        description="requests per minute: required for 'throttle', refused for other types",
    )


class Release(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500, description="recorded in the audit log")


class LockRoutes:
    def __init__(
        self,
        service: LockService,
        holder: SnapshotHolder,
        on_change: Callable[[], Awaitable[object]],
    ) -> None:
        self._service = service
        self._holder = holder
        self._on_change = on_change

    def _config(self) -> BastionConfig:
        return self._holder.require().config

    def place(self, body: NewLock, author: str) -> tuple[LockRow, int]:
        """Check the target exists, then lock it (blocking: run on a worker thread)."""
        service = self._service
        target = validate_target(body.target_type, body.target)
        validate_rate(body.target_type, body.rate)
        if not service.known(body.target_type, target, self._config()):
            raise NotFound(f"no {body.target_type} {target[:64]!r} is known, so nothing was locked")
        return service.lock(
            body.target_type,
            target,
            reason=body.reason,
            author=author,
            ttl=body.expires_in_seconds,
            rate=body.rate,
        )

    def register(self, api: FastAPI, guard: Callable[[str], Guard]) -> None:
        service = self._service
        reader, admin = guard("directory_read"), guard("lock_admin")

        @api.get("/v1/locks", summary="Active locks")
        def active(_caller: Caller = Depends(reader)) -> LockList:
            return LockList(locks=[LockOut.of(row) for row in service.active()])

        @api.post("/v1/locks", summary="Lock a target now", status_code=201)
        async def lock(body: NewLock, caller: Caller = Depends(admin)) -> LockChange:
            row, epoch = await anyio.to_thread.run_sync(
                lambda: self.place(body, f"principal:{caller.principal}")
            )
            await self._on_change()
            return LockChange(lock=LockOut.of(row), epoch=epoch)

        @api.post("/v1/locks/{lock_id}/release", summary="Release one lock now")
        async def release(
            lock_id: LockId, body: Release, caller: Caller = Depends(admin)
        ) -> LockChange:
            row, epoch = await anyio.to_thread.run_sync(
                lambda: service.release(
                    lock_id, author=f"principal:{caller.principal}", reason=body.reason
                )
            )
            await self._on_change()
            return LockChange(lock=LockOut.of(row), epoch=epoch)

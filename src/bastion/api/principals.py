"""Admin API routes for principals and their device keys.

Principals declared in ``bastion.yaml`` are config as code: the API shows them, enrolls their
keys and locks them, but never creates or edits them (409 / 405 say where to change them).
Principals added here (``source: api``) live in the store, like those added with
``bastion principal add``. Every change goes through ``PrincipalService``, which writes the
audit event with it, and reloads this process's snapshot before the response.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated, Literal

import anyio
from fastapi import Depends, FastAPI, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from bastion.access.dormancy import DormancyService
from bastion.errors import Conflict, MethodNotAllowed
from bastion.identity.principals import CODE_TTL, PrincipalService
from bastion.policy.authorize import Caller
from bastion.policy.holder import SnapshotHolder
from bastion.policy.snapshot import Snapshot
from bastion.respond.locks import LockService
from bastion.store.keys import DeviceKeyRow
from bastion.store.principals import PrincipalRow

from .locks import LockOut

Guard = Callable[..., Awaitable[Caller]]
Name = Annotated[str, Path(min_length=1, max_length=63, description="the principal's name")]
Thumbprint = Annotated[
    str, Path(min_length=1, max_length=64, description="the key's RFC 7638 thumbprint (jkt)")
]


class KeyOut(BaseModel):
    jkt: str = Field(description="RFC 7638 thumbprint of the public key")
    alg: str
    created_at: float = Field(description="UNIX seconds")
    revoked_at: float | None

    @classmethod
    def of(cls, row: DeviceKeyRow) -> KeyOut:
        return cls(jkt=row.jkt, alg=row.alg, created_at=row.created_at, revoked_at=row.revoked_at)


class KeyList(BaseModel):
    principal: str
    keys: list[KeyOut]


class KeyRevoked(BaseModel):
    jkt: str
    revoked: bool


class PrincipalOut(BaseModel):
    name: str
    org: str
    kind: str
    source: str = Field(description="config (bastion.yaml), cli or api")
    disabled: bool
    dormant: bool = Field(description="idle past lifecycle.dormant_after_days; enable to end")
    roles: list[str] = Field(description="control-plane roles (config principals only)")
    over_seat: bool = Field(description="beyond its vendor org's seat limit, so refused")
    created_at: float
    last_active_at: float | None


class PrincipalDetail(PrincipalOut):
    keys: list[KeyOut]
    locks: list[LockOut] = Field(
        description="active locks on this principal, its org, its keys or everything"
    )


class PrincipalList(BaseModel):
    principals: list[PrincipalOut]


class EnrollmentCode(BaseModel):
    """Shown once: only its digest is stored."""

    principal: str
    code: str
    expires_in_seconds: int


class NewPrincipal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=63)
    org: str = Field(min_length=1, max_length=63, description="an org declared in bastion.yaml")
    kind: Literal["user", "service"] = "user"


class Enablement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500, description="recorded in the audit log")


class Revocation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500, description="recorded in the audit log")


def principal_out(snapshot: Snapshot, row: PrincipalRow) -> PrincipalOut:
    declared = snapshot.config.principals.get(row.name)
    return PrincipalOut(
        name=row.name,
        org=row.org,
        kind=row.kind,
        source=row.source,
        disabled=row.disabled,
        dormant=snapshot.dormant(row.name, time.time()),
        roles=[str(role) for role in declared.roles] if declared is not None else [],
        over_seat=row.name in snapshot.over_seats,
        created_at=row.created_at,
        last_active_at=row.last_active_at,
    )


def _covers(row: PrincipalRow, jkts: Iterable[str]) -> set[tuple[str, str]]:
    """The lock targets that stop this principal (token families aside)."""
    return {
        ("all", "*"),
        ("principal", row.name),
        ("org", row.org),
        *(("key", jkt) for jkt in jkts),
    }


class PrincipalRoutes:
    def __init__(
        self,
        service: PrincipalService,
        locks: LockService,
        dormancy: DormancyService,
        holder: SnapshotHolder,
        on_change: Callable[[], Awaitable[object]],
    ) -> None:
        self._service = service
        self._locks = locks
        self._dormancy = dormancy
        self._holder = holder
        self._on_change = on_change

    def _snapshot(self) -> Snapshot:
        return self._holder.require()

    def detail(self, name: str) -> PrincipalDetail:
        row = self._service.get(name)
        keys = self._service.keys(name)
        covers = _covers(row, (key.jkt for key in keys if key.revoked_at is None))
        locks = [
            LockOut.of(lock)
            for lock in self._locks.active()
            if (lock.target_type, lock.target) in covers
        ]
        out = principal_out(self._snapshot(), row)
        return PrincipalDetail(
            **out.model_dump(), keys=[KeyOut.of(key) for key in keys], locks=locks
        )

    def add(self, body: NewPrincipal, author: str) -> None:
        config = self._snapshot().config
        if body.name in config.principals:
            raise Conflict(
                f"principal {body.name!r} is declared in bastion.yaml (config-managed): "
                "change it there"
            )
        self._service.add(
            config, body.name, kind=body.kind, org=body.org, author=author, source="api"
        )

    def show(self, name: str) -> PrincipalOut:
        return principal_out(self._snapshot(), self._service.get(name))

    def enable(self, name: str, body: Enablement, author: str) -> None:
        """End a dormancy; ``disabled: true`` in bastion.yaml is not the API's to lift."""
        self._service.get(name)
        declared = self._snapshot().config.principals.get(name)
        if declared is not None and declared.disabled:
            raise Conflict(
                f"principal {name!r} is disabled in bastion.yaml (config-managed): change it there"
            )
        self._dormancy.enable(name, author=author, reason=body.reason)

    def refuse_change(self, name: str) -> None:
        """Principals are never edited or deleted here; say where to go instead."""
        self._service.get(name)
        if name in self._snapshot().config.principals:
            raise MethodNotAllowed(
                f"principal {name!r} is declared in bastion.yaml (config-managed): change it there"
            )
        raise MethodNotAllowed(
            "principals cannot be edited or deleted through the API; "
            "lock one (POST /admin/v1/locks) to stop it at once"
        )

    def register(self, api: FastAPI, guard: Callable[[str], Guard]) -> None:
        self._register_principals(api, guard("directory_read"), guard("directory_admin"))
        self._register_keys(api, guard("directory_read"), guard("directory_admin"))

    def _register_principals(self, api: FastAPI, reader: Guard, admin: Guard) -> None:
        service = self._service

        @api.get("/v1/principals", summary="Every principal")
        def listing(_caller: Caller = Depends(reader)) -> PrincipalList:
            snapshot = self._snapshot()
            return PrincipalList(principals=[principal_out(snapshot, r) for r in service.all()])

        @api.get("/v1/principals/{name}", summary="One principal, its keys and locks")
        def show(name: Name, _caller: Caller = Depends(reader)) -> PrincipalDetail:
            return self.detail(name)

        @api.post("/v1/principals", summary="Add a principal to an org", status_code=201)
        async def add(body: NewPrincipal, caller: Caller = Depends(admin)) -> PrincipalOut:
            await anyio.to_thread.run_sync(lambda: self.add(body, f"principal:{caller.principal}"))
            await self._on_change()  # the new snapshot counts it (seats, Cedar entities)
            return await anyio.to_thread.run_sync(lambda: self.show(body.name))

        @api.post("/v1/principals/{name}/enable", summary="End a principal's dormancy")
        async def enable(
            name: Name, body: Enablement, caller: Caller = Depends(admin)
        ) -> PrincipalOut:
            author = f"principal:{caller.principal}"
            await anyio.to_thread.run_sync(lambda: self.enable(name, body, author))
            await self._on_change()
            return await anyio.to_thread.run_sync(lambda: self.show(name))

        @api.api_route(
            "/v1/principals/{name}", methods=["PUT", "PATCH", "DELETE"], include_in_schema=False
        )
        def change(name: Name, _caller: Caller = Depends(admin)) -> None:
            self.refuse_change(name)

    def _register_keys(self, api: FastAPI, reader: Guard, admin: Guard) -> None:
        service = self._service

        @api.get("/v1/principals/{name}/keys", summary="A principal's device keys")
        def keys(name: Name, _caller: Caller = Depends(reader)) -> KeyList:
            return KeyList(principal=name, keys=[KeyOut.of(row) for row in service.keys(name)])

        @api.post(
            "/v1/principals/{name}/enrollment-codes",
            summary="A one-time enrollment code, shown once",
            status_code=201,
        )
        async def code(
            name: Name, response: Response, caller: Caller = Depends(admin)
        ) -> EnrollmentCode:
            issued = await anyio.to_thread.run_sync(
                lambda: service.issue_code(name, author=f"principal:{caller.principal}")
            )
            response.headers["cache-control"] = "no-store"
            return EnrollmentCode(principal=name, code=issued, expires_in_seconds=CODE_TTL)

        @api.post("/v1/keys/{jkt}/revoke", summary="Revoke a device key now")
        async def revoke(
            jkt: Thumbprint, body: Revocation, caller: Caller = Depends(admin)
        ) -> KeyRevoked:
            await anyio.to_thread.run_sync(
                lambda: service.revoke_key(
                    jkt, author=f"principal:{caller.principal}", reason=body.reason
                )
            )
            await self._on_change()
            return KeyRevoked(jkt=jkt, revoked=True)

"""Admin API routes for what ``bastion.yaml`` declares: orgs, compartments and grants.

Orgs and compartments are config as code, reviewed in git, so these routes only read them (from
the current snapshot, with the facts it derived: seats used, who is over a seat limit); writes
are answered 405 with where to make the change. Grants are the standing ones from the config
plus the time-bound ones from approved access requests; revoking one is
``POST /admin/v1/access/grants/{id}/revoke``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Path
from pydantic import BaseModel, Field

from bastion.access.service import AccessService
from bastion.config.models import Access, Compartment, Org, Quotas
from bastion.config.vendor import Contract, WorkingHours
from bastion.errors import MethodNotAllowed, NotFound
from bastion.policy.authorize import Caller
from bastion.policy.holder import SnapshotHolder
from bastion.policy.snapshot import Snapshot

Guard = Callable[..., Awaitable[Caller]]
Name = Annotated[str, Path(min_length=1, max_length=63)]
WRITES = ["POST", "PUT", "PATCH", "DELETE"]


class OrgOut(BaseModel):
    name: str
    kind: str
    description: str
    sponsor: str | None
    contract: Contract | None = Field(description="the window its people may work in")
    allowed_networks: list[str]
    seat_limit: int | None
    seats_used: int = Field(description="enabled principals of the org")
    over_seats: list[str] = Field(description="principals beyond the seat limit (refused)")
    ceiling: str = Field(description="the highest compartment level it can ever reach")
    working_hours: WorkingHours | None


class OrgList(BaseModel):
    orgs: list[OrgOut]


class StandingGrants(BaseModel):
    orgs: list[str]
    principals: list[str]


class CompartmentOut(BaseModel):
    name: str
    level: str
    description: str
    models: list[str]
    token_binding: str
    audit: str
    allowed_networks: list[str]
    access: Access | None = Field(description="just-in-time rule; null: no requests taken")
    approvers: list[str]
    quotas: Quotas
    grants: StandingGrants


class CompartmentList(BaseModel):
    compartments: list[CompartmentOut]


class GrantOut(BaseModel):
    kind: Literal["standing", "time-bound"]
    compartment: str
    holder_type: Literal["org", "principal"]
    holder: str
    id: str | None = Field(description="time-bound grants: revoke with this id")
    request: str | None = Field(description="the access request it came from")
    granted_at: float | None
    expires_at: float | None = Field(description="UNIX seconds; null: standing")


class GrantList(BaseModel):
    grants: list[GrantOut]


def org_out(snapshot: Snapshot, name: str, org: Org) -> OrgOut:
    members = sorted(
        p.name for p in snapshot.principals.values() if p.org == name and not p.disabled
    )
    return OrgOut(
        name=name,
        kind=str(org.kind),
        description=org.description,
        sponsor=org.sponsor,
        contract=org.contract,
        allowed_networks=list(org.allowed_networks),
        seat_limit=org.seat_limit,
        seats_used=len(members),
        over_seats=[member for member in members if member in snapshot.over_seats],
        ceiling=str(org.ceiling),
        working_hours=org.working_hours,
    )


def compartment_out(snapshot: Snapshot, name: str, compartment: Compartment) -> CompartmentOut:
    return CompartmentOut(
        name=name,
        level=str(compartment.level),
        description=compartment.description,
        models=[m.name for m in snapshot.config.models if m.compartment == name],
        token_binding=str(compartment.token_binding),
        audit=str(compartment.audit),
        allowed_networks=list(compartment.allowed_networks),
        access=compartment.access,
        approvers=list(compartment.access.approvers) if compartment.access else [],
        quotas=compartment.quotas,
        grants=StandingGrants(
            orgs=list(compartment.grants.orgs), principals=list(compartment.grants.principals)
        ),
    )


def standing_grants(snapshot: Snapshot) -> list[GrantOut]:
    grants = []
    for name, compartment in snapshot.config.compartments.items():
        holders: list[tuple[Literal["org", "principal"], str]] = [
            *(("org", org) for org in compartment.grants.orgs),
            *(("principal", principal) for principal in compartment.grants.principals),
        ]
        grants += [
            GrantOut(
                kind="standing",
                compartment=name,
                holder_type=holder_type,
                holder=holder,
                id=None,
                request=None,
                granted_at=None,
                expires_at=None,
            )
            for holder_type, holder in holders
        ]
    return grants


def _read_only(noun: str) -> None:
    raise MethodNotAllowed(
        f"{noun} are declared in bastion.yaml (config as code, reviewed in git): "
        "the admin API only reads them"
    )


class DirectoryRoutes:
    def __init__(self, access: AccessService, holder: SnapshotHolder) -> None:
        self._access = access
        self._holder = holder

    def _snapshot(self) -> Snapshot:
        return self._holder.require()

    def grants(self) -> GrantList:
        timed = [
            GrantOut(
                kind="time-bound",
                compartment=row.compartment,
                holder_type="principal",
                holder=row.principal,
                id=row.id,
                request=row.request,
                granted_at=row.granted_at,
                expires_at=row.expires_at,
            )
            for row in sorted(self._access.grants(), key=lambda row: row.granted_at)
        ]
        return GrantList(grants=standing_grants(self._snapshot()) + timed)

    def register(self, api: FastAPI, guard: Callable[[str], Guard]) -> None:
        reader, admin = guard("directory_read"), guard("directory_admin")
        self._register_orgs(api, reader, admin)
        self._register_compartments(api, reader, admin)

        @api.get("/v1/grants", summary="Standing and time-bound grants")
        def grants(_caller: Caller = Depends(reader)) -> GrantList:
            return self.grants()

    def _register_orgs(self, api: FastAPI, reader: Guard, admin: Guard) -> None:
        @api.get("/v1/orgs", summary="Every org and its boundary")
        def orgs(_caller: Caller = Depends(reader)) -> OrgList:
            snapshot = self._snapshot()
            return OrgList(orgs=[org_out(snapshot, n, o) for n, o in snapshot.config.orgs.items()])

        @api.get("/v1/orgs/{name}", summary="One org and its boundary")
        def org(name: Name, _caller: Caller = Depends(reader)) -> OrgOut:
            snapshot = self._snapshot()
            found = snapshot.config.orgs.get(name)
            if found is None:
                raise NotFound(f"no org named {name!r}")
            return org_out(snapshot, name, found)

        @api.api_route("/v1/orgs", methods=WRITES, include_in_schema=False)
        @api.api_route("/v1/orgs/{name}", methods=WRITES, include_in_schema=False)
        def change_org(_caller: Caller = Depends(admin)) -> None:
            _read_only("orgs")

    def _register_compartments(self, api: FastAPI, reader: Guard, admin: Guard) -> None:
        @api.get("/v1/compartments", summary="Every compartment and its controls")
        def compartments(_caller: Caller = Depends(reader)) -> CompartmentList:
            snapshot = self._snapshot()
            return CompartmentList(
                compartments=[
                    compartment_out(snapshot, n, c) for n, c in snapshot.config.compartments.items()
                ]
            )

        @api.get("/v1/compartments/{name}", summary="One compartment")
        def compartment(name: Name, _caller: Caller = Depends(reader)) -> CompartmentOut:
            snapshot = self._snapshot()
            found = snapshot.config.compartments.get(name)
            if found is None:
                raise NotFound(f"no compartment named {name!r}")
            return compartment_out(snapshot, name, found)

        @api.api_route("/v1/compartments", methods=WRITES, include_in_schema=False)
        @api.api_route("/v1/compartments/{name}", methods=WRITES, include_in_schema=False)
        def change_compartment(_caller: Caller = Depends(admin)) -> None:
            _read_only("compartments")

"""The incidents pages: the list (``/console/incidents``) and one incident
(``/console/incidents/{id}``) with its findings, actions, timeline and blast radius, and the
forms a responder acts with — lock, unlock, revoke, resolve, assign (give it an owner).

Reading needs ``audit_read`` (auditors and admins), as the admin API's incident routes do: an
incident's timeline is a slice of the audit log. Every form needs ``lock_admin`` (revoking a
device key also ``directory_admin``, as ``POST /admin/v1/keys/{jkt}/revoke`` does). Each form
but assign asks for a reason and acts only on what the incident implicates (a target named in
the form but not in the incident is refused, so the page cannot be used to lock anything else);
an owner may be any name the CLI and admin API accept. The change is
made by the same service the admin API and CLI call, audited with the signed-in principal as the
actor, and this process's snapshot is reloaded before the answer, so the next request is
already refused.

Evidence links point at the Audit page's view of one event (``/console/audit/events/<id>``):
the page coordinates with it only through that URL.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bastion.errors import AccessDenied, BadRequest, NotFound
from bastion.identity.caep import CaepEmitter
from bastion.identity.principals import PrincipalService
from bastion.policy.holder import SnapshotHolder
from bastion.respond.incidents import MAX_REASON as MAX_RESOLUTION
from bastion.respond.incidents import IncidentDetail, IncidentService
from bastion.respond.locks import LockService
from bastion.store.incidents import STATUSES
from bastion.store.locks import LockRow

from .guard import PREFIX, ConsoleGuard, Form, Viewer
from .incident_view import (
    LOCKABLE,
    MAX_REASON,
    detail_context,
    revocable,
    summary,
)

if TYPE_CHECKING:
    from bastion.app import Services

READ = "audit_read"
WRITE = "lock_admin"
KEY_ADMIN = "directory_admin"  # revoking a device key, as the admin API asks
LIST_LIMIT = 200
_ID = re.compile(r"in_[0-9a-f]{1,32}")
_LOCK_ID = re.compile(r"lk_[0-9a-f]{1,32}")
REVOCABLE = ("family", "key")
# Lock types whose target is a principal (released from the page like a principal lock).
_PRINCIPAL_LOCKS = ("principal", "stepup", "throttle")
# Notices the detail page may show after a change, by key: never text taken from the request.
NOTICES = {
    "locked": "Locked. The change is in force from the next request.",
    "unlocked": "Lock released.",
    "revoked": "Revoked. The change is in force from the next request.",
    "resolved": "Incident resolved. Its locks stay until released.",
    "assigned": "Owner set.",
}


def reason_of(form: Form, limit: int) -> str:
    """The form's ``reason``: required, one line of printable text, at most ``limit``."""
    reason = form.get("reason", "").strip()
    if not reason:
        raise BadRequest("a reason is required: say why (it is recorded in the audit log)")
    if len(reason) > limit:
        raise BadRequest(f"the reason is longer than {limit} characters")
    if not reason.isprintable():
        raise BadRequest("the reason must be one line of printable text (no control characters)")
    return reason


def target_of(form: Form, kinds: Iterable[str]) -> tuple[str, str]:
    """The form's ``target`` (``kind:value``), with ``kind`` one of ``kinds``."""
    raw = form.get("target", "")
    kind, _, value = raw.partition(":")
    allowed = tuple(kinds)
    if not raw or kind not in allowed or not value:
        raise BadRequest(f"choose a target: one of the {', '.join(allowed)}s the incident names")
    return kind, value


class IncidentsPage:
    def __init__(
        self,
        guard: ConsoleGuard,
        incidents: IncidentService | None,
        locks: LockService,
        principals: PrincipalService,
        holder: SnapshotHolder,
        on_change: Callable[[], Awaitable[object]],
        caep: CaepEmitter | None = None,
    ) -> None:
        self.guard = guard
        self._incidents = incidents
        self._locks = locks
        self._principals = principals
        self._holder = holder
        self._on_change = on_change
        self._caep = caep

    @classmethod
    def of(cls, guard: ConsoleGuard, services: Services) -> IncidentsPage:
        """The page on the shared services (locks reload this process's snapshot)."""
        return cls(
            guard,
            services.incidents,
            services.locks,
            services.principals,
            services.holder,
            services.sync.reload,
            services.caep,
        )

    def routes(self) -> list[BaseRoute]:
        page, form = self.guard.page(READ), self.guard.form(WRITE)
        return [
            Route("/incidents", page(self.listing), methods=["GET"]),
            Route("/incidents/{incident_id}", page(self.detail), methods=["GET"]),
            Route("/incidents/{incident_id}/lock", form(self.lock), methods=["POST"]),
            Route("/incidents/{incident_id}/unlock", form(self.unlock), methods=["POST"]),
            Route("/incidents/{incident_id}/revoke", form(self.revoke), methods=["POST"]),
            Route("/incidents/{incident_id}/resolve", form(self.resolve), methods=["POST"]),
            Route("/incidents/{incident_id}/assign", form(self.assign), methods=["POST"]),
        ]

    @property
    def service(self) -> IncidentService:
        if self._incidents is None:
            raise NotFound("incidents are not enabled on this deployment")
        return self._incidents

    # -- pages ----------------------------------------------------------------------------------

    async def listing(self, request: Request, viewer: Viewer) -> Response:
        status = request.query_params.get("status", "")
        if status and status not in STATUSES:
            raise BadRequest(f"unknown incident status: use one of {', '.join(STATUSES)}")
        rows = await anyio.to_thread.run_sync(
            lambda: self.service.list(status=status or None, limit=LIST_LIMIT)
        )
        return self.guard.render(
            request,
            "incidents.html",
            viewer,
            incidents=[summary(row) for row in rows],
            current=status,
            statuses=STATUSES,
            limit=LIST_LIMIT,
        )

    async def detail(self, request: Request, viewer: Viewer) -> Response:
        incident_id = _incident_id(request)
        detail = await anyio.to_thread.run_sync(self.service.detail, incident_id)
        locks = await anyio.to_thread.run_sync(self._locks.active)
        done = request.query_params.get("done", "")
        return self.guard.render(
            request,
            "incident.html",
            viewer,
            **detail_context(detail, self._relevant(detail, locks)),
            notice=NOTICES.get(done, ""),
            may_act=self._may(request, viewer, WRITE),
        )

    def _may(self, request: Request, viewer: Viewer, action: str) -> bool:
        """Whether Cedar lets the viewer ``action`` (the forms are shown only then)."""
        try:
            self.guard.admit(request, viewer.principal, action, quiet=True)
        except AccessDenied:
            return False
        return True

    # -- forms ----------------------------------------------------------------------------------

    async def lock(self, request: Request, viewer: Viewer, form: Form) -> Response:
        incident_id = _incident_id(request)
        reason = reason_of(form, MAX_REASON)
        kind, value = target_of(form, LOCKABLE)
        row = await anyio.to_thread.run_sync(self.service.get, incident_id)
        if value not in getattr(row.entities, LOCKABLE[kind]):
            raise BadRequest(f"incident {row.id} does not name that {kind}: nothing was locked")

        def place() -> None:
            snapshot = self._holder.require()
            if not self._locks.known(kind, value, snapshot.config):
                raise NotFound(f"no {kind} {value[:64]!r} is known, so nothing was locked")
            self._locks.lock(kind, value, reason=reason, author=viewer.author)
            self.service.contain(row.id, by=viewer.author)

        await anyio.to_thread.run_sync(place)
        await self._on_change()
        return _back(row.id, "locked")

    async def unlock(self, request: Request, viewer: Viewer, form: Form) -> Response:
        incident_id = _incident_id(request)
        reason = reason_of(form, MAX_REASON)
        lock_id = form.get("lock", "")
        if not _LOCK_ID.fullmatch(lock_id):
            raise BadRequest("choose a lock to release (an id such as lk_0123abcd)")
        detail = await anyio.to_thread.run_sync(self.service.detail, incident_id)
        locks = await anyio.to_thread.run_sync(self._locks.active)
        if lock_id not in {lock.id for lock in self._relevant(detail, locks)}:
            raise BadRequest(
                f"{lock_id} is not an active lock on what incident {detail.incident.id} "
                "names: nothing was released"
            )
        await anyio.to_thread.run_sync(
            lambda: self._locks.release(lock_id, author=viewer.author, reason=reason)
        )
        await self._on_change()
        return _back(detail.incident.id, "unlocked")

    async def revoke(self, request: Request, viewer: Viewer, form: Form) -> Response:
        incident_id = _incident_id(request)
        reason = reason_of(form, MAX_REASON)
        kind, value = target_of(form, REVOCABLE)
        if kind == "key":  # the admin API's key revocation needs directory_admin too
            self.guard.admit(request, viewer.principal, KEY_ADMIN)
        detail = await anyio.to_thread.run_sync(self.service.detail, incident_id)
        if value not in revocable(detail)[kind]:
            raise BadRequest(
                f"incident {detail.incident.id} does not name that {kind}: nothing was revoked"
            )
        if kind == "key":
            await anyio.to_thread.run_sync(
                lambda: self._principals.revoke_key(value, author=viewer.author, reason=reason)
            )
        else:
            await anyio.to_thread.run_sync(
                lambda: self._revoke_family(detail, value, viewer, reason)
            )
        await anyio.to_thread.run_sync(
            lambda: self.service.contain(detail.incident.id, by=viewer.author)
        )
        await self._on_change()
        return _back(detail.incident.id, "revoked")

    def _revoke_family(
        self, detail: IncidentDetail, family: str, viewer: Viewer, reason: str
    ) -> None:
        """What the ``revoke_family`` response action does: a family lock with no expiry,
        then the CAEP session-revoked signal for its principal."""
        snapshot = self._holder.require()
        if not self._locks.known("family", family, snapshot.config):
            raise NotFound(f"no token family {family[:64]!r} is known, so nothing was revoked")
        self._locks.lock("family", family, reason=reason, author=viewer.author)
        owner = next((f.principal for f in detail.blast_radius.live_families if f.id == family), "")
        if self._caep is not None and owner:
            self._caep.on_family_revoked(owner, family, reason)

    async def resolve(self, request: Request, viewer: Viewer, form: Form) -> Response:
        incident_id = _incident_id(request)
        reason = reason_of(form, MAX_RESOLUTION)
        row = await anyio.to_thread.run_sync(
            lambda: self.service.resolve(incident_id, by=viewer.author, reason=reason)
        )
        return _back(row.id, "resolved")

    async def assign(self, request: Request, viewer: Viewer, form: Form) -> Response:
        """Give the incident an owner (the service checks the name), as the CLI and API do."""
        incident_id = _incident_id(request)
        owner = form.get("owner", "").strip()
        row = await anyio.to_thread.run_sync(
            lambda: self.service.assign(incident_id, owner=owner, by=viewer.author)
        )
        return _back(row.id, "assigned")

    # -- what the incident reaches --------------------------------------------------------------

    @staticmethod
    def _relevant(detail: IncidentDetail, locks: Iterable[LockRow]) -> list[LockRow]:
        """Active locks on what the incident names, or placed by its actions."""
        entities = detail.incident.entities
        own = {lock for action in detail.actions for lock in action.detail.get("locks", [])}
        kept = []
        for lock in locks:
            kind = "principal" if lock.target_type in _PRINCIPAL_LOCKS else lock.target_type
            named = kind in LOCKABLE and lock.target in getattr(entities, LOCKABLE[kind])
            if named or lock.id in own:
                kept.append(lock)
        return kept


def _incident_id(request: Request) -> str:
    incident_id = str(request.path_params.get("incident_id", ""))
    if not _ID.fullmatch(incident_id):
        raise NotFound("there is no incident with that id (ids look like in_0123abcd)")
    return incident_id


def _back(incident_id: str, done: str) -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/incidents/{incident_id}?done={done}", status_code=303)

"""The admin REST API (FastAPI, OpenAPI at ``/admin/openapi.json``), mounted at ``/admin``.

Thin: every route authenticates exactly like the gateway (DPoP-bound token + proof), checks
locks, asks Cedar for the control-plane action, then calls a service. Errors have the gateway's
JSON shape and are rendered here, in one place; unknown ones are a plain 500.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from bastion.audit.events import AdminAction
from bastion.audit.recorder import AuditRecorder
from bastion.errors import (
    AccessDenied,
    BadRequest,
    BastionError,
    MethodNotAllowed,
    NotFound,
    Unavailable,
)
from bastion.gateway.auth import Authenticator, caller_of
from bastion.gateway.responses import error_body, error_headers
from bastion.policy.authorize import Caller, authorize_admin, check_locks
from bastion.policy.holder import SnapshotHolder

from .access import AccessRoutes
from .audit import AuditRoutes
from .detection import DetectionRoutes
from .directory import DirectoryRoutes
from .incidents import IncidentRoutes
from .locks import LockRoutes
from .principals import PrincipalRoutes
from .response import ResponseRoutes
from .reviews import ReviewRoutes

log = logging.getLogger("bastion.api")
Guard = Callable[[Request], Awaitable[Caller]]


def _render(error: BastionError) -> Response:
    """The gateway's error shape and headers (``WWW-Authenticate`` for 401s)."""
    headers = {name.decode(): value.decode() for name, value in error_headers(error)}
    return Response(error_body(error), status_code=error.status, headers=headers)


def guard(
    holder: SnapshotHolder,
    authenticator: Authenticator,
    public_url: str,
    action: str,
    recorder: AuditRecorder | None = None,
    clock: Callable[[], float] = time.time,
    source_ip: Callable[[Request], str] | None = None,
) -> Guard:
    """A dependency: the authenticated caller, allowed by Cedar to perform ``action``. A refusal
    of an authenticated caller is recorded (``admin.denied``): control-plane probing by a valid
    credential is exactly what detection (D13) needs to see."""

    async def dependency(request: Request) -> Caller:
        now = clock()
        claims = await authenticator.authenticate(
            authorization=[v.encode("latin-1") for v in request.headers.getlist("authorization")],
            dpop=[v.encode("latin-1") for v in request.headers.getlist("dpop")],
            method=request.method,
            url=public_url + request.url.path,
            now=now,
        )
        snapshot = holder.current
        if snapshot is None:
            raise Unavailable("no policy snapshot yet; refusing all requests")
        source = source_ip(request) if source_ip is not None else ""  # for network locks
        caller = caller_of(snapshot, claims, source)
        decision = check_locks(snapshot, caller, None, now) or authorize_admin(
            snapshot, caller, action
        )
        if not decision.allowed:
            if recorder is not None:
                recorder.record(
                    AdminAction(
                        time=now,
                        actor=caller.principal,
                        action="admin.denied",
                        target_type="route",
                        target=f"{request.method} {request.url.path}"[:200],
                        reason=", ".join(decision.reasons),
                        detail={"admin_action": action, "org": caller.org},
                    )
                )
            shown = decision.shown()  # a honeytoken is told not_granted; the event says why
            raise AccessDenied(f"{action} denied ({', '.join(shown)})", tuple(shown))
        return caller

    return dependency


def create_admin_api(
    *,
    holder: SnapshotHolder,
    authenticator: Authenticator,
    public_url: str,
    audit: AuditRoutes,
    access: AccessRoutes,
    directory: DirectoryRoutes,
    principals: PrincipalRoutes,
    locks: LockRoutes,
    reviews: ReviewRoutes,
    detection: DetectionRoutes | None = None,
    recorder: AuditRecorder | None = None,
    clock: Callable[[], float] = time.time,
    source_ip: Callable[[Request], str] | None = None,
    response: ResponseRoutes | None = None,
    incidents: IncidentRoutes | None = None,
) -> FastAPI:
    api = FastAPI(
        title="Bastion admin API",
        version="1",
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
    )

    @api.exception_handler(BastionError)
    async def bastion_error(_request: Request, error: BastionError) -> Response:
        return _render(error)

    @api.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> Response:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return _render(BadRequest(f"{where}: {first.get('msg', 'invalid')}"))

    @api.exception_handler(StarletteHTTPException)
    async def no_route(request: Request, error: StarletteHTTPException) -> Response:
        if error.status_code == 405:
            return _render(MethodNotAllowed(f"{request.method[:10]} is not allowed on this route"))
        if error.status_code == 404:
            return _render(NotFound("no such admin API route (see /admin/openapi.json)"))
        return _render(BadRequest("invalid request"))

    @api.exception_handler(Exception)
    async def unexpected(request: Request, _error: Exception) -> Response:
        log.exception("unexpected admin API error on %s", request.url.path)
        return _render(BastionError("internal error"))

    def gate(action: str) -> Guard:
        return guard(holder, authenticator, public_url, action, recorder, clock, source_ip)

    if detection is not None:
        detection.register(api, gate("audit_read"))
    audit.register(api, gate("audit_read"))
    access.register(api, gate)
    for routes in (directory, principals, locks):
        routes.register(api, gate)
    reviews.register(api, gate)
    if response is not None:
        response.register(api, gate)
    if incidents is not None:
        incidents.register(api, gate)
    return api

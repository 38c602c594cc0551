"""``create_console``: the console's Starlette app, which ``create_app`` mounts at ``/console``.

Every page registers here, through the guard (``guard.py``); every response gets the security
headers. Templates are autoescaped Jinja2 (``StrictUndefined``: a missing value is an error, not
an empty string); static files are served from the package, without a build step.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from bastion.errors import BastionError, MethodNotAllowed, NotFound
from bastion.gateway.auth import Authenticator
from bastion.identity.federation import FederationVerifier, JWKSCache

from .access import AccessPage
from .attempts import SignInLimits
from .audit import AuditPage
from .auth import SignIn
from .guard import ConsoleGuard, SecurityHeaders
from .incidents import IncidentsPage
from .oidc import OidcSignIn
from .overview import Overview
from .sessions import SessionService

if TYPE_CHECKING:
    from bastion.app import Services

HERE = Path(__file__).parent


def templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def create_console(
    services: Services,
    *,
    authenticator: Authenticator,
    public_url: str,
    source_ip: Callable[[Request], str],
    clock: Callable[[], float] = time.time,
    env: Mapping[str, str] | None = None,
    attempts: SignInLimits | None = None,
) -> SecurityHeaders:
    """The console app. ``public_url`` is the configured public URL ("" when unset: the
    request's own host is used); cookies are ``Secure`` when it is https. ``env`` (default:
    the process environment) holds the identity providers' client secrets; ``attempts`` the
    sign-in limits (default: in this process's memory)."""
    sessions = SessionService(services.store, services.audit, clock)
    guard = ConsoleGuard(
        holder=services.holder,
        sessions=sessions,
        templates=templates(),
        secure_cookies=public_url.startswith("https://"),
        source_ip=source_ip,
        clock=clock,
        recorder=services.recorder,
        attempts=attempts,
    )
    oidc = OidcSignIn(
        guard,
        services.mfa,
        FederationVerifier(JWKSCache()),
        public_url,
        os.environ if env is None else env,
        clock,
    )
    sign_in = SignIn(
        guard,
        services.mfa,
        authenticator,
        public_url,
        clock,
        providers=oidc.providers,
    )
    overview = Overview(guard, services.store, clock)
    routes: list[BaseRoute] = [
        *sign_in.routes(),
        *oidc.routes(),
        *overview.routes(),
        *IncidentsPage.of(guard, services).routes(),
        *AccessPage(guard, services.access, services.reviews, services.sync.reload, clock).routes(),
        *AuditPage(guard, services.store, services.audit, services.integrity).routes(),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]

    async def not_found(request: Request, error: Exception) -> Response:
        status = error.status_code if isinstance(error, HTTPException) else 404
        shown: BastionError = (
            MethodNotAllowed(f"{request.method[:10]} is not allowed here")
            if status == 405
            else NotFound("there is no console page here")
        )
        return guard.error_page(request, shown)

    app = Starlette(routes=routes, exception_handlers={HTTPException: not_found})
    app.state.guard = guard
    return SecurityHeaders(app)

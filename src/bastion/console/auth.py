"""Signing in to the console.

1. **One-time link.** ``bastion console login`` authenticates exactly like an SDK call (the
   profile's device key: a DPoP-bound token and a fresh proof) to ``POST /console/login-links``;
   the answer is a path ``/console/login#code=...`` good for ``LINK_SECONDS`` and for one use.
   The code rides in the URL *fragment*, which browsers never send to a server, so it is in no
   access log or ``Referer``; ``console.js`` moves it into the sign-in form and submits it
   (without JavaScript, paste the code into the form).
2. **TOTP.** A principal with a TOTP factor gets a session that opens only the TOTP page until
   ``MfaService.verify`` accepts a code; the session id is then replaced.
3. **OIDC** with a configured identity provider (``oidc.py``): the login page shows a button per
   issuer with a ``console`` section.

The sign-in form is protected against login CSRF by a double-submit token: a ``SameSite=Strict``
cookie set with the form, which the form must echo.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bastion.errors import AccessDenied, BadRequest, BastionError
from bastion.gateway.auth import Authenticator, caller_of, request_url
from bastion.gateway.responses import error_body, error_headers
from bastion.identity.mfa import DIGITS, MfaRefused, MfaService
from bastion.policy.authorize import authorize_admin, check_locks

from .guard import (
    CONSOLE_ACTION,
    COOKIE,
    NOTICES,
    PREFIX,
    ConsoleGuard,
    check_csrf,
    read_form,
)
from .sessions import well_formed

LOGIN_COOKIE = "bastion_console_login"  # the sign-in form's double-submit CSRF token
LOGIN_COOKIE_SECONDS = 600


class SignIn:
    """The sign-in routes: the link endpoint for the CLI, the form, TOTP and sign-out."""

    def __init__(
        self,
        guard: ConsoleGuard,
        mfa: MfaService,
        authenticator: Authenticator,
        public_url: str,
        clock: Callable[[], float] = time.time,
        providers: Callable[[], list[str]] = list,
    ) -> None:
        self.providers = providers  # the identity providers the login page offers
        self.guard = guard
        self.sessions = guard.sessions
        self.mfa = mfa
        self.authenticator = authenticator
        self.public_url = public_url
        self._clock = clock

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/login-links", self.login_link, methods=["POST"]),
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/mfa", self.mfa_page, methods=["GET"]),
            Route("/mfa", self.mfa_submit, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
        ]

    # -- the CLI's endpoint ---------------------------------------------------------------------

    async def login_link(self, request: Request) -> Response:
        """``POST /console/login-links`` with a DPoP-bound token: a one-time sign-in path."""
        try:
            principal = await self._token_caller(request)
        except BastionError as error:
            headers = {n.decode(): v.decode() for n, v in error_headers(error)}
            return Response(error_body(error), status_code=error.status, headers=headers)
        code = self.sessions.issue_code(principal)
        body = {
            "path": f"{PREFIX}/login#code={code}",
            "expires_in": int(self.sessions.link_ttl),
            "principal": principal,
        }
        return Response(
            orjson.dumps(body),
            media_type="application/json",
            headers={"cache-control": "no-store"},
        )

    async def _token_caller(self, request: Request) -> str:
        now = self._clock()
        server = request.scope.get("server")
        url = request_url(
            self.public_url,
            request.url.scheme,
            request.headers.get("host"),
            server,
            request.url.path,
        )
        claims = await self.authenticator.authenticate(
            authorization=[v.encode("latin-1") for v in request.headers.getlist("authorization")],
            dpop=[v.encode("latin-1") for v in request.headers.getlist("dpop")],
            method=request.method,
            url=url,
            now=now,
        )
        snapshot = self.guard.holder.current
        if snapshot is None:
            raise AccessDenied("no policy snapshot yet", ("no_snapshot",))
        caller = caller_of(snapshot, claims, "")
        if caller.actor:
            raise AccessDenied(
                "a delegated token cannot open the console", ("forbidden_by_policy",)
            )
        decision = check_locks(snapshot, caller, None, now) or authorize_admin(
            snapshot, caller, CONSOLE_ACTION
        )
        if not decision.allowed:
            self.guard.refused(request, caller, CONSOLE_ACTION, decision.reasons)
            shown = decision.shown()
            raise AccessDenied(f"console access denied ({', '.join(shown)})", tuple(shown))
        return caller.principal

    # -- the browser's sign-in ------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        session_id = request.cookies.get(COOKIE, "")
        if session_id and (session := self.sessions.resolve(session_id)) is not None:
            target = "/mfa" if session.mfa_pending else "/"
            return RedirectResponse(PREFIX + target, status_code=303)
        notice = NOTICES.get(request.query_params.get("notice", ""), "")
        token = request.cookies.get(LOGIN_COOKIE, "")
        if not well_formed(token):
            token = secrets.token_urlsafe(32)
        response = self.guard.render(
            request,
            "login.html",
            None,
            form_token=token,
            notice=notice,
            providers=self.providers(),
        )
        response.set_cookie(
            LOGIN_COOKIE,
            token,
            max_age=LOGIN_COOKIE_SECONDS,
            path=PREFIX,
            secure=self.guard.secure_cookies,
            httponly=True,
            samesite="strict",
        )
        return response

    async def login(self, request: Request) -> Response:
        return await self.guard.run(request, lambda: self._login(request))

    async def _login(self, request: Request) -> Response:
        fields = await read_form(request)
        expected = request.cookies.get(LOGIN_COOKIE, "")
        given = fields.get("csrf", "")
        if not (expected and given and hmac.compare_digest(expected.encode(), given.encode())):
            raise AccessDenied(
                "missing or wrong sign-in form token: open the login link again", ("csrf",)
            )
        code = fields.get("code", "").strip()
        if not code:
            raise BadRequest("enter the login code from `bastion console login`")
        if not well_formed(code):
            raise BadRequest(
                "that is not a login code: it is the 43 characters after '#code=' in the link"
            )
        await self.guard.sign_in_attempt(request)
        principal = self.sessions.redeem(code)
        if principal is None:
            raise BadRequest(
                "this login link is unknown, already used or expired: "
                "run `bastion console login` for a new one"
            )
        self.guard.admit(request, principal)  # vendors, services, locked principals: refused
        pending = self._has_factor(principal)
        session_id = self.sessions.start(principal, method="link", mfa_pending=pending)
        response = RedirectResponse(PREFIX + ("/mfa" if pending else "/"), status_code=303)
        self.guard.set_cookie(response, session_id)
        response.delete_cookie(LOGIN_COOKIE, path=PREFIX)
        return response

    def _has_factor(self, principal: str) -> bool:
        return any(factor.principal == principal for factor in self.mfa.factors())

    async def mfa_page(self, request: Request) -> Response:
        async def page() -> Response:
            _, session = self.guard.session_of(request)
            if not session.mfa_pending:
                return RedirectResponse(PREFIX + "/", status_code=303)
            self.guard.admit(request, session.principal)
            return self.guard.render(
                request, "mfa.html", None, pending=session.principal, form_token=session.csrf
            )

        return await self.guard.run(request, page)

    async def mfa_submit(self, request: Request) -> Response:
        async def submit() -> Response:
            session_id, session = self.guard.session_of(request)
            fields = await read_form(request)
            check_csrf(request, fields, session.csrf)
            if not session.mfa_pending:
                return RedirectResponse(PREFIX + "/", status_code=303)
            self.guard.admit(request, session.principal)
            code = "".join(fields.get("code", "").split())
            try:
                if not code.isascii() or not code.isdigit() or len(code) != DIGITS:
                    raise MfaRefused(session.principal, f"the code must be {DIGITS} digits")
                self.mfa.verify(session.principal, code, self._clock())
            except MfaRefused as refused:
                return self.guard.render(
                    request,
                    "mfa.html",
                    None,
                    400,
                    pending=session.principal,
                    form_token=session.csrf,
                    error=refused.message,
                )
            new_id = self.sessions.complete_mfa(session, session_id)
            response = RedirectResponse(PREFIX + "/", status_code=303)
            self.guard.set_cookie(response, new_id)
            return response

        return await self.guard.run(request, submit)

    async def logout(self, request: Request) -> Response:
        async def out() -> Response:
            session_id, session = self.guard.session_of(request, touch=False)
            fields = await read_form(request)
            check_csrf(request, fields, session.csrf)
            self.sessions.end(session_id)
            response = RedirectResponse(PREFIX + "/login?notice=signed_out", status_code=303)
            self.guard.clear_cookie(response)
            return response

        return await self.guard.run(request, out)

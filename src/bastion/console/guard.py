"""The console's guard: the one place every page and form passes through.

``session cookie -> live session -> principal in the snapshot -> locks -> Cedar`` (the
``console_access`` admin action, then the page's own action), then the page. Anonymous visitors
are sent to the sign-in page; a locked principal is signed out (every session of theirs ends);
a refused one gets a 403 page. Every POST is checked for the session's CSRF token (form field
``csrf`` or header ``X-CSRF-Token``) before the handler runs. Errors are rendered as console
pages here, and unknown ones as a plain 500 page (logged, never shown).

Pages register through :meth:`ConsoleGuard.page` (GET) and :meth:`ConsoleGuard.form` (POST)::

    @guard.page("audit_read")
    async def audit(request: Request, viewer: Viewer) -> Response:
        return guard.render(request, "audit.html", viewer, checkpoint=...)
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import wraps
from urllib.parse import parse_qsl

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.audit.events import AdminAction
from bastion.audit.recorder import AuditRecorder
from bastion.errors import (
    AccessDenied,
    BadRequest,
    BastionError,
    BodyTooLarge,
    TooManyRequests,
    Unavailable,
)
from bastion.policy.authorize import Caller, authorize_admin, check_locks
from bastion.policy.holder import SnapshotHolder

from .attempts import SignInLimits
from .sessions import Session, SessionService

log = logging.getLogger("bastion.console")

COOKIE = "bastion_console"
PREFIX = "/console"
CONSOLE_ACTION = "console_access"
MAX_BODY = 16 * 1024  # bytes of a console form
MAX_FIELDS = 32
MAX_FIELD = 2000  # characters of one form field
MAX_TARGET = 200  # characters of a refused request's path kept in its audit event
# Notices the sign-in page may show, by key: never text taken from the request.
NOTICES = {
    "signed_out": "You are signed out.",
    "expired": "Your session ended (idle or too old). Sign in again.",
    "locked": "Your principal is locked: you were signed out.",
    "mfa": "Enter the code from your authenticator app to finish signing in.",
}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SignInRequired(Exception):
    """No live session: the visitor is sent to the sign-in page (with a notice key)."""

    def __init__(self, notice: str = "") -> None:
        super().__init__(notice)
        self.notice = notice


class MfaRequired(Exception):
    """Signed in with the link, TOTP code still owed: the visitor is sent to the TOTP page."""


@dataclass(frozen=True, slots=True)
class Viewer:
    """The signed-in principal, as a page sees it."""

    principal: str
    org: str
    roles: tuple[str, ...]
    session: Session

    @property
    def csrf(self) -> str:
        return self.session.csrf

    @property
    def author(self) -> str:
        """How services record this viewer as the actor of a change."""
        return f"principal:{self.principal}"


Form = Mapping[str, str]
PageHandler = Callable[[Request, Viewer], Awaitable[Response]]
FormHandler = Callable[[Request, Viewer, Form], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


class ConsoleGuard:
    def __init__(
        self,
        *,
        holder: SnapshotHolder,
        sessions: SessionService,
        templates: jinja2.Environment,
        secure_cookies: bool,
        source_ip: Callable[[Request], str],
        clock: Callable[[], float] = time.time,
        recorder: AuditRecorder | None = None,
        attempts: SignInLimits | None = None,
    ) -> None:
        self.holder = holder
        self.recorder = recorder
        self.attempts = SignInLimits() if attempts is None else attempts
        self.sessions = sessions
        self.templates = templates
        self.secure_cookies = secure_cookies
        self._source_ip = source_ip
        self._clock = clock

    # -- who is asking --------------------------------------------------------------------------

    async def sign_in_attempt(self, request: Request) -> None:
        """Count an anonymous sign-in attempt from the visitor's address (the trusted-proxy
        rules applied); ``TooManyRequests`` over the limits (``attempts.py``)."""
        await self.attempts.take(self._source_ip(request))

    def session_of(self, request: Request, *, touch: bool = True) -> tuple[str, Session]:
        """The cookie's session id and live session; ``SignInRequired`` without one."""
        session_id = request.cookies.get(COOKIE, "")
        if not session_id:
            raise SignInRequired()
        session = self.sessions.resolve(session_id, touch=touch)
        if session is None:
            raise SignInRequired("expired")
        return session_id, session

    def admit(
        self, request: Request, principal: str, action: str | None = None, *, quiet: bool = False
    ) -> None:
        """Check ``principal`` (locks, then Cedar's ``console_access`` and ``action``); raises
        ``AccessDenied`` when refused, ``SignInRequired("locked")`` (after ending their
        sessions) when locked. A refusal is recorded (``refused``) unless ``quiet``."""
        snapshot = self.holder.current
        if snapshot is None:
            raise Unavailable("Bastion has no policy snapshot yet; try again in a moment")
        facts = snapshot.principals.get(principal)
        if facts is None:
            self.sessions.end_all(principal, reason="unknown_principal")
            raise SignInRequired("expired")
        caller = Caller(
            principal=principal, org=facts.org, jkt="", family="", source=self._source_ip(request)
        )
        locked = check_locks(snapshot, caller, None, self._clock())
        if locked is not None:
            if not quiet:
                self.refused(request, caller, CONSOLE_ACTION, locked.reasons)
            self.sessions.end_all(principal, reason="locked")
            raise SignInRequired("locked")
        for needed in (CONSOLE_ACTION, action) if action else (CONSOLE_ACTION,):
            decision = authorize_admin(snapshot, caller, needed)
            if not decision.allowed:
                if not quiet:
                    self.refused(request, caller, needed, decision.reasons)
                shown = decision.shown()
                raise AccessDenied(
                    f"{principal} may not {_describe(needed)} ({', '.join(shown)})", tuple(shown)
                )

    def refused(
        self, request: Request, caller: Caller, needed: str, reasons: Sequence[str]
    ) -> None:
        """Record a known principal refused by the console (``admin.denied``, as the admin API
        records its refusals): a valid credential probing what it may not open is what
        detector D13 looks for. Anonymous visitors are not principals and are not recorded."""
        if self.recorder is None:
            return
        path = request.url.path
        self.recorder.record(
            AdminAction(
                time=self._clock(),
                actor=caller.principal,
                action="admin.denied",
                target_type="route",
                target=f"{request.method[:10]} {path[:MAX_TARGET]}",
                reason=", ".join(reasons),
                detail={"admin_action": needed, "org": caller.org},
            )
        )

    def viewer(
        self, request: Request, action: str | None, *, touch: bool = True, quiet: bool = False
    ) -> Viewer:
        """The signed-in viewer allowed ``action`` (and the console at all)."""
        _, session = self.session_of(request, touch=touch)
        if session.mfa_pending:
            raise MfaRequired()
        self.admit(request, session.principal, action, quiet=quiet)
        snapshot = self.holder.current
        assert snapshot is not None  # admit() checked
        facts = snapshot.principals[session.principal]
        return Viewer(session.principal, facts.org, facts.roles, session)

    # -- registering pages ----------------------------------------------------------------------

    def page(self, action: str) -> Callable[[PageHandler], Endpoint]:
        """A GET page: the handler runs only for a signed-in viewer allowed ``action``."""

        def wrap(handler: PageHandler) -> Endpoint:
            @wraps(handler)
            async def endpoint(request: Request) -> Response:
                return await self.run(
                    request, lambda: handler(request, self.viewer(request, action))
                )

            return endpoint

        return wrap

    def form(self, action: str) -> Callable[[FormHandler], Endpoint]:
        """A POST form: signed-in viewer allowed ``action``, body parsed (bounded), CSRF token
        checked; only then the handler runs. A refusal changes nothing."""

        def wrap(handler: FormHandler) -> Endpoint:
            @wraps(handler)
            async def endpoint(request: Request) -> Response:
                async def checked() -> Response:
                    viewer = self.viewer(request, action)
                    fields = await read_form(request)
                    check_csrf(request, fields, viewer.csrf)
                    return await handler(request, viewer, fields)

                return await self.run(request, checked)

            return endpoint

        return wrap

    async def run(self, request: Request, call: Callable[[], Awaitable[Response]]) -> Response:
        """Run a handler, rendering refusals and errors as console pages."""
        try:
            return await call()
        except SignInRequired as needed:
            return self.to_sign_in(needed.notice)
        except MfaRequired:
            return RedirectResponse(PREFIX + "/mfa", status_code=303)
        except BastionError as error:
            return self.error_page(request, error)
        except Exception:
            log.exception("unexpected console error on %s %s", request.method, request.url.path)
            return self.error_page(request, BastionError("internal error"))

    # -- rendering ------------------------------------------------------------------------------

    def render(
        self,
        request: Request,
        template: str,
        viewer: Viewer | None,
        status: int = 200,
        **context: object,
    ) -> HTMLResponse:
        page = self.templates.get_template(template)
        html = page.render(
            viewer=viewer, csrf=viewer.csrf if viewer else "", path=request.url.path, **context
        )
        return HTMLResponse(html, status_code=status)

    def error_page(self, request: Request, error: BastionError) -> HTMLResponse:
        viewer = None
        # the nav for a signed-in viewer; no session (or a refused one): a page without it
        with contextlib.suppress(Exception):
            viewer = self.viewer(request, None, touch=False, quiet=True)
        titles = {
            400: "Bad request",
            403: "Not allowed",
            404: "Not found",
            405: "Not allowed",
            413: "Too large",
            429: "Too many requests",
            503: "Unavailable",
        }
        title = titles.get(error.status, "Error")
        page = self.render(
            request, "error.html", viewer, error.status, title=title, message=error.message
        )
        if isinstance(error, TooManyRequests):
            page.headers["retry-after"] = str(error.retry_after)
        return page

    def to_sign_in(self, notice: str = "") -> RedirectResponse:
        target = PREFIX + "/login" + (f"?notice={notice}" if notice in NOTICES else "")
        response = RedirectResponse(target, status_code=303)
        if notice in ("expired", "locked"):
            self.clear_cookie(response)
        return response

    def set_cookie(self, response: Response, session_id: str) -> None:
        response.set_cookie(
            COOKIE,
            session_id,
            max_age=int(self.sessions.absolute),
            path=PREFIX,
            secure=self.secure_cookies,
            httponly=True,
            samesite="strict",
        )

    def clear_cookie(self, response: Response) -> None:
        response.delete_cookie(
            COOKIE, path=PREFIX, secure=self.secure_cookies, httponly=True, samesite="strict"
        )


def _describe(action: str) -> str:
    return "use the console" if action == CONSOLE_ACTION else f"open this page ({action})"


async def read_form(request: Request) -> dict[str, str]:
    """A URL-encoded form body of at most ``MAX_BODY`` bytes, ``MAX_FIELDS`` fields of at most
    ``MAX_FIELD`` characters each; the first value of a repeated field counts. An empty body
    without a content type is an empty form."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise BodyTooLarge(f"the form is larger than {MAX_BODY} bytes")
    if not body and not kind:  # a fetch() with the X-CSRF-Token header and no body
        return {}
    if kind != "application/x-www-form-urlencoded":
        raise BadRequest("console forms must be sent as application/x-www-form-urlencoded")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS, errors="strict"
        )
    except (UnicodeDecodeError, ValueError):
        raise BadRequest(
            f"the form is not valid UTF-8 URL-encoded data of at most {MAX_FIELDS} fields"
        ) from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if len(value) > MAX_FIELD:
            raise BadRequest(f"the field {name[:40]!r} is longer than {MAX_FIELD} characters")
        fields.setdefault(name, value)
    return fields


def check_csrf(request: Request, fields: Form, expected: str) -> None:
    """The form's ``csrf`` field (or the ``X-CSRF-Token`` header) must be ``expected``."""
    given = fields.get("csrf") or request.headers.get("x-csrf-token", "")
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise AccessDenied("missing or wrong CSRF token: reload the page and try again", ("csrf",))


class SecurityHeaders:
    """Adds the console's security headers to every response (plain ASGI, no buffering)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [
                    (n, v) for n, v in SECURITY_HEADERS if n not in names or n == b"cache-control"
                ]
                kept = [
                    (n, v) for n, v in message.get("headers", []) if n.lower() != b"cache-control"
                ]
                message = {**message, "headers": kept + extra}
            await send(message)

        await self.app(scope, receive, send_with_headers)

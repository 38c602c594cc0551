"""Signing in to the console with the configured OpenID Connect identity provider.

The authorization code flow with PKCE (RFC 7636, ``S256``), ``state`` and ``nonce``, for each
federation issuer with a ``console`` section (config/federation.py, docs/console.md):

1. ``GET /console/login/oidc/<issuer>`` makes a random 32-byte *flow secret*, kept in the
   browser's ``bastion_console_oidc`` cookie. ``state``, ``nonce`` and the PKCE verifier are
   derived from it (one-way, so the ``state`` and ``nonce`` the provider sees reveal nothing
   about the verifier). The ``state`` is also kept server-side (its digest, in the database, so
   any process of a cluster can finish the flow) for ``FLOW_SECONDS`` and one use. Then the
   browser goes to the provider.
2. ``GET /console/login/oidc/callback?code=...&state=...``: the ``state`` must be the one this
   browser's cookie derives (no login CSRF: an attacker cannot finish *their* sign-in in
   someone else's browser) and still unspent; the code is exchanged at the token endpoint with
   the verifier (and the client secret, for a confidential client); the id token is checked by
   :class:`FederationVerifier` (signature by the issuer's JWKS, ``iss``, ``aud`` = the client
   id, ``exp``, ``iat`` and the maximum age, ``nonce``); its principal claim names the Bastion
   principal, who must be enabled, of an org the issuer vouches for, unlocked and allowed the
   console by Cedar (``console_access``: no vendor ever is). Then the same session as a link
   sign-in, ``method: "oidc"``.

**TOTP rule.** When the id token's ``amr`` holds one of the issuer's ``mfa_amr`` values, the
provider has done multi-factor sign-in and that stands in for the TOTP step (the audit event
says ``mfa: "idp"``); otherwise a principal with a TOTP factor enters a code as after a link.

Every failure is a console error page; nothing is signed in, and no code, token or secret is
shown or logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlencode

import anyio
import httpx
import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bastion.config.federation import ExternalIssuer
from bastion.errors import AccessDenied, BadRequest, BastionError, NotFound, Unavailable
from bastion.gateway.auth import request_url
from bastion.identity.federation import FederationVerifier
from bastion.identity.mfa import MfaService
from bastion.tls import client_context

from .guard import PREFIX, ConsoleGuard
from .sessions import well_formed

log = logging.getLogger("bastion.console")

FLOW_COOKIE = "bastion_console_oidc"
FLOW_PATH = PREFIX + "/login/oidc"
CALLBACK = "/login/oidc/callback"
FLOW_SECONDS = 600  # from the click to the provider's answer
TOKEN_TIMEOUT = 5.0  # seconds for the token endpoint, connect and read
MAX_TOKEN_RESPONSE = 64 * 1024
MAX_CODE = 2000
_CODE = re.compile(r"[\x21-\x7e]+")  # RFC 6749 §A.11: printable ASCII
_ERROR = re.compile(r"[a-z_]{1,40}")  # an RFC 6749 error code; anything else is not shown
_ISSUER = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def _derive(secret: str, purpose: str) -> str:
    digest = hashlib.sha256(f"bastion-console-oidc:{purpose}:{secret}".encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def challenge(verifier: str) -> str:
    """RFC 7636 ``S256``: BASE64URL(SHA256(verifier))."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class OidcSignIn:
    """The two routes of the provider sign-in, and the list of providers the login page shows."""

    def __init__(
        self,
        guard: ConsoleGuard,
        mfa: MfaService,
        verifier: FederationVerifier,
        public_url: str,
        env: Mapping[str, str],
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.guard = guard
        self.sessions = guard.sessions
        self.mfa = mfa
        self.verifier = verifier
        self.public_url = public_url
        self._env = env
        self._clock = clock
        self._transport = transport

    def routes(self) -> list[BaseRoute]:
        return [  # the callback first: ``callback`` is refused as an issuer name (config)
            Route(CALLBACK, self.callback, methods=["GET"]),
            Route("/login/oidc/{issuer}", self.start, methods=["GET"]),
        ]

    def providers(self) -> list[str]:
        """The issuers people may sign in to the console with, by name."""
        snapshot = self.guard.holder.current
        if snapshot is None:
            return []
        issuers = snapshot.config.federation.issuers
        return sorted(name for name, issuer in issuers.items() if issuer.console is not None)

    def _issuer(self, name: str) -> ExternalIssuer:
        snapshot = self.guard.holder.current
        if snapshot is None:
            raise Unavailable("Bastion has no policy snapshot yet; try again in a moment")
        issuer = snapshot.config.federation.issuers.get(name)
        if issuer is None or issuer.console is None:
            raise NotFound(f"no identity provider named {name[:64]!r} signs in to the console")
        return issuer

    def _redirect_uri(self, request: Request) -> str:
        server = request.scope.get("server")
        host = request.headers.get("host")
        return request_url(self.public_url, request.url.scheme, host, server, PREFIX + CALLBACK)

    # -- 1. to the provider ---------------------------------------------------------------------

    async def start(self, request: Request) -> Response:
        async def go() -> Response:
            name = str(request.path_params["issuer"])
            if not _ISSUER.fullmatch(name):
                raise NotFound("that is not an identity provider's name")
            issuer = self._issuer(name)
            console = issuer.console
            assert console is not None  # _issuer checked
            await self.guard.sign_in_attempt(request)  # before anything is stored
            secret = secrets.token_urlsafe(32)
            state = _derive(secret, "state")
            self.sessions.remember_state(state, name, FLOW_SECONDS)
            query = {
                "response_type": "code",
                "client_id": console.client_id,
                "redirect_uri": self._redirect_uri(request),
                "scope": " ".join(("openid", *console.scopes)),
                "state": state,
                "nonce": _derive(secret, "nonce"),
                "code_challenge": challenge(_derive(secret, "verifier")),
                "code_challenge_method": "S256",
            }
            response = RedirectResponse(
                f"{console.authorization_endpoint}?{urlencode(query)}", status_code=303
            )
            # SameSite=Lax, not Strict like the session cookie: the provider sends the browser
            # back with a cross-site navigation, on which a Strict cookie is not sent; Lax is
            # sent on top-level GET navigations only. It is HttpOnly, scoped to these two
            # routes, lives FLOW_SECONDS and holds only the flow secret, useless without the
            # unspent server-side state and the provider's code for this client.
            response.set_cookie(
                FLOW_COOKIE,
                secret,
                max_age=FLOW_SECONDS,
                path=FLOW_PATH,
                secure=self.guard.secure_cookies,
                httponly=True,
                samesite="lax",
            )
            return response

        return await self.guard.run(request, go)

    # -- 2. back from the provider --------------------------------------------------------------

    async def callback(self, request: Request) -> Response:
        response = await self.guard.run(request, lambda: self._finish(request))
        # The flow is over either way: the cookie goes, and its state is spent or refused.
        response.delete_cookie(
            FLOW_COOKIE, path=FLOW_PATH, secure=self.guard.secure_cookies, httponly=True
        )
        return response

    async def _finish(self, request: Request) -> Response:
        params = request.query_params
        error = params.get("error")
        if error is not None:
            shown = error if _ERROR.fullmatch(error) else "an unknown error"
            raise AccessDenied(f"the identity provider did not sign you in ({shown})", ("idp",))
        secret = request.cookies.get(FLOW_COOKIE, "")
        state = params.get("state", "")
        if not state:
            raise BadRequest("the identity provider's answer has no state: sign in again")
        if not well_formed(secret):
            raise BadRequest(
                "this sign-in was not started in this browser, or took longer than "
                f"{FLOW_SECONDS // 60} minutes: sign in again"
            )
        if not hmac.compare_digest(state.encode(), _derive(secret, "state").encode()):
            raise AccessDenied(
                "the identity provider's answer belongs to another sign-in: sign in again",
                ("state",),
            )
        name = self.sessions.spend_state(state)
        if name is None:
            raise BadRequest("this sign-in has expired or was already used: sign in again")
        code = params.get("code", "")
        if not code:
            raise BadRequest("the identity provider's answer has no code: sign in again")
        if len(code) > MAX_CODE or not _CODE.fullmatch(code):
            raise BadRequest("the identity provider's code is malformed: sign in again")
        issuer = self._issuer(name)
        id_token = await self._exchange(request, name, issuer, code, _derive(secret, "verifier"))
        principal, idp_mfa = await self._identify(name, issuer, id_token, _derive(secret, "nonce"))
        self.guard.admit(request, principal)  # locks, then Cedar: vendors and services refused
        pending = not idp_mfa and any(f.principal == principal for f in self.mfa.factors())
        session_id = self.sessions.start(
            principal, method="oidc", mfa_pending=pending, idp_mfa=idp_mfa
        )
        target = PREFIX + ("/mfa" if pending else "/")
        # A page that moves on by itself rather than a redirect: this request came from the
        # provider's site, and the browser would not send the new SameSite=Strict session
        # cookie on a redirect in the same cross-site navigation. The refresh is our own.
        response = self.guard.render(request, "signed_in.html", None, target=target)
        self.guard.set_cookie(response, session_id)
        return response

    async def _exchange(
        self, request: Request, name: str, issuer: ExternalIssuer, code: str, verifier: str
    ) -> str:
        """The id token for ``code`` from the token endpoint (``authorization_code`` grant)."""
        console = issuer.console
        assert console is not None
        auth: httpx.BasicAuth | None = None
        if console.client_secret_env is not None:
            secret = self._env.get(console.client_secret_env, "")
            if not secret:
                log.error("console sign-in %s: %s is not set", name, console.client_secret_env)
                raise Unavailable(
                    f"console sign-in with {name!r} is misconfigured: its client secret "
                    f"({console.client_secret_env}) is not set in Bastion's environment"
                )
            auth = httpx.BasicAuth(console.client_id, secret)
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self._redirect_uri(request),
            "client_id": console.client_id,
            "code_verifier": verifier,
        }
        try:
            with anyio.fail_after(TOKEN_TIMEOUT):  # the whole exchange, a slow drip included
                status, raw = await self._post(console.token_endpoint, form, auth)
        except (httpx.HTTPError, TimeoutError) as exc:
            log.warning("console sign-in %s: token endpoint failed: %s", name, type(exc).__name__)
            raise Unavailable(
                "the identity provider's token endpoint did not answer in time; try again"
            ) from None
        if len(raw) > MAX_TOKEN_RESPONSE:
            log.warning("console sign-in %s: token endpoint answer over %d bytes", name, len(raw))
            raise Unavailable("the identity provider's token endpoint answer was too large")
        body = _json_object(raw)
        if status != 200:
            error = body.get("error") if body is not None else None
            shown = error if isinstance(error, str) and _ERROR.fullmatch(error) else "no reason"
            log.warning("console sign-in %s: token endpoint answered %d", name, status)
            raise AccessDenied(
                f"the identity provider refused the sign-in code ({shown}): sign in again",
                ("idp",),
            )
        id_token = body.get("id_token") if body is not None else None
        if not isinstance(id_token, str) or not id_token:
            log.warning("console sign-in %s: token endpoint gave no id token", name)
            raise Unavailable("the identity provider's token endpoint gave no id token")
        return id_token

    async def _post(
        self, url: str, form: dict[str, str], auth: httpx.BasicAuth | None
    ) -> tuple[int, bytes]:
        """POST the form; the status and at most ``MAX_TOKEN_RESPONSE`` + 1 bytes of the answer
        (reading stops there: a larger answer is refused, never held in memory whole)."""
        async with (
            httpx.AsyncClient(
                transport=self._transport,
                auth=auth,
                timeout=TOKEN_TIMEOUT,
                verify=client_context(),
            ) as client,
            client.stream("POST", url, data=form, headers={"accept": "application/json"}) as answer,
        ):
            raw = bytearray()
            async for chunk in answer.aiter_bytes():
                raw += chunk
                if len(raw) > MAX_TOKEN_RESPONSE:
                    break
            return answer.status_code, bytes(raw)

    async def _identify(
        self, name: str, issuer: ExternalIssuer, id_token: str, nonce: str
    ) -> tuple[str, bool]:
        """The principal the id token names, and whether the provider did MFA."""
        console = issuer.console
        assert console is not None
        as_client = issuer.model_copy(update={"audience": console.client_id})
        try:
            identity = await self.verifier.verify(
                id_token, {name: as_client}, nonce=nonce, now=self._clock()
            )
        except BastionError as refused:
            log.warning("console sign-in %s: id token refused: %s", name, refused.message)
            if isinstance(refused, Unavailable):
                raise
            raise AccessDenied(
                f"the identity provider's id token was refused: {refused.message}", ("idp",)
            ) from None
        snapshot = self.guard.holder.current
        assert snapshot is not None  # _issuer checked
        facts = snapshot.principals.get(identity.principal)
        if facts is None or facts.disabled:
            raise AccessDenied(
                f"{identity.principal[:64]!r} is not an enabled Bastion principal",
                ("unknown_principal",),
            )
        if facts.org not in issuer.orgs:
            raise AccessDenied(
                f"identity provider {name!r} may not vouch for principals of org {facts.org!r}",
                ("issuer_scope",),
            )
        return identity.principal, identity.mfa_at is not None


def _json_object(raw: bytes) -> dict[str, object] | None:
    if len(raw) > MAX_TOKEN_RESPONSE:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None

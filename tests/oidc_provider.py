"""A stand-in OpenID Connect provider for the console's sign-in tests, served by a real uvicorn
server on loopback (in a thread).

Each tenant (``/corp``, ``/lab``...) is one issuer with its own signing key: ``/authorize``
approves at once (redirects back with a code, or with ``error=`` when told to), ``/token``
checks the client, the redirect URI and the PKCE verifier (S256) and answers with an id token,
``/jwks`` serves the public key. Tests change a tenant's behaviour through its attributes.
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import anyio
import uvicorn
from joserfc import jwt
from joserfc.jwk import ECKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str
    user: str


@dataclass
class Tenant:
    """One issuer. ``user`` is who signs in; the other fields bend the answers for bad cases."""

    name: str
    issuer: str = ""
    client_id: str = "bastion-console"
    client_secret: str | None = None
    user: str = "audrey"
    amr: list[str] = field(default_factory=lambda: ["pwd"])
    authorize_error: str | None = None  # redirect back with error=...
    # Show an "Approve" link instead of redirecting at once: the way back is then a navigation
    # started on the provider's site, as when a user types a password there (browser tests).
    approve_page: bool = False
    token_delay: float = 0.0  # seconds before /token answers
    token_status: int = 200  # answer /token with this status (400: invalid_grant)
    token_padding: int = 0  # bytes of padding in /token's answer (an oversized answer)
    claims: dict[str, Any] = field(default_factory=dict)  # overrides in the id token
    sign_with_stranger: bool = False  # sign with a key not in the JWKS
    key: Any = field(default_factory=lambda: ECKey.generate_key("P-256"))
    grants: dict[str, Grant] = field(default_factory=dict)
    token_calls: int = 0
    last_token_form: dict[str, str] = field(default_factory=dict)

    def reset(self) -> None:
        self.client_secret = None
        self.user = "audrey"
        self.amr = ["pwd"]
        self.authorize_error = None
        self.approve_page = False
        self.token_delay = 0.0
        self.token_status = 200
        self.token_padding = 0
        self.claims = {}
        self.sign_with_stranger = False
        self.grants.clear()
        self.token_calls = 0
        self.last_token_form = {}

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/authorize", self.authorize, methods=["GET"]),
                Route("/token", self.token, methods=["POST"]),
                Route("/jwks", self.jwks, methods=["GET"]),
            ]
        )

    async def authorize(self, request: Request) -> Response:
        query = request.query_params
        redirect_uri = query.get("redirect_uri", "")
        state = query.get("state", "")
        if (
            query.get("response_type") != "code"
            or query.get("client_id") != self.client_id
            or query.get("code_challenge_method") != "S256"
            or "openid" not in query.get("scope", "").split()
            or not redirect_uri
            or not query.get("code_challenge")
            or not query.get("nonce")
        ):
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        if self.authorize_error is not None:
            back = urlencode({"error": self.authorize_error, "state": state})
            return RedirectResponse(f"{redirect_uri}?{back}", status_code=303)
        code = secrets.token_urlsafe(24)
        self.grants[code] = Grant(
            self.client_id, redirect_uri, query["code_challenge"], query["nonce"], self.user
        )
        back = f"{redirect_uri}?{urlencode({'code': code, 'state': state})}"
        if self.approve_page:
            link = f'<a id="approve" href="{html.escape(back)}">Approve</a>'
            return HTMLResponse(f"<!doctype html><title>{self.name}</title>{link}")
        return RedirectResponse(back, status_code=303)

    async def token(self, request: Request) -> Response:
        self.token_calls += 1
        form = {k: str(v) for k, v in (await request.form()).items()}
        self.last_token_form = form
        if self.token_delay:
            await anyio.sleep(self.token_delay)
        if self.token_status != 200:
            return JSONResponse({"error": "invalid_grant"}, status_code=self.token_status)
        if self.client_secret is not None:
            expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode())
            if request.headers.get("authorization", "") != "Basic " + expected.decode():
                return JSONResponse({"error": "invalid_client"}, status_code=401)
        grant = self.grants.pop(form.get("code", ""), None)  # a code works once
        if grant is None or form.get("grant_type") != "authorization_code":
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        verifier = form.get("code_verifier", "")
        digest = hashlib.sha256(verifier.encode()).digest()
        challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        if (
            challenge != grant.challenge
            or form.get("redirect_uri") != grant.redirect_uri
            or form.get("client_id") != grant.client_id
        ):
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": grant.user,
            "aud": grant.client_id,
            "iat": now,
            "exp": now + 300,
            "nonce": grant.nonce,
            "amr": self.amr,
            **self.claims,
        }
        key = ECKey.generate_key("P-256") if self.sign_with_stranger else self.key
        id_token = jwt.encode({"alg": "ES256", "kid": self.name}, claims, key)
        answer = {"access_token": "idp-access-token", "token_type": "Bearer", "id_token": id_token}
        if self.token_padding:
            answer["padding"] = "x" * self.token_padding
        return JSONResponse(answer)

    async def jwks(self, request: Request) -> Response:
        public = {**self.key.as_dict(private=False), "kid": self.name, "alg": "ES256"}
        return JSONResponse({"keys": [public]})


class Provider:
    """The tenants, served by uvicorn on ``host`` (loopback) until :meth:`close`."""

    def __init__(self, names: tuple[str, ...] = ("corp",), host: str = "127.0.0.1") -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        port = self._socket.getsockname()[1]
        self.base = f"http://{host}:{port}"
        self.tenants = {name: Tenant(name, issuer=f"{self.base}/{name}") for name in names}
        app = Starlette(routes=[Mount(f"/{n}", app=t.app()) for n, t in self.tenants.items()])
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the stand-in identity provider did not start")
            time.sleep(0.02)

    def __getitem__(self, name: str) -> Tenant:
        return self.tenants[name]

    def issuer_yaml(self, name: str, orgs: str, *, console: bool = True, extra: str = "") -> str:
        """The ``federation.issuers`` entry for tenant ``name`` (indented for the file)."""
        url = f"{self.base}/{name}"
        text = (
            f"    {name}:\n"
            f"      issuer: {url}\n"
            f"      audience: bastion\n"
            f"      jwks_uri: {url}/jwks\n"
            f"      orgs: {orgs}\n"
        )
        if console:
            text += (
                "      console:\n"
                f"        authorization_endpoint: {url}/authorize\n"
                f"        token_endpoint: {url}/token\n"
                "        client_id: bastion-console\n"
                f"{extra}"
            )
        return text

    def reset(self) -> None:
        for tenant in self.tenants.values():
            tenant.reset()

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()

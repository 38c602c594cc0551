"""``GuardMiddleware``: pure ASGI middleware that lets a model server answer only Bastion.

It wraps any ASGI app (Starlette, FastAPI, a plain callable). For each HTTP request it reads the
body (bounded: over ``max_body_bytes`` is a 413), verifies the ``Bastion-Assertion`` header
against the method, path and those exact bytes (``verify.py``), removes the header, and only then
calls the app, replaying the body to it. The verified assertion is in
``scope["bastion.assertion"]`` (principal and audit event id, for the app's own logs).

A refusal never reaches the app. It is a 401 with the Bastion error shape
``{"type": "error", "error": {"type": CODE, "code": CODE, "message": TEXT}}`` and
``WWW-Authenticate: Bastion-Assertion error="CODE"``; the guard logs the code, the method and the
path, never the assertion or the body. WebSocket connections are refused (there is no body to
bind an assertion to). ``open_paths`` lists exact paths (health probes) that GET and HEAD may
reach without an assertion.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.errors import AssertionRefused, BastionError, BodyTooLarge
from bastion.gateway.assertion import HEADER
from bastion.gateway.responses import JSON_HEADERS, error_body, send_json

from .keys import GuardKeys
from .verify import AssertionVerifier, Refusal, refuse

log = logging.getLogger("bastion.guard")
MAX_BODY_BYTES = 8 * 1024 * 1024
SCOPE_KEY = "bastion.assertion"
_HEADER = HEADER.encode("ascii")


class _Disconnected(Exception):
    """The client went away before its body was read: there is nobody to answer."""


class GuardMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        verifier: AssertionVerifier,
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
        open_paths: Collection[str] = (),
    ) -> None:
        self.app = app
        self._verifier = verifier
        self._max_body = max_body_bytes
        self._open = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            if scope["type"] == "websocket":  # close before accept: the client sees a 403
                await send({"type": "websocket.close", "code": 1008})
            return
        method: str = scope["method"]
        if scope["path"] in self._open and method in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        try:
            token = _assertion(scope["headers"])
            if token is None:  # refused before reading a byte of the body
                raise refuse(Refusal.MISSING, "this upstream only accepts requests sent by Bastion")
            body = await _read_body(receive, scope["headers"], self._max_body)
            verified = await self._verifier.verify(token, method, _target(scope), body)
        except _Disconnected:
            return
        except BastionError as error:
            log.warning("refused %s %s: %s", method, scope["path"][:200], error.code)
            await _send_refusal(send, error)
            return
        headers = [(name, value) for name, value in scope["headers"] if name != _HEADER]
        inner = {**scope, "headers": headers, SCOPE_KEY: verified}
        await self.app(inner, _replay(body, receive), send)


def protect(
    app: ASGIApp,
    *,
    jwks_url: str,
    audiences: Collection[str],
    issuer: str | None = None,
    open_paths: Collection[str] = (),
) -> GuardMiddleware:
    """``app`` behind the guard, keys from Bastion's JWKS at ``jwks_url`` (``issuer`` defaults
    to that URL without ``/.well-known/jwks.json``). The one-liner for a Python model server."""
    keys = GuardKeys(url=jwks_url)
    verifier = AssertionVerifier(
        keys, issuer=issuer or issuer_of(jwks_url), audiences=tuple(audiences)
    )
    return GuardMiddleware(app, verifier, open_paths=open_paths)


def issuer_of(jwks_url: str) -> str:
    """Bastion's issuer URL from its JWKS URL (``ISSUER/.well-known/jwks.json``)."""
    suffix = "/.well-known/jwks.json"
    if not jwks_url.endswith(suffix):
        raise ValueError(f"cannot tell Bastion's URL from a JWKS URL not ending in {suffix}")
    return jwks_url[: -len(suffix)]


def _assertion(headers: list[tuple[bytes, bytes]]) -> str | None:
    found = [value for name, value in headers if name == _HEADER]
    if not found:
        return None
    if len(found) > 1:
        raise refuse(Refusal.MALFORMED, "the request has more than one assertion header")
    try:
        return found[0].decode("ascii")
    except UnicodeDecodeError:
        raise refuse(Refusal.MALFORMED, "the assertion is not a compact JWS") from None


def _target(scope: Scope) -> str:
    """The request target as it came on the wire: raw path, and ``?query`` if there is one."""
    raw = scope.get("raw_path") or scope["path"].encode("utf-8")
    path = raw.decode("latin-1")
    query: bytes = scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path


async def _read_body(receive: Receive, headers: list[tuple[bytes, bytes]], limit: int) -> bytes:
    for name, value in headers:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise BodyTooLarge(f"request body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body exceeds {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The inner app's ``receive``: the whole body once, then the client's own messages (so it
    still hears about a disconnect)."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_refusal(send: Send, error: BastionError) -> None:
    headers = list(JSON_HEADERS)
    if isinstance(error, AssertionRefused):
        challenge = f'Bastion-Assertion error="{error.code}"'
        headers.append((b"www-authenticate", challenge.encode("ascii")))
    await send_json(send, error.status, error_body(error), headers)

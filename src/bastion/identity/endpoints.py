"""HTTP endpoints of the authorization server (not the hot path): token, enrollment, metadata.

Errors are rendered here, in the RFC 6749 §5.2 shape (``{"error", "error_description"}``);
DPoP failures at the token endpoint are ``400 invalid_dpop_proof`` (RFC 9449 §5).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bastion.detect.signals import client_fingerprint
from bastion.errors import BadRequest, BastionError, InvalidDPoPProof, InvalidRequest, OAuthError

from .dpop import DPoPVerifier
from .keys import IssuerKey, thumbprint
from .mfa import ACR_VALUES
from .principals import PrincipalService
from .service import TokenService

log = logging.getLogger("bastion.identity")
MAX_FORM_BYTES = 64 * 1024
NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}


def oauth_error(error: BastionError) -> Response:
    """Render any error of these endpoints; unknown ones are a plain 500, logged, never shown."""
    if isinstance(error, InvalidDPoPProof):
        status, code = 400, "invalid_dpop_proof"
    elif isinstance(error, OAuthError):
        status, code = error.status, error.code
    elif error.status < 500:
        status, code = 400, "invalid_request"
    elif error.status == 503:
        status, code = 503, "temporarily_unavailable"
    else:
        status, code = 500, "server_error"
    body = {"error": code, "error_description": error.message}
    return JSONResponse(body, status_code=status, headers=NO_STORE)


def guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except BastionError as error:
            return oauth_error(error)
        except Exception:
            log.exception("unexpected error at %s", request.url.path)
            return oauth_error(BastionError("internal error"))

    return endpoint


def _dpop_headers(request: Request) -> list[str]:
    return request.headers.getlist("dpop")


async def _read_limited(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise InvalidRequest("request body too large")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise InvalidRequest("request body too large")
    return body


def _parse_form(body: bytes) -> dict[str, str]:
    """``application/x-www-form-urlencoded`` with every parameter at most once (RFC 6749 §3.2)."""
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=bool(body),
            max_num_fields=32,
        )
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("the request body is not a valid form") from None
    values: dict[str, str] = {}
    for key, value in pairs:
        if key in values:
            raise InvalidRequest(f"parameter {key[:40]!r} given more than once")
        values[key] = value
    return values


class IdentityEndpoints:
    def __init__(
        self,
        *,
        tokens: TokenService,
        principals: PrincipalService,
        dpop: DPoPVerifier,
        issuer: IssuerKey,
        issuer_url: Callable[[Request], str],
        on_change: Callable[[], Awaitable[object]],
        source_ip: Callable[[Request], str],
    ) -> None:
        self._tokens = tokens
        self._principals = principals
        self._dpop = dpop
        self._issuer = issuer
        self._issuer_url = issuer_url
        self._on_change = on_change
        self._source_ip = source_ip

    def routes(self) -> list[Route]:
        return [
            Route("/oauth/token", guarded(self.token), methods=["POST"]),
            Route("/oauth/enroll", guarded(self.enroll), methods=["POST"]),
            Route("/.well-known/jwks.json", guarded(self.jwks), methods=["GET"]),
            Route(
                "/.well-known/oauth-authorization-server", guarded(self.metadata), methods=["GET"]
            ),
        ]

    async def token(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type != "application/x-www-form-urlencoded":
            raise InvalidRequest("the token endpoint takes application/x-www-form-urlencoded")
        values = _parse_form(await _read_limited(request))
        url = self._issuer_url(request) + "/oauth/token"
        grant = await self._tokens.token(
            values,
            _dpop_headers(request),
            url,
            self._source_ip(request),
            client_fingerprint(request.headers.get("user-agent")),
        )
        return JSONResponse(grant.response(), headers=NO_STORE)

    async def enroll(self, request: Request) -> Response:
        """Enroll a device key with a one-time code; the DPoP proof shows the caller holds it."""
        try:
            payload = orjson.loads(await _read_limited(request))
        except orjson.JSONDecodeError:
            raise InvalidRequest("request body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise InvalidRequest("request body must be a JSON object")
        principal, code, jwk = payload.get("principal"), payload.get("code"), payload.get("jwk")
        if not isinstance(principal, str) or not isinstance(code, str) or not isinstance(jwk, dict):
            raise InvalidRequest("send {'principal': str, 'code': str, 'jwk': {public JWK}}")
        url = self._issuer_url(request) + "/oauth/enroll"
        proof = await self._dpop.verify_async(
            _dpop_headers(request), method="POST", url=url, access_token=None, now=time.time()
        )
        try:
            same_key = thumbprint(jwk) == proof.jkt
        except Exception:
            raise BadRequest("the device key JWK is malformed") from None
        if not same_key:
            raise InvalidDPoPProof("the DPoP proof must be signed by the key being enrolled")
        jkt = self._principals.enroll_with_code(principal, code, jwk)
        await self._on_change()
        return JSONResponse({"principal": principal, "jkt": jkt}, headers=NO_STORE)

    async def jwks(self, request: Request) -> Response:
        return JSONResponse(self._issuer.jwks())

    async def metadata(self, request: Request) -> Response:
        issuer = self._issuer_url(request)
        return JSONResponse(
            {
                "issuer": issuer,
                "token_endpoint": issuer + "/oauth/token",
                "jwks_uri": issuer + "/.well-known/jwks.json",
                "grant_types_supported": [
                    "client_credentials",
                    "refresh_token",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ],
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                "token_endpoint_auth_signing_alg_values_supported": ["EdDSA", "ES256"],
                "dpop_signing_alg_values_supported": ["EdDSA", "ES256"],
                "response_types_supported": [],
                "acr_values_supported": list(ACR_VALUES),
            }
        )

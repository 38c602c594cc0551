"""DPoP authentication for httpx: what lets the official SDKs talk to Bastion unchanged.

The flow, per request: get an access token if there is none or it is about to expire (a
``client_credentials`` grant authenticated with a ``private_key_jwt`` assertion, or a
``refresh_token`` grant; both with a DPoP proof), then replace whatever credential the SDK put on
the request (OpenAI's ``Authorization: Bearer unused``, Anthropic's ``x-api-key``) with
``Authorization: DPoP <token>`` and a fresh ``DPoP`` proof for exactly this method and URL. A 401
saying ``invalid_token`` (the token was revoked or expired early) gets one new token and one retry.

The token requests are yielded from the auth flow, so they go through the caller's own client
(its transport, proxies and TLS settings). Token state is shared by every request of a client:
a thread lock guards it in sync clients, an anyio lock in async ones, so concurrent requests
never start two grants (two refreshes with one rotating refresh token would look like token theft
to the server and revoke the family).

The flow is written once, generic over the request and response types, because the SDKs use
``httpx2`` while Bastion itself uses ``httpx``; :class:`DPoPAuth` is the ``httpx`` binding.
"""

from __future__ import annotations

import abc
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar
from urllib.parse import urlsplit

import anyio
import httpx
import orjson

from bastion.errors import (
    BastionError,
    ConfigError,
    InvalidClient,
    InvalidDPoPProof,
    InvalidGrant,
    InvalidRequest,
    OAuthError,
    Unavailable,
    UnsupportedGrantType,
)
from bastion.identity.assertions import ASSERTION_TYPE, make_client_assertion
from bastion.identity.dpop import DPoPSigner, normalize_htu
from bastion.identity.keys import SigningKey

from .profile import Profile

REFRESH_MARGIN = 30.0
_MAX_DESCRIPTION = 300
_TOKEN_ERRORS: Mapping[str, type[BastionError]] = {
    "invalid_client": InvalidClient,
    "invalid_grant": InvalidGrant,
    "invalid_request": InvalidRequest,
    "invalid_dpop_proof": InvalidDPoPProof,
    "unsupported_grant_type": UnsupportedGrantType,
}


class _Request(Protocol):
    @property
    def method(self) -> str: ...
    @property
    def url(self) -> object: ...
    @property
    def headers(self) -> MutableMapping[str, str]: ...
    def read(self) -> bytes: ...
    async def aread(self) -> bytes: ...


class _Response(Protocol):
    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> MutableMapping[str, str]: ...
    @property
    def content(self) -> bytes: ...
    def read(self) -> bytes: ...
    async def aread(self) -> bytes: ...


Req = TypeVar("Req", bound=_Request)
Resp = TypeVar("Resp", bound=_Response)


@dataclass(frozen=True, slots=True)
class _Token:
    access_token: str
    refresh_token: str | None
    renew_at: float


class DPoPFlow(abc.ABC, Generic[Req, Resp]):
    """The DPoP auth flow for any httpx-shaped library; subclasses build its token requests."""

    # The body is read up front so that the retry after a 401 can send the request again.
    requires_request_body = True
    requires_response_body = False

    def __init__(self, profile: Profile, *, clock: Callable[[], float] = time.time) -> None:
        self._profile = profile
        self._key = SigningKey(profile.private_jwk)
        self._signer = DPoPSigner(self._key)
        self._origin = _origin(profile.server)
        self._clock = clock
        self._token: _Token | None = None
        self._thread_lock = threading.Lock()
        self._async_lock = anyio.Lock()

    @abc.abstractmethod
    def _new_request(self, url: str, form: dict[str, str], headers: dict[str, str]) -> Req:
        """A form-encoded POST request of the concrete HTTP library."""

    def sync_auth_flow(self, request: Req) -> Generator[Req, Resp, None]:
        self._check_origin(request)
        request.read()
        stale: _Token | None = None
        for attempt in range(2):
            with self._thread_lock:
                token = self._usable(stale)
                if token is None:
                    token = yield from self._sync_exchange(self._obtain())
                    self._token = token
            response = yield self._authorize(request, token)
            if attempt or not _token_rejected(response):
                return
            stale = token

    async def async_auth_flow(self, request: Req) -> AsyncGenerator[Req, Resp]:
        self._check_origin(request)
        await request.aread()
        stale: _Token | None = None
        for attempt in range(2):
            async with self._async_lock:
                token = self._usable(stale)
                if token is None:
                    flow = self._obtain()
                    token_request = next(flow)
                    while True:
                        token_response = yield token_request
                        await token_response.aread()
                        try:
                            token_request = flow.send(token_response)
                        except StopIteration as done:
                            token = done.value
                            break
                    self._token = token
            response = yield self._authorize(request, token)
            if attempt or not _token_rejected(response):
                return
            stale = token

    def _sync_exchange(self, flow: Generator[Req, Resp, _Token]) -> Generator[Req, Resp, _Token]:
        request = next(flow)
        while True:
            response = yield request
            response.read()
            try:
                request = flow.send(response)
            except StopIteration as done:
                token: _Token = done.value
                return token

    def _usable(self, stale: _Token | None) -> _Token | None:
        """The current token unless there is none, it was just rejected, or it is expiring."""
        token = self._token
        if token is None or token is stale or self._clock() >= token.renew_at:
            return None
        return token

    def _obtain(self) -> Generator[Req, Resp, _Token]:
        """Refresh if possible; otherwise (or if refresh fails) a new client_credentials grant."""
        current = self._token
        if current is not None and current.refresh_token:
            form = {"grant_type": "refresh_token", "refresh_token": current.refresh_token}
            response = yield self._token_request(form)
            if response.status_code == 200:
                return self._parse(response)
        assertion = make_client_assertion(
            self._key,
            client_id=self._profile.client_id,
            audience=self._profile.token_endpoint,
            now=self._clock(),
        )
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        }
        response = yield self._token_request(form)
        if response.status_code != 200:
            raise _token_error(response, self._profile.token_endpoint)
        return self._parse(response)

    def _token_request(self, form: dict[str, str]) -> Req:
        url = self._profile.token_endpoint
        proof = self._signer.proof(method="POST", url=url, now=self._clock())
        return self._new_request(url, form, {"DPoP": proof, "Accept": "application/json"})

    def _parse(self, response: Resp) -> _Token:
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            raise Unavailable("the Bastion token endpoint returned a response that is not JSON")
        access, expires_in = body.get("access_token"), body.get("expires_in")
        if not isinstance(access, str) or not access:
            raise Unavailable("the Bastion token endpoint returned no access_token")
        if str(body.get("token_type", "")).lower() != "dpop":
            raise Unavailable("the Bastion token endpoint returned a token that is not DPoP-bound")
        if not isinstance(expires_in, int) or isinstance(expires_in, bool) or expires_in <= 0:
            raise Unavailable("the Bastion token endpoint returned no valid expires_in")
        refresh = body.get("refresh_token")
        margin = min(REFRESH_MARGIN, expires_in / 2)  # short-lived tokens: renew halfway
        return _Token(
            access,
            refresh if isinstance(refresh, str) and refresh else None,
            self._clock() + expires_in - margin,
        )

    def _authorize(self, request: Req, token: _Token) -> Req:
        """Swap the SDK's placeholder credentials for the DPoP token and a fresh proof."""
        headers = request.headers
        headers.pop("x-api-key", None)
        headers["Authorization"] = f"DPoP {token.access_token}"
        headers["DPoP"] = self._signer.proof(
            method=request.method,
            url=str(request.url),
            access_token=token.access_token,
            now=self._clock(),
        )
        return request

    def _check_origin(self, request: Req) -> None:
        """Credentials go to the profile's server only, never to another host."""
        origin = _origin(str(request.url))
        if origin != self._origin:
            raise ConfigError(
                f"Bastion profile {self._profile.name!r}",
                [
                    f"refusing to send its credentials to {origin}: "
                    f"the profile's server is {self._origin}"
                ],
            )


class DPoPAuth(DPoPFlow[httpx.Request, httpx.Response], httpx.Auth):
    """``httpx.Auth`` for a Bastion profile: ``httpx.Client(auth=DPoPAuth(profile))``."""

    def _new_request(
        self, url: str, form: dict[str, str], headers: dict[str, str]
    ) -> httpx.Request:
        return httpx.Request("POST", url, data=form, headers=headers)


def _origin(url: str) -> str:
    try:
        parts = urlsplit(normalize_htu(url))
    except ValueError:
        return "an invalid URL"
    return f"{parts.scheme}://{parts.netloc}"


def _token_rejected(response: _Response) -> bool:
    challenge = response.headers.get("www-authenticate", "")
    return response.status_code == 401 and "invalid_token" in challenge


def _token_error(response: _Response, endpoint: str) -> BastionError:
    """The token endpoint's refusal as the matching error of the tree (its own words)."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    code = body.get("error") if isinstance(body, dict) else None
    description = body.get("error_description") if isinstance(body, dict) else None
    if not isinstance(code, str):
        if response.status_code >= 500:
            return Unavailable(f"{endpoint} answered HTTP {response.status_code}")
        return OAuthError(f"{endpoint} refused the grant with HTTP {response.status_code}")
    detail = f": {description[:_MAX_DESCRIPTION]}" if isinstance(description, str) else ""
    return _TOKEN_ERRORS.get(code, OAuthError)(f"{endpoint} refused the grant ({code}){detail}")

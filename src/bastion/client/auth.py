"""DPoP authentication for httpx: what lets the official SDKs talk to Bastion unchanged.

The flow, per request: get an access token if there is none or it is about to expire (a
``client_credentials`` grant authenticated with a ``private_key_jwt`` assertion, or a
``refresh_token`` grant; both with a DPoP proof), then replace whatever credential the SDK put on
the request (OpenAI's ``Authorization: Bearer unused``, Anthropic's ``x-api-key``) with
``Authorization: DPoP <token>`` and a fresh ``DPoP`` proof for exactly this method and URL. A 401
saying ``invalid_token`` (the token was revoked or expired early) gets one new token and one retry.

Step-up (RFC 9470): a 401 saying ``insufficient_user_authentication`` (the model needs a recent
MFA login) gets one new ``client_credentials`` grant with an ``mfa_code`` and one retry, when
the caller gave an ``mfa`` provider (a callable returning the current TOTP code); without one,
the 401 goes back to the caller unchanged. A profile saved by ``bastion login --mfa`` asks the
provider for a code at the first grant already, saving that round trip. Codes are sent to the
token endpoint only, never kept or logged.

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
import re
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
EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"  # noqa: S105 (a URN)
_STEP_UP = re.compile(r'(^|[\s,])error="insufficient_user_authentication"')
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

    def __init__(
        self,
        profile: Profile,
        *,
        clock: Callable[[], float] = time.time,
        mfa: Callable[[], str] | None = None,
        id_token: Callable[[], str] | None = None,
        actor_token: Callable[[], str] | None = None,
    ) -> None:
        if actor_token is not None and id_token is None:
            raise ValueError("actor_token needs id_token (the subject's id token)")
        self._profile = profile
        self._mfa = mfa
        self._id_token = id_token
        self._actor_token = actor_token
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
        step_up = False
        for attempt in range(2):
            with self._thread_lock:
                token = self._usable(stale)
                if token is None:
                    code = self._mfa_code() if self._with_mfa(step_up) else None
                    token = yield from self._sync_exchange(self._obtain(code))
                    self._token = token
            response = yield self._authorize(request, token)
            if attempt:
                return
            step_up = self._step_up_asked(response)
            if not (step_up or _token_rejected(response)):
                return
            stale = token

    async def async_auth_flow(self, request: Req) -> AsyncGenerator[Req, Resp]:
        self._check_origin(request)
        await request.aread()
        stale: _Token | None = None
        step_up = False
        for attempt in range(2):
            async with self._async_lock:
                token = self._usable(stale)
                if token is None:
                    code = None
                    if self._with_mfa(step_up):  # a prompt must not block the event loop
                        code = await anyio.to_thread.run_sync(self._mfa_code)
                    flow = self._obtain(code)
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
            if attempt:
                return
            step_up = self._step_up_asked(response)
            if not (step_up or _token_rejected(response)):
                return
            stale = token

    def _with_mfa(self, step_up: bool) -> bool:
        """Whether the next grant carries an MFA code: on a step-up, or at the first grant for a
        profile that logged in with MFA (renewals refresh, keeping that login's MFA time); both
        only when there is a provider to ask."""
        first = self._token is None and self._profile.mfa
        return self._mfa is not None and (step_up or first)

    def _step_up_asked(self, response: Resp) -> bool:
        """A 401 asking for a recent MFA login, and a provider to get a code from."""
        challenge = response.headers.get("www-authenticate", "")
        return (
            self._mfa is not None
            and response.status_code == 401
            and _STEP_UP.search(challenge) is not None
        )

    def _mfa_code(self) -> str:
        assert self._mfa is not None
        code = self._mfa()
        if not isinstance(code, str):
            raise InvalidRequest("the mfa provider must return the code as a string")
        return "".join(code.split())  # "123 456" as an authenticator app shows it

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

    def _obtain(self, mfa_code: str | None = None) -> Generator[Req, Resp, _Token]:
        """Refresh if possible; otherwise (or if refresh fails) a new client_credentials grant.
        With an MFA code, always a new grant: a refresh keeps the old login's MFA time."""
        current = self._token
        if mfa_code is None and current is not None and current.refresh_token:
            form = {"grant_type": "refresh_token", "refresh_token": current.refresh_token}
            response = yield self._token_request(form)
            if response.status_code == 200:
                return self._parse(response)
        if self._id_token is not None:
            response = yield self._token_request(self._exchange_form())
            if response.status_code != 200:
                raise _token_error(response, self._profile.token_endpoint)
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
        if mfa_code is not None:
            form["mfa_code"] = mfa_code
        response = yield self._token_request(form)
        if response.status_code != 200:
            raise _token_error(response, self._profile.token_endpoint)
        return self._parse(response)

    def _exchange_form(self) -> dict[str, str]:
        """Token exchange (RFC 8693): a fresh id token from the caller's identity provider, and
        for delegation the actor's id token; the DPoP proof by this device key binds the result."""
        assert self._id_token is not None
        form = {
            "grant_type": EXCHANGE_GRANT,
            "subject_token": self._id_token(),
            "subject_token_type": ID_TOKEN_TYPE,
        }
        if self._actor_token is not None:
            form["actor_token"] = self._actor_token()
            form["actor_token_type"] = ID_TOKEN_TYPE
        return form

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

"""A device in the drill: one principal's key, sending from one network, over real HTTP.

The drill plays both the contractor and the attacker with these. A device presents its source
network the way a trusted proxy would (``X-Forwarded-For``), so the server must trust the
drill's host as a proxy (``BASTION_TRUSTED_PROXIES``); ``bastion drill`` checks that first.
Every request is one attempt the scorecard counts: its status, the error code and reasons the
server gave, and when it was sent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import orjson

from bastion.identity.assertions import ASSERTION_TYPE, make_client_assertion
from bastion.identity.dpop import DPoPSigner
from bastion.identity.keys import SigningKey

# What a refusal BY CONTAINMENT looks like (a lock, a throttle, a spent quota, a refused login)
# as opposed to a refusal by policy (no grant, wrong network): the scorecard tells them apart.
RESPONSE_CUT = "response_cut"
CONTAINMENT = frozenset(
    {
        "locked_principal",
        "locked_org",
        "locked_key",
        "locked_family",
        "locked_network",
        "locked_compartment",
        "locked_all",
        "throttled",
        "quota_exceeded",
        "insufficient_user_authentication",
        "login_refused",
        "audit_integrity",
        "audit_unavailable",
        # An audit-required answer whose record could not be made durable is cut before its
        # last bytes (the connection closes): the same refusal, seen from the client.
        RESPONSE_CUT,
    }
)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request and what came back."""

    at: float
    what: str
    status: int
    code: str = ""
    reasons: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def served(self) -> bool:
        """The attacker got something: a model answer or an admin API result (a token alone
        is not access; what it is then used for is counted)."""
        return self.ok and self.what != "login"

    @property
    def contained(self) -> bool:
        """Refused by a lock, a throttle or a refused login rather than by policy."""
        return not self.ok and bool(CONTAINMENT.intersection((self.code, *self.reasons)))

    def describe(self) -> str:
        why = ", ".join(self.reasons) or self.code
        return f"{self.what}: {self.status}{' ' + why if why else ''}"


@dataclass(frozen=True)
class Device:
    """A principal's device key on a network. ``token`` is the access token it holds (which
    an attacker may have stolen and replay with another key)."""

    http: httpx.Client
    server: str
    principal: str
    private_jwk: dict[str, str] = field(repr=False)
    source: str = "10.20.1.10"
    token: str = field(default="", repr=False)

    def at(self, source: str) -> Device:
        """The same key and token, used from another network."""
        return replace(self, source=source)

    def holding(self, token: str) -> Device:
        return replace(self, token=token)

    @property
    def _signer(self) -> DPoPSigner:
        return DPoPSigner(SigningKey(self.private_jwk))

    def login(self) -> tuple[Device, Attempt]:
        """A client_credentials grant with this key; the device holding the new token."""
        url = self.server + "/oauth/token"
        now = time.time()
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": make_client_assertion(
                self.private_jwk, client_id=self.principal, audience=url, now=now
            ),
        }
        headers = {"DPoP": self._signer.proof(method="POST", url=url, now=now)}
        response = self.http.post(url, data=form, headers=self._headers(headers))
        body = _json(response)
        if response.status_code == 200 and isinstance(body.get("access_token"), str):
            return self.holding(body["access_token"]), Attempt(now, "login", 200)
        code = "login_refused" if response.status_code in (400, 401, 403) else ""
        error = str(body.get("error", ""))
        return self, Attempt(now, "login", response.status_code, code, (error,) if error else ())

    def chat(self, model: str, *, words: int | None = None, bearer: bool = False) -> Attempt:
        """A chat completion; ``words`` asks the stand-in upstream for a reply that long;
        ``bearer`` sends the token without a DPoP proof (as a thief without the key would)."""
        url = self.server + "/v1/chat/completions"
        body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        headers = {"content-type": "application/json"}
        if words is not None:
            headers["x-example-chunks"] = str(words)
        if bearer:
            headers["Authorization"] = f"Bearer {self.token}"
        else:
            headers["Authorization"] = f"DPoP {self.token}"
            headers["DPoP"] = self._signer.proof(
                method="POST", url=url, access_token=self.token, now=time.time()
            )
        now = time.time()
        try:
            response = self.http.post(
                url, content=orjson.dumps(body), headers=self._headers(headers)
            )
        except (httpx.RemoteProtocolError, httpx.ReadError):  # the body was never completed
            return Attempt(now, f"chat {model}", 0, RESPONSE_CUT)
        return attempt_of(now, f"chat {model}", response)

    def admin(
        self, method: str, path: str, payload: dict[str, Any] | None = None
    ) -> tuple[Attempt, dict[str, Any]]:
        """A call to the admin API with this device's token; the attempt and the JSON body."""
        url = self.server + path
        headers = {
            "Authorization": f"DPoP {self.token}",
            "DPoP": self._signer.proof(
                method=method, url=url, access_token=self.token, now=time.time()
            ),
        }
        now = time.time()
        response = self.http.request(method, url, json=payload, headers=self._headers(headers))
        return attempt_of(now, f"{method} {path}", response), _json(response)

    def _headers(self, headers: dict[str, str]) -> dict[str, str]:
        return {**headers, "X-Forwarded-For": self.source, "User-Agent": "bastion-drill"}


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def attempt_of(at: float, what: str, response: httpx.Response) -> Attempt:
    """What a response says about an attempt: status, error code, reasons."""
    body = _json(response)
    error = body.get("error")
    code, reasons = "", tuple[str, ...]()
    if isinstance(error, dict):
        code = str(error.get("code", ""))
        reasons = tuple(str(r) for r in error.get("reasons", ()) if isinstance(r, str))
    elif isinstance(error, str):
        code = error
    if response.status_code == 401:
        challenge = response.headers.get("www-authenticate", "")
        if 'error="insufficient_user_authentication"' in challenge:
            code = "insufficient_user_authentication"
    if response.status_code == 429 and not code:
        code = "quota_exceeded"
    return Attempt(at, what, response.status_code, code, reasons)

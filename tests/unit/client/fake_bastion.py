"""A fake Bastion for client tests: a token endpoint and a resource that check what the client
sends with Bastion's real verifiers (client assertions, DPoP proofs, access tokens, binding).

It speaks through ``httpx.MockTransport`` or ``httpx2.MockTransport``; nothing touches a network.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson

from bastion.errors import (
    AuthenticationError,
    BastionError,
    InsufficientUserAuthentication,
    InvalidClient,
    InvalidGrant,
    InvalidToken,
)
from bastion.identity.access_tokens import AccessTokenCodec
from bastion.identity.assertions import ASSERTION_TYPE, verify_client_assertion
from bastion.identity.dpop import DPoPVerifier, check_binding
from bastion.identity.keys import IssuerKey, public_jwk, thumbprint
from bastion.identity.replay import MemoryReplayCache

SERVER = "https://bastion.test"


class Clock:
    """A settable clock shared by the fake server and the client under test."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Seen:
    """One request the resource endpoint accepted or refused, for assertions."""

    method: str
    path: str
    headers: dict[str, list[str]]
    body: bytes
    status: int
    sub: str | None = None


@dataclass
class FakeBastion:
    client_id: str
    private_jwk: dict[str, str]
    clock: Clock = field(default_factory=Clock)
    access_ttl: int = 600
    token_delay: float = 0.0
    grants: list[str] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    fail_refresh: bool = False
    reject_tokens: int = 0  # how many resource requests to refuse (after they verified)
    reject_with: type[AuthenticationError] = InvalidToken
    step_up: int = 0  # how many resource requests to answer with a step-up challenge (RFC 9470)
    mfa_codes: list[str | None] = field(default_factory=list)  # per token request

    def __post_init__(self) -> None:
        self.issuer = IssuerKey.generate()
        self.codec = AccessTokenCodec(self.issuer, SERVER, SERVER)
        self.dpop = DPoPVerifier(MemoryReplayCache())
        self.assertion_replay = MemoryReplayCache()
        enrolled = public_jwk(self.private_jwk)
        self.enrolled = {(self.client_id, thumbprint(enrolled)): enrolled}
        self.refresh_tokens: dict[str, tuple[str, str]] = {}  # token -> (jkt, family)
        self.lock = threading.Lock()

    # -- the one entry point, independent of httpx / httpx2 -------------------------------------

    def handle(
        self, method: str, url: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            multi: dict[str, list[str]] = {}
            for name, value in headers:
                multi.setdefault(name.lower(), []).append(value)
            path = url.removeprefix(SERVER).split("?")[0]
            if path == "/oauth/token":
                return self._token(url, multi, body)
            return self._resource(method, url, path, multi, body)

    def _token(
        self, url: str, headers: dict[str, list[str]], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if self.token_delay:
            time.sleep(self.token_delay)
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        grant = form.get("grant_type", "")
        self.grants.append(grant)
        self.mfa_codes.append(form.get("mfa_code"))
        now = self.clock()
        try:
            proof = self.dpop.verify(
                headers.get("dpop", []), method="POST", url=url, access_token=None, now=now
            )
            if grant == "client_credentials":
                if form.get("client_assertion_type") != ASSERTION_TYPE:
                    raise InvalidClient("wrong client_assertion_type")
                client = verify_client_assertion(
                    form.get("client_assertion", ""),
                    audiences={SERVER + "/oauth/token"},
                    lookup=lambda client_id, kid: self.enrolled.get((client_id, kid)),
                    replay=self.assertion_replay,
                    now=now,
                )
                if client.jkt != proof.jkt:
                    raise InvalidClient("the DPoP proof must be signed by the assertion's key")
                family = "fam_" + secrets.token_hex(4)
            elif grant == "refresh_token":
                jkt, family = self.refresh_tokens.pop(form.get("refresh_token", ""), ("", ""))
                if self.fail_refresh or not jkt:
                    raise InvalidGrant("unknown refresh token")
                if jkt != proof.jkt:
                    raise InvalidGrant("the refresh token is bound to another device key")
            else:
                raise InvalidGrant("unsupported grant")
        except BastionError as error:
            return (
                error.status,
                {},
                orjson.dumps({"error": error.code, "error_description": error.message}),
            )
        token, _ = self.codec.issue(
            sub=self.client_id,
            client_id=self.client_id,
            org="lab",
            jkt=proof.jkt,
            family=family,
            ttl=self.access_ttl,
            now=now,
        )
        refresh = secrets.token_urlsafe(16)
        self.refresh_tokens[refresh] = (proof.jkt, family)
        answer = {
            "access_token": token,
            "token_type": "DPoP",
            "expires_in": self.access_ttl,
            "refresh_token": refresh,
        }
        return 200, {"content-type": "application/json"}, orjson.dumps(answer)

    def _resource(
        self, method: str, url: str, path: str, headers: dict[str, list[str]], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        seen = Seen(method, path, headers, body, 401)
        self.seen.append(seen)
        now = self.clock()
        try:
            authorization = headers.get("authorization", [])
            if len(authorization) != 1 or not authorization[0].startswith("DPoP "):
                raise InvalidToken("send exactly one 'Authorization: DPoP <token>'")
            token = authorization[0].removeprefix("DPoP ")
            claims = self.codec.verify(token, now)
            proof = self.dpop.verify(
                headers.get("dpop", []), method=method, url=url, access_token=token, now=now
            )
            check_binding(proof, claims.jkt)
            if self.reject_tokens:
                self.reject_tokens -= 1
                raise self.reject_with("the token family is locked")
            if self.step_up:
                self.step_up -= 1
                raise InsufficientUserAuthentication("a recent MFA login is needed", 300)
        except AuthenticationError as error:
            challenge = f'DPoP error="{error.code}", error_description="{error.message}"'
            if isinstance(error, InsufficientUserAuthentication):
                challenge += f", max_age={error.max_age}"
            return 401, {"www-authenticate": challenge}, orjson.dumps({"error": error.code})
        seen.status, seen.sub = 200, claims.sub
        return 200, {"content-type": "application/json"}, _answer(path, claims.sub)


def _answer(path: str, sub: str) -> bytes:
    """Just enough of each provider's response shape for its SDK to parse."""
    payload: dict[str, Any]
    if path.endswith("/chat/completions"):
        payload = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": "demo-chat",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"hello {sub}"},
                    "finish_reason": "stop",
                }
            ],
        }
    elif path.endswith("/messages"):
        payload = {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "demo-claude",
            "content": [{"type": "text", "text": f"hello {sub}"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 2},
        }
    else:
        payload = {"ok": True, "sub": sub}
    return orjson.dumps(payload)

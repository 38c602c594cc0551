"""A Bastion issuer key, its JWKS in a file, and the guard under test around a recording app."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest
from starlette.types import Receive, Scope, Send

from bastion.gateway.assertion import UpstreamAssertions
from bastion.guard import AssertionVerifier, GuardKeys, GuardMiddleware
from bastion.identity.keys import IssuerKey
from bastion.policy.snapshot import ModelRoute

ISSUER = "https://bastion.test"
AUDIENCE = "http://model.test/v1"
PATH = "/v1/chat/completions"
BODY = b'{"model":"example-gpt","messages":[{"role":"user","content":"hi"}]}'
NOW = 1_800_000_000.0
ROUTE = ModelRoute(
    name="demo-chat",
    compartment="general",
    upstream="example-openai",
    upstream_model="example-gpt",
    api="openai",
    base_url=AUDIENCE,
    connect_timeout=5,
    read_timeout=60,
)


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Inner:
    """The model server: records what reached it."""

    calls: list[tuple[Scope, bytes]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.calls.append((scope, body))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"model says hi"})


@dataclass
class Guarded:
    """The guard around a recording app, with the Bastion key that signs for it."""

    issuer: IssuerKey
    signer: UpstreamAssertions
    clock: Clock
    inner: Inner
    app: GuardMiddleware

    def assertion(
        self, *, target: str = PATH, body: bytes = BODY, route: ModelRoute = ROUTE
    ) -> str:
        return self.signer.sign(route, "POST", target, body, subject="alice", event_id="ev-1")

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://model.test"
        )

    async def post(
        self, token: str | None, body: bytes = BODY, path: str = PATH, **headers: str
    ) -> httpx.Response:
        if token is not None:
            headers["bastion-assertion"] = token
        async with self.client() as client:
            return await client.post(path, content=body, headers=headers)


def write_jwks(path: Path, *keys: IssuerKey) -> Path:
    path.write_bytes(orjson.dumps({"keys": [k for key in keys for k in key.jwks()["keys"]]}))
    return path


@pytest.fixture
def issuer() -> IssuerKey:
    return IssuerKey.generate()


@pytest.fixture
def guarded(tmp_path: Path, issuer: IssuerKey) -> Guarded:
    clock = Clock()
    keys = GuardKeys(file=write_jwks(tmp_path / "jwks.json", issuer))
    verifier = AssertionVerifier(keys, issuer=ISSUER, audiences=[AUDIENCE], clock=clock)
    inner = Inner()
    app = GuardMiddleware(inner, verifier, max_body_bytes=64 * 1024, open_paths=["/healthz"])
    return Guarded(issuer, UpstreamAssertions(issuer, ISSUER, clock), clock, inner, app)

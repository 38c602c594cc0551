"""Threat T10 end to end: the stand-in model server runs behind ``GuardMiddleware`` with the keys
from Bastion's own JWKS. Calls through Bastion (official SDKs, plain and streaming) pass; calls
straight to the model server, replayed assertions and assertions moved to another body do not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anthropic
import httpx
import httpx2
import openai
import orjson
import pytest
from examples.upstream import create_app as create_upstream
from starlette.types import Receive, Scope, Send

from bastion.guard import AssertionVerifier, GuardKeys, GuardMiddleware
from bastion.identity import jws
from bastion.testing import BASE_URL, Harness
from tests.conftest import CONFIG, UPSTREAM_KEY

pytestmark = pytest.mark.anyio
ANTHROPIC_AUDIENCE = "urn:example:anthropic"
CHAT = b'{"model":"example-gpt","messages":[{"role":"user","content":"hi"}]}'


class LateApp:
    """Bastion's app, once it runs: the guard is built before it (it is Bastion's upstream)."""

    app: object = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert callable(self.app)
        await self.app(scope, receive, send)


@dataclass
class Sent:
    """One request as Bastion sent it to the guarded model server."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Recorder(httpx2.AsyncBaseTransport):
    """Bastion's upstream transport: records each request, then hands it to the guard."""

    inner: httpx2.AsyncBaseTransport
    sent: list[Sent] = field(default_factory=list)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        self.sent.append(Sent(request.url.raw_path.decode(), dict(request.headers), body))
        return await self.inner.handle_async_request(request)


@pytest.fixture
def config_text() -> str:
    anthropic_upstream = "    base_url: http://upstream.test\n"
    misaimed = (
        "  misaimed:\n    base_url: http://upstream.test/v1\n    api: openai\n"
        "    api_key_env: EXAMPLE_UPSTREAM_KEY\n    assertion_audience: urn:not-this-upstream\n"
    )
    text = CONFIG.replace(
        anthropic_upstream, anthropic_upstream + f"    assertion_audience: {ANTHROPIC_AUDIENCE}\n"
    ).replace("models:\n", misaimed + "models:\n")
    return text.replace(
        "models:\n",
        "models:\n  - {name: demo-misaimed, upstream: misaimed, upstream_model: example-gpt, "
        "compartment: general}\n",
    )


@pytest.fixture
def late() -> LateApp:
    return LateApp()


@pytest.fixture
def guard(late: LateApp) -> GuardMiddleware:
    keys = GuardKeys(
        url="https://bastion.test/.well-known/jwks.json",
        transport=httpx.ASGITransport(app=late),
    )
    verifier = AssertionVerifier(
        keys, issuer=BASE_URL, audiences=["http://upstream.test/v1", ANTHROPIC_AUDIENCE]
    )
    return GuardMiddleware(create_upstream(api_key=UPSTREAM_KEY), verifier)


@pytest.fixture
def upstream_transport(guard: GuardMiddleware) -> Recorder:
    return Recorder(httpx2.ASGITransport(app=guard))


@pytest.fixture
async def bastion(harness: Harness, late: LateApp) -> Harness:
    late.app = harness.app
    return harness


@pytest.fixture
async def direct(guard: GuardMiddleware) -> AsyncIterator[httpx2.AsyncClient]:
    """A caller who found the model server's address and skips Bastion."""
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=guard), base_url="http://upstream.test"
    ) as client:
        yield client


async def sdk(harness: Harness) -> tuple[openai.AsyncOpenAI, anthropic.AsyncAnthropic]:
    profile = harness.profiles.get("alice") or await harness.enroll("alice")
    http = harness.sdk_client(profile)
    return (
        openai.AsyncOpenAI(base_url=BASE_URL + "/v1", api_key="unused", http_client=http),
        anthropic.AsyncAnthropic(base_url=BASE_URL, api_key="unused", http_client=http),
    )


def claims_of(sent: Sent) -> dict[str, object]:
    return jws.json_object(jws.parse(sent.headers["bastion-assertion"]).payload)


def refusal(response: httpx2.Response) -> str:
    assert response.status_code == 401, response.text
    code = response.json()["error"]["code"]
    assert response.headers["www-authenticate"] == f'Bastion-Assertion error="{code}"'
    assert isinstance(code, str)
    return code


async def test_sdk_calls_through_bastion_pass_the_guard(
    bastion: Harness, upstream_transport: Recorder
) -> None:
    oai, claude = await sdk(bastion)
    reply = await oai.chat.completions.create(
        model="demo-chat", messages=[{"role": "user", "content": "through the guard"}]
    )
    assert "through the guard" in (reply.choices[0].message.content or "")
    stream = await oai.chat.completions.create(
        model="demo-chat", messages=[{"role": "user", "content": "stream it"}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert "stream it" in text
    message = await claude.messages.create(
        model="demo-claude", max_tokens=64, messages=[{"role": "user", "content": "hi claude"}]
    )
    assert "hi claude" in message.content[0].text  # type: ignore[union-attr]
    async with claude.messages.stream(
        model="demo-claude", max_tokens=64, messages=[{"role": "user", "content": "stream claude"}]
    ) as claude_stream:
        assert "stream claude" in "".join([t async for t in claude_stream.text_stream])
    audiences = [claims_of(sent)["aud"] for sent in upstream_transport.sent]
    assert audiences == ["http://upstream.test/v1"] * 2 + [ANTHROPIC_AUDIENCE] * 2


async def test_the_assertion_names_the_caller_and_the_audit_event(
    bastion: Harness, upstream_transport: Recorder
) -> None:
    profile = await bastion.enroll("alice")
    async with bastion.client(profile) as client:
        response = await client.post(
            "/v1/chat/completions",
            json={"model": "demo-chat", "messages": [{"role": "user", "content": "x"}]},
        )
    assert response.status_code == 200
    [sent] = upstream_transport.sent
    claims = claims_of(sent)
    assert claims["sub"] == "alice"
    assert claims["txn"] == response.headers["x-bastion-event"]
    assert claims["iss"] == BASE_URL
    assert orjson.loads(sent.body)["model"] == "example-gpt"  # the rewritten body is what is signed


async def test_a_direct_call_is_refused(bastion: Harness, direct: httpx2.AsyncClient) -> None:
    headers = {"authorization": f"Bearer {UPSTREAM_KEY}"}  # even with the stolen upstream key
    response = await direct.post("/v1/chat/completions", content=CHAT, headers=headers)
    assert refusal(response) == "missing_assertion"
    forged = {**headers, "bastion-assertion": "eyJhbGciOiJub25lIn0.e30."}
    response = await direct.post("/v1/chat/completions", content=CHAT, headers=forged)
    assert refusal(response) == "unsupported_alg"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_captured_assertion_cannot_be_replayed_or_moved(
    bastion: Harness, upstream_transport: Recorder, direct: httpx2.AsyncClient, stream: bool
) -> None:
    oai, _ = await sdk(bastion)
    if stream:
        chunks = await oai.chat.completions.create(
            model="demo-chat", messages=[{"role": "user", "content": "secret"}], stream=True
        )
        assert [c async for c in chunks]
    else:
        await oai.chat.completions.create(
            model="demo-chat", messages=[{"role": "user", "content": "secret"}]
        )
    [sent] = upstream_transport.sent
    replayed = await direct.post(sent.path, content=sent.body, headers=sent.headers)
    assert refusal(replayed) == "replayed"
    other = sent.body.replace(b"secret", b"other!")
    moved = await direct.post(sent.path, content=other, headers=sent.headers)
    assert refusal(moved) == "body_mismatch"


async def test_a_guard_that_refuses_bastion_is_a_clear_502_for_the_caller(
    bastion: Harness,
) -> None:
    oai, _ = await sdk(bastion)
    with pytest.raises(openai.InternalServerError) as refused:
        await oai.chat.completions.create(
            model="demo-misaimed", messages=[{"role": "user", "content": "hi"}]
        )
    assert refused.value.status_code == 502
    assert "refused Bastion's credentials" in refused.value.message

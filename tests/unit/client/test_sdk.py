"""The official SDKs (openai 3, anthropic 2, both on httpx2) through the client helper, in-process:
the fake Bastion verifies the DPoP token and proof of every call they make."""

from __future__ import annotations

import asyncio
import time

import anthropic
import httpx2
import openai
import pytest

from bastion.client import Profile, async_http_client, http_client
from bastion.client.sdk import SDKDPoPAuth
from bastion.identity.keys import generate_private_jwk

from .fake_bastion import SERVER, FakeBastion


@pytest.fixture
def device_jwk() -> dict[str, str]:
    return generate_private_jwk()


@pytest.fixture
def profile(device_jwk: dict[str, str]) -> Profile:
    return Profile(server=SERVER, client_id="alice", private_jwk=device_jwk)


@pytest.fixture
def fake(device_jwk: dict[str, str]) -> FakeBastion:
    bastion = FakeBastion("alice", device_jwk)
    bastion.clock.now = time.time()  # the SDK clients sign with the real clock
    return bastion


def transport(fake: FakeBastion) -> httpx2.MockTransport:
    def handle(request: httpx2.Request) -> httpx2.Response:
        status, headers, body = fake.handle(
            request.method, str(request.url), request.headers.multi_items(), request.read()
        )
        return httpx2.Response(status, headers=headers, content=body)

    return httpx2.MockTransport(handle)


def assert_sent_dpop_only(fake: FakeBastion) -> None:
    (seen,) = fake.seen
    assert seen.status == 200
    assert len(seen.headers["authorization"]) == 1
    assert seen.headers["authorization"][0].startswith("DPoP ")
    assert "x-api-key" not in seen.headers
    assert fake.grants == ["client_credentials"]


def test_openai_sdk_calls_go_out_dpop_bound(profile: Profile, fake: FakeBastion) -> None:
    http = http_client(profile, transport=transport(fake))
    assert isinstance(http.auth, SDKDPoPAuth)
    client = openai.OpenAI(base_url=f"{SERVER}/v1", api_key="unused", http_client=http)
    completion = client.chat.completions.create(
        model="demo-chat", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.choices[0].message.content == "hello alice"
    assert_sent_dpop_only(fake)
    assert fake.seen[0].path == "/v1/chat/completions"


def test_anthropic_sdk_calls_go_out_dpop_bound(profile: Profile, fake: FakeBastion) -> None:
    http = http_client(profile, transport=transport(fake))
    client = anthropic.Anthropic(base_url=SERVER, api_key="unused", http_client=http)
    message = client.messages.create(
        model="demo-claude", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].text == "hello alice"  # type: ignore[union-attr]
    assert_sent_dpop_only(fake)
    assert fake.seen[0].path == "/v1/messages"


def test_async_sdks_go_out_dpop_bound(profile: Profile, fake: FakeBastion) -> None:
    async def main() -> tuple[str | None, str]:
        http = async_http_client(profile, transport=transport(fake))
        oa = openai.AsyncOpenAI(base_url=f"{SERVER}/v1", api_key="unused", http_client=http)
        an = anthropic.AsyncAnthropic(base_url=SERVER, api_key="unused", http_client=http)
        completion = await oa.chat.completions.create(
            model="demo-chat", messages=[{"role": "user", "content": "hi"}]
        )
        message = await an.messages.create(
            model="demo-claude", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
        await http.aclose()
        return completion.choices[0].message.content, message.content[0].text  # type: ignore[union-attr]

    assert asyncio.run(main()) == ("hello alice", "hello alice")
    assert [seen.status for seen in fake.seen] == [200, 200]
    assert fake.grants == ["client_credentials"]  # one token for both SDKs on one client

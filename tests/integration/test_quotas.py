"""Quotas end to end: the third request in a minute is a 429 with Retry-After; usage counts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import openai
import orjson
import pytest

from bastion.store import events as event_rows
from bastion.testing import BASE_URL, Harness, running
from tests.conftest import CONFIG

pytestmark = pytest.mark.anyio
LIMITED = CONFIG.replace(
    """    grants:
      orgs: [lab]
""",
    """    grants:
      orgs: [lab]
    quotas:
      principal: {requests_per_minute: 2, tokens_per_hour: 1000000}
      org: {tokens_per_hour: 25}
""",
    1,
)


@pytest.fixture
async def limited(
    tmp_path: Path, upstream_env: dict[str, str], upstream_transport: httpx2.ASGITransport
) -> AsyncIterator[Harness]:
    assert LIMITED != CONFIG
    async with running(LIMITED, tmp_path, upstream=upstream_transport, env=upstream_env) as h:
        yield h


async def test_requests_per_minute_gives_429_with_retry_after(limited: Harness) -> None:
    client = openai.AsyncOpenAI(
        base_url=BASE_URL + "/v1",
        api_key="unused",
        http_client=limited.sdk_client(await limited.enroll("alice")),
        max_retries=0,
    )
    hello = [{"role": "user", "content": "hi"}]
    await client.chat.completions.create(model="demo-chat", messages=hello)
    await client.chat.completions.create(model="demo-chat", messages=hello)
    with pytest.raises(openai.RateLimitError) as limited_error:
        await client.chat.completions.create(model="demo-chat", messages=hello)
    response = limited_error.value.response
    assert response.status_code == 429
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert response.json()["error"]["code"] == "quota_exceeded"
    await client.close()
    await limited.services.recorder.flush()
    with limited.services.store.read() as conn:
        last = orjson.loads(event_rows.last(conn, 1, "request.decided")[0].body)
    assert (last["allowed"], last["reasons"], last["status"]) == (False, ["quota_exceeded"], 429)


async def test_org_token_budget_is_shared_across_principals(limited: Harness) -> None:
    body = {"model": "demo-chat", "messages": [{"role": "user", "content": "one two three"}]}
    async with limited.client(await limited.enroll("alice")) as alice:
        assert (await alice.post("/v1/chat/completions", json=body)).status_code == 200
        assert (await alice.post("/v1/chat/completions", json=body)).status_code == 200
    async with limited.client(await limited.enroll("bob")) as bob:
        refused = await bob.post("/v1/chat/completions", json=body)  # lab spent its 25 tokens
    assert refused.status_code == 429
    assert "LLM tokens per hour for org 'lab'" in refused.json()["error"]["message"]

"""The gateway end to end in-process: official SDKs → Bastion → stand-in upstream."""

from __future__ import annotations

import asyncio

import anthropic
import httpx2
import openai
import orjson
import pytest

from bastion.client import Profile
from bastion.store import events as event_rows
from bastion.testing import BASE_URL, Harness

pytestmark = pytest.mark.anyio


async def profile_of(harness: Harness, principal: str) -> Profile:
    return harness.profiles.get(principal) or await harness.enroll(principal)


async def oai(harness: Harness, principal: str) -> openai.AsyncOpenAI:
    profile = await profile_of(harness, principal)
    return openai.AsyncOpenAI(
        base_url=BASE_URL + "/v1", api_key="unused", http_client=harness.sdk_client(profile)
    )


async def claude(harness: Harness, principal: str) -> anthropic.AsyncAnthropic:
    profile = await profile_of(harness, principal)
    return anthropic.AsyncAnthropic(
        base_url=BASE_URL, api_key="unused", http_client=harness.sdk_client(profile)
    )


async def decided(harness: Harness) -> list[dict[str, object]]:
    await harness.services.recorder.flush()
    with harness.services.store.read() as conn:
        rows = event_rows.last(conn, 1000, "request.")
    return [orjson.loads(row.body) for row in rows]


async def test_chat_completion_allowed_and_recorded(harness: Harness) -> None:
    client = await oai(harness, "alice")
    reply = await client.chat.completions.create(
        model="demo-chat", messages=[{"role": "user", "content": "hello there"}]
    )
    assert "You said: hello there" in (reply.choices[0].message.content or "")
    events = await decided(harness)
    assert events[-1]["allowed"] is True
    assert events[-1]["principal"] == "alice"
    assert events[-1]["model"] == "demo-chat"
    assert events[-1]["tokens_out"] == reply.usage.completion_tokens  # type: ignore[union-attr]
    assert events[-1]["reasons"] == ["granted"]


async def test_chat_stream_passes_chunks(harness: Harness) -> None:
    client = await oai(harness, "alice")
    stream = await client.chat.completions.create(
        model="demo-chat",
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces = [c.choices[0].delta.content async for c in stream if c.choices]
    assert len(pieces) > 3
    assert "stream please" in "".join(p or "" for p in pieces)
    events = await decided(harness)
    assert events[-1]["stream"] is True
    assert events[-1]["outcome"] == "completed"
    assert isinstance(events[-1]["tokens_out"], int)


async def test_anthropic_messages_plain_and_streaming(harness: Harness) -> None:
    client = await claude(harness, "alice")
    message = await client.messages.create(
        model="demo-claude", max_tokens=64, messages=[{"role": "user", "content": "hi claude"}]
    )
    assert "hi claude" in message.content[0].text  # type: ignore[union-attr]
    async with client.messages.stream(
        model="demo-claude", max_tokens=64, messages=[{"role": "user", "content": "stream it"}]
    ) as stream:
        text = "".join([t async for t in stream.text_stream])
    assert "stream it" in text
    events = await decided(harness)
    assert events[-1]["tokens_out"] is not None


async def test_embeddings_and_completions(harness: Harness) -> None:
    client = await oai(harness, "bob")
    vectors = await client.embeddings.create(model="demo-embed", input=["a", "b"])
    assert len(vectors.data) == 2
    completion = await client.completions.create(model="demo-chat", prompt="say hi")
    assert "say hi" in completion.choices[0].text


async def test_denied_model_is_403_with_reason(harness: Harness) -> None:
    client = await oai(harness, "alice")
    with pytest.raises(openai.PermissionDeniedError) as denied:
        await client.chat.completions.create(
            model="cyber-frontier", messages=[{"role": "user", "content": "x"}]
        )
    assert denied.value.status_code == 403
    body = denied.value.body
    assert isinstance(body, dict)
    assert body["reasons"] == ["not_granted"]
    events = await decided(harness)
    assert events[-1]["allowed"] is False
    assert events[-1]["outcome"] == "denied"


async def test_model_list_is_filtered_to_entitlements(harness: Harness) -> None:
    alice = [m.id async for m in (await oai(harness, "alice")).models.list()]
    carol = [m.id async for m in (await oai(harness, "carol")).models.list()]
    victor = [m.id async for m in (await oai(harness, "victor")).models.list()]
    assert alice == ["demo-chat", "demo-claude", "demo-embed"]
    assert carol == ["cyber-frontier", "demo-chat", "demo-claude", "demo-embed"]
    assert victor == []
    anthropic_list = [m.id async for m in (await claude(harness, "alice")).models.list()]
    assert anthropic_list == alice


async def test_locked_principal_refused_then_unlocked(harness: Harness) -> None:
    client = await oai(harness, "alice")
    await client.chat.completions.create(
        model="demo-chat", messages=[{"role": "user", "content": "1"}]
    )
    locks = harness.services.locks
    locks.lock("principal", "alice", reason="test containment", author="test")
    await harness.reload()
    with pytest.raises(openai.PermissionDeniedError) as denied:
        await client.chat.completions.create(
            model="demo-chat", messages=[{"role": "user", "content": "2"}]
        )
    assert denied.value.body["reasons"] == ["locked_principal"]  # type: ignore[index]
    other = await oai(harness, "bob")  # a lock on alice does not touch bob
    await other.chat.completions.create(
        model="demo-chat", messages=[{"role": "user", "content": "3"}]
    )
    locks.unlock("principal", "alice", author="test")
    await harness.reload()
    await client.chat.completions.create(
        model="demo-chat", messages=[{"role": "user", "content": "4"}]
    )


async def test_unknown_model_and_bad_bodies(harness: Harness) -> None:
    profile = await harness.enroll("alice")
    async with harness.client(profile) as client:
        unknown = await client.post("/v1/chat/completions", json={"model": "nope", "messages": []})
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "model_not_found"
        garbled = await client.post(
            "/v1/chat/completions",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        assert garbled.status_code == 400
        assert garbled.json()["error"]["code"] == "invalid_json"
        array = await client.post("/v1/chat/completions", json=[1, 2])
        assert array.json()["error"]["code"] == "invalid_json"
        no_model = await client.post("/v1/chat/completions", json={"messages": []})
        assert no_model.status_code == 400
        big = await client.post(
            "/v1/chat/completions", content=b"{" + b" " * (5 * 1024 * 1024) + b"}"
        )
        assert big.status_code == 413
        assert big.json()["error"]["code"] == "body_too_large"
        huge_headers = await client.get("/v1/models", headers={"x-filler": "a" * 20000})
        assert huge_headers.status_code == 431
        wrong_api = await client.post(
            "/v1/messages", json={"model": "demo-chat", "max_tokens": 5, "messages": []}
        )
        assert wrong_api.status_code == 400
        assert "/v1/chat/completions" in wrong_api.json()["error"]["message"]
        missing = await client.get("/v1/nothing")
        assert missing.status_code == 404


async def test_upstream_key_injected_and_never_returned(harness: Harness) -> None:
    profile = await harness.enroll("alice")
    async with harness.client(profile) as client:
        response = await client.post(
            "/v1/chat/completions",
            json={"model": "demo-chat", "messages": [{"role": "user", "content": "k"}]},
        )
    assert response.status_code == 200  # the upstream refuses requests without its key
    assert b"upstream-secret" not in response.content
    assert all("upstream-secret" not in v for v in response.headers.values())


async def test_upstream_down_maps_to_502(tmp_path, config_text, upstream_env) -> None:  # type: ignore[no-untyped-def]
    from bastion.testing import running

    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("refused", request=request)

    async with (
        running(
            config_text, tmp_path, upstream=httpx2.MockTransport(refuse), env=upstream_env
        ) as harness,
        harness.client(await harness.enroll("alice")) as client,
    ):
        response = await client.post(
            "/v1/chat/completions",
            json={"model": "demo-chat", "messages": [{"role": "user", "content": "k"}]},
        )
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"


async def test_concurrent_requests(harness: Harness) -> None:
    client = await oai(harness, "alice")
    replies = await asyncio.gather(
        *[
            client.chat.completions.create(
                model="demo-chat", messages=[{"role": "user", "content": f"n{i}"}]
            )
            for i in range(20)
        ]
    )
    assert len(replies) == 20

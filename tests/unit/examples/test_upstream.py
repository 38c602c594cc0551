"""The stand-in upstream, driven by the official OpenAI and Anthropic SDKs in-process.

Both SDKs (openai 3.x, anthropic 2.x) are built on ``httpx2``, not ``httpx``: their
``http_client`` must be an ``httpx2.AsyncClient`` (anthropic rejects an ``httpx`` one outright).
Raw protocol checks use plain ``httpx``, the project's own client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from examples.upstream import MAX_CHUNKS, REPLY_PREFIX, create_app, embedding_of

KEY = "sk-example-upstream-test"


@asynccontextmanager
async def http_client(
    api_key: str | None = None, delay: float = 0.0
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(api_key=api_key, delay=delay)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app)) as client:
        yield client


@asynccontextmanager
async def sdk_http_client() -> AsyncIterator[httpx2.AsyncClient]:
    transport = httpx2.ASGITransport(create_app(api_key=KEY))
    async with httpx2.AsyncClient(transport=transport) as client:
        yield client


@asynccontextmanager
async def openai_client(api_key: str = KEY) -> AsyncIterator[openai.AsyncOpenAI]:
    async with sdk_http_client() as http:
        client = openai.AsyncOpenAI(
            base_url="http://upstream/v1", api_key=api_key, http_client=http, max_retries=0
        )
        async with client:
            yield client


@asynccontextmanager
async def anthropic_client(api_key: str = KEY) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with sdk_http_client() as http:
        client = anthropic.AsyncAnthropic(
            base_url="http://upstream", api_key=api_key, http_client=http, max_retries=0
        )
        async with client:
            yield client


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(main())


def test_chat_completion_echoes_the_last_user_message_with_word_usage() -> None:
    async def main() -> None:
        async with openai_client() as client:
            completion = await client.chat.completions.create(
                model="example-gpt",
                messages=[
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "first question"},
                    {"role": "assistant", "content": "an answer"},
                    {"role": "user", "content": "what is  the weather"},
                ],
            )
        text = completion.choices[0].message.content
        assert text == f"{REPLY_PREFIX} what is the weather"
        assert completion.model == "example-gpt"
        assert completion.choices[0].finish_reason == "stop"
        assert completion.usage is not None
        assert completion.usage.prompt_tokens == 10
        assert completion.usage.completion_tokens == len(text.split())
        assert completion.usage.total_tokens == 10 + len(text.split())

    run(main)


def test_chat_completion_echo_is_cut_at_80_characters() -> None:
    async def main() -> None:
        async with openai_client() as client:
            completion = await client.chat.completions.create(
                model="example-gpt", messages=[{"role": "user", "content": "x" * 200}]
            )
        assert completion.choices[0].message.content == f"{REPLY_PREFIX} {'x' * 80}"

    run(main)


def test_chat_stream_sends_word_chunks_then_usage_then_done() -> None:
    async def main() -> None:
        async with openai_client() as client:
            stream = await client.chat.completions.create(
                model="example-gpt",
                messages=[{"role": "user", "content": "stream please"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == f"{REPLY_PREFIX} stream please"
        assert chunks[0].choices[0].delta.role == "assistant"
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
        assert finishes[-1] == "stop"
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == len(text.split())
        assert all(c.object == "chat.completion.chunk" for c in chunks)

    run(main)


def test_chat_stream_length_follows_the_chunks_header() -> None:
    async def main() -> None:
        async with openai_client() as client:
            stream = await client.chat.completions.create(
                model="example-gpt",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                extra_headers={"x-example-chunks": "25", "x-example-chunk-delay": "0"},
            )
            pieces = [c.choices[0].delta.content async for c in stream if c.choices]
        assert len([p for p in pieces if p]) == 25

    run(main)


def test_completions_plain_and_streamed_agree() -> None:
    async def main() -> None:
        async with openai_client() as client:
            plain = await client.completions.create(model="example-gpt", prompt="say hello")
            stream = await client.completions.create(
                model="example-gpt", prompt="say hello", stream=True
            )
            streamed = "".join([c.choices[0].text async for c in stream if c.choices])
        assert plain.choices[0].text == f"{REPLY_PREFIX} say hello"
        assert streamed == plain.choices[0].text
        assert plain.usage is not None
        assert plain.usage.prompt_tokens == 2

    run(main)


def test_max_tokens_truncates_with_finish_reason_length() -> None:
    async def main() -> None:
        async with openai_client() as client:
            completion = await client.chat.completions.create(
                model="example-gpt",
                messages=[{"role": "user", "content": "hello"}],
                max_completion_tokens=3,
            )
        assert completion.choices[0].message.content == "This is the"
        assert completion.choices[0].finish_reason == "length"

    run(main)


def test_embeddings_are_deterministic_8_dim_unit_vectors() -> None:
    async def main() -> None:
        async with openai_client() as client:
            first = await client.embeddings.create(model="example-embed", input=["a", "b", "a"])
            again = await client.embeddings.create(model="example-embed", input="a")
            packed = await client.embeddings.create(
                model="example-embed", input="a", encoding_format="base64"
            )
        # The SDK asks for base64 (packed float32) by default and unpacks it.
        vectors = [d.embedding for d in first.data]
        assert [len(v) for v in vectors] == [8, 8, 8]
        assert vectors[0] == vectors[2] != vectors[1]
        assert again.data[0].embedding == vectors[0]
        assert vectors[0] == pytest.approx(embedding_of("a"), abs=1e-6)
        assert sum(x * x for x in vectors[0]) == pytest.approx(1.0, abs=1e-5)
        assert first.usage.prompt_tokens == 3
        assert isinstance(packed.data[0].embedding, str)

    run(main)


def test_models_lists_the_example_models() -> None:
    async def main() -> None:
        async with openai_client() as client:
            models = [m.id async for m in client.models.list()]
        assert "example-gpt" in models

    run(main)


def test_anthropic_message_reports_usage_and_stop_reason() -> None:
    async def main() -> None:
        async with anthropic_client() as client:
            message = await client.messages.create(
                model="example-claude",
                max_tokens=100,
                system="you are terse",
                messages=[{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
            )
        assert message.content[0].type == "text"
        assert message.content[0].text == f"{REPLY_PREFIX} hello there"
        assert message.stop_reason == "end_turn"
        assert message.usage.input_tokens == 5
        assert message.usage.output_tokens == len(message.content[0].text.split())

    run(main)


def test_anthropic_stream_sends_the_full_event_sequence() -> None:
    async def main() -> None:
        async with anthropic_client() as client:
            stream = await client.messages.create(
                model="example-claude",
                max_tokens=100,
                messages=[{"role": "user", "content": "stream it"}],
                stream=True,
            )
            events = [event async for event in stream]
            async with client.messages.stream(
                model="example-claude",
                max_tokens=100,
                messages=[{"role": "user", "content": "stream it"}],
            ) as helper:
                final = await helper.get_final_message()
        types = [e.type for e in events]
        assert types[:2] == ["message_start", "content_block_start"]
        assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
        deltas = [e for e in events if e.type == "content_block_delta"]
        text = "".join(e.delta.text for e in deltas if e.delta.type == "text_delta")
        assert text == f"{REPLY_PREFIX} stream it"
        last = events[-2]
        assert last.type == "message_delta"
        assert last.usage.output_tokens == len(deltas)
        assert final.content[0].type == "text"
        assert final.content[0].text == text
        assert final.usage.output_tokens == len(deltas)

    run(main)


def test_wrong_key_is_401_in_each_provider_shape() -> None:
    async def main() -> None:
        async with openai_client(api_key="sk-wrong") as client:
            with pytest.raises(openai.AuthenticationError) as openai_error:
                await client.chat.completions.create(
                    model="example-gpt", messages=[{"role": "user", "content": "hi"}]
                )
        async with anthropic_client(api_key="sk-wrong") as client:
            with pytest.raises(anthropic.AuthenticationError) as anthropic_error:
                await client.messages.create(
                    model="example-claude",
                    max_tokens=10,
                    messages=[{"role": "user", "content": "hi"}],
                )
        assert openai_error.value.status_code == 401
        assert openai_error.value.code == "invalid_api_key"
        assert anthropic_error.value.status_code == 401
        assert anthropic_error.value.body == {
            "type": "error",
            "error": {
                "type": "authentication_error",
                "message": "missing or invalid upstream key (x-api-key)",
            },
        }

    run(main)


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/v1/chat/completions", {"x-api-key": KEY}, 401),
        ("/v1/chat/completions", {"authorization": f"Basic {KEY}"}, 401),
        ("/v1/chat/completions", {"authorization": f"Bearer {KEY}"}, 200),
        ("/v1/messages", {"x-api-key": KEY}, 200),
        ("/v1/messages", {"x-api-key": "sk-wrong", "authorization": f"Bearer {KEY}"}, 401),
        ("/v1/messages", {}, 401),
    ],
)
def test_upstream_key_header_per_provider(path: str, headers: dict[str, str], status: int) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}

    async def main() -> None:
        async with http_client(api_key=KEY) as http:
            response = await http.post(f"http://upstream{path}", headers=headers, json=body)
        assert response.status_code == status

    run(main)


@pytest.mark.parametrize(
    ("path", "headers", "content", "shape"),
    [
        ("/v1/chat/completions", {}, b"{not json", "openai"),
        ("/v1/chat/completions", {}, b"[1, 2]", "openai"),
        ("/v1/chat/completions", {"x-example-chunks": str(MAX_CHUNKS + 1)}, b"{}", "openai"),
        ("/v1/chat/completions", {"x-example-chunk-delay": "nan"}, b"{}", "openai"),
        ("/v1/messages", {}, b"{not json", "anthropic"),
        ("/v1/messages", {}, b'{"model": "m", "messages": [{"role": "user"}]}', "anthropic"),
    ],
)
def test_bad_requests_are_400_in_provider_shape(
    path: str, headers: dict[str, str], content: bytes, shape: str
) -> None:
    async def main() -> None:
        async with http_client() as http:
            response = await http.post(f"http://upstream{path}", headers=headers, content=content)
        assert response.status_code == 400
        body = response.json()
        if shape == "openai":
            assert body["error"]["type"] == "invalid_request_error"
        else:
            assert body["type"] == "error"
            assert body["error"]["type"] == "invalid_request_error"

    run(main)


def test_unknown_route_is_404_and_health_needs_no_key() -> None:
    async def main() -> None:
        async with http_client(api_key=KEY) as http:
            missing = await http.get("http://upstream/v1/nothing")
            health = await http.get("http://upstream/healthz")
        assert missing.status_code == 404
        assert health.json() == {"status": "ok"}

    run(main)


def test_chunk_delay_paces_the_stream_and_delay_slows_every_answer() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    paced = {"x-example-chunks": "5", "x-example-chunk-delay": "0.05"}

    async def main() -> None:
        async with http_client() as http:
            start = time.perf_counter()
            response = await http.post(
                "http://upstream/v1/chat/completions", headers=paced, json=body
            )
            stream_seconds = time.perf_counter() - start
        async with http_client(delay=1.0) as http:
            start = time.perf_counter()
            await http.get("http://upstream/v1/models")
            slow_seconds = time.perf_counter() - start
            start = time.perf_counter()
            await http.get("http://upstream/healthz")
            health_seconds = time.perf_counter() - start
        # role chunk + 5 words + finish chunk + [DONE]: 8 events, 7 pauses
        assert response.text.count("data: ") == 8
        assert stream_seconds >= 7 * 0.05
        assert slow_seconds >= 1.0
        assert health_seconds < 0.5  # the health check is never delayed

    run(main)

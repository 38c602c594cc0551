"""``bastion guard``'s reverse proxy: requests go through unchanged but for hop-by-hop headers;
answers stream back; a dead, silent or broken model server is a clear 502, 504 or a cut answer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import httpx2
import pytest

from bastion.guard.proxy import GuardProxy

pytestmark = pytest.mark.anyio


class Chunks(httpx2.AsyncByteStream):
    def __init__(self, chunks: list[bytes], fail: bool = False) -> None:
        self._chunks = chunks
        self._fail = fail

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk
        if self._fail:
            raise httpx2.ReadError("model server crashed")


def client(handler: Callable[[httpx2.Request], httpx2.Response]) -> httpx.AsyncClient:
    proxy = GuardProxy("http://model.internal:8000", transport=httpx2.MockTransport(handler))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=proxy), base_url="http://guard")


async def test_requests_pass_through_and_answers_stream_back() -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        events = Chunks([b"data: 1\n\n", b"data: 2\n\n"])
        headers = {"content-type": "text/event-stream", "x-request-id": "r1", "connection": "x"}
        return httpx2.Response(201, headers=headers, stream=events)

    async with client(handler) as guard:
        response = await guard.post(
            "/v1/chat/completions?x=1",
            content=b'{"a":1}',
            headers={
                "authorization": "Bearer upstream-key",
                "connection": "keep-alive, x-hop",
                "x-hop": "only-for-the-guard",
            },
        )
    assert response.status_code == 201
    assert response.text == "data: 1\n\ndata: 2\n\n"
    assert response.headers["x-request-id"] == "r1"
    assert "connection" not in response.headers
    [request] = seen
    assert str(request.url) == "http://model.internal:8000/v1/chat/completions?x=1"
    assert request.method == "POST"
    assert request.content == b'{"a":1}'
    assert request.headers["authorization"] == "Bearer upstream-key"  # the model server checks it
    assert request.headers["host"] == "model.internal:8000"
    assert "x-hop" not in request.headers  # named by Connection: hop-by-hop (RFC 9110 §7.6.1)


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (httpx2.ConnectError("refused"), 502, "upstream_error"),
        (httpx2.ReadTimeout("slow"), 504, "upstream_timeout"),
    ],
)
async def test_an_unreachable_or_silent_model_server(
    error: Exception, status: int, code: str
) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise error

    async with client(handler) as guard:
        response = await guard.post("/v1/chat/completions", content=b"{}")
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert "refused" not in response.text  # the transport's own message stays in the guard


async def test_a_model_server_that_breaks_off_leaves_the_answer_incomplete() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, stream=Chunks([b"data: 1\n\n"], fail=True))

    proxy = GuardProxy("http://model.internal:8000", transport=httpx2.MockTransport(handler))
    sent: list[dict[str, Any]] = []
    incoming = [{"type": "http.request", "body": b"{}", "more_body": False}]

    async def receive() -> Any:
        if incoming:
            return incoming.pop()
        await anyio.sleep_forever()  # the client stays connected

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/x", "query_string": b"", "headers": []}
    await proxy(scope, receive, send)
    assert [m.get("body") for m in sent[1:]] == [b"data: 1\n\n"]
    assert all(m.get("more_body") for m in sent[1:])  # never ended: the server cuts the connection

"""``GuardProxy``: the reverse proxy ``bastion guard`` runs in front of a model server.

Wrapped in :class:`~bastion.guard.middleware.GuardMiddleware`, it only ever sees requests that
carry a valid assertion, and forwards them unchanged (method, path, query, body and headers,
minus hop-by-hop ones) to the model server, streaming the answer back chunk by chunk so that SSE
streams flow as they are produced. It adds nothing and keeps nothing: the upstream key Bastion
sends goes through to the model server, which still checks it.

An unreachable model server is a 502, a silent one a 504; a model server that breaks off
mid-answer has the client connection closed too, so a cut stream never looks complete.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import anyio
import httpx2
from starlette.types import Receive, Scope, Send

from bastion.errors import BastionError, UpstreamError, UpstreamTimeout
from bastion.gateway.responses import send_error

log = logging.getLogger("bastion.guard")

# RFC 9110 §7.6.1 connection-specific headers, plus those httpx2 sets itself.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)
# The answer's raw bytes go through unchanged, so its Content-Length still holds.
_RESPONSE_DROP = HOP_BY_HOP - {b"content-length"}


class GuardProxy:
    """Forwards every HTTP request to ``target`` (the model server's base URL)."""

    def __init__(
        self,
        target: str,
        *,
        transport: httpx2.AsyncBaseTransport | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
    ) -> None:
        self._target = target.rstrip("/")
        self._client = httpx2.AsyncClient(
            transport=transport,
            timeout=httpx2.Timeout(read_timeout, connect=connect_timeout),
            limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=100),
            follow_redirects=False,
            trust_env=False,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await _read_all(receive)
        if body is None:
            return  # the client went away
        try:
            response = await self._open(scope, body)
        except BastionError as error:
            await send_error(send, error)
            return
        try:
            headers = _end_to_end(response.headers.raw, _RESPONSE_DROP)
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": headers}
            )
            await _pump(response, receive, send)
        finally:
            await response.aclose()

    async def _open(self, scope: Scope, body: bytes) -> httpx2.Response:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        query: bytes = scope.get("query_string", b"")
        url = self._target + raw_path.decode("latin-1")
        if query:
            url += "?" + query.decode("latin-1")
        headers = _end_to_end(scope["headers"], HOP_BY_HOP)
        request = self._client.build_request(scope["method"], url, headers=headers, content=body)
        try:
            return await self._client.send(request, stream=True)
        except httpx2.TimeoutException:
            raise UpstreamTimeout("the model server did not answer in time") from None
        except httpx2.HTTPError:
            raise UpstreamError("the model server is unreachable") from None

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def aclose(self) -> None:
        await self._client.aclose()


def _end_to_end(
    headers: Iterable[tuple[bytes, bytes]], drop: frozenset[bytes]
) -> list[tuple[bytes, bytes]]:
    """``headers`` without hop-by-hop ones: ``drop`` and those the Connection header names."""
    headers = list(headers)
    named = {
        token.strip().lower().encode("latin-1")
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.decode("latin-1").split(",")
    }
    return [(name, value) for name, value in headers if name.lower() not in drop | named]


async def _read_all(receive: Receive) -> bytes | None:
    """The request body (the middleware has bounded it already); None if the client left."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _pump(response: httpx2.Response, receive: Receive, send: Send) -> None:
    """Copy the answer through; stop reading it when the client hangs up. If the model server
    breaks off, return without ending the body: the server then closes the connection."""
    async with anyio.create_task_group() as group:
        group.start_soon(_cancel_on_disconnect, receive, group.cancel_scope)
        try:
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx2.HTTPError as exc:
            log.warning("the model server broke off its answer: %s", type(exc).__name__)
            group.cancel_scope.cancel()
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        group.cancel_scope.cancel()


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()

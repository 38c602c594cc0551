"""Forwarding to upstreams: one pooled HTTP client, the upstream key injected, nothing else of
the caller's credentials passed on, responses streamed back as they arrive.

The client is ``httpx2`` (the maintained successor of ``httpx`` that the official SDKs use): in
``bench/`` its pooled async client gave ~25% more throughput and a third of the p99 of ``httpx``
0.28's under 16 concurrent connections (see docs/performance.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import httpx2

from bastion.errors import Unavailable, UpstreamError, UpstreamTimeout
from bastion.policy.snapshot import ModelRoute

from .assertion import HEADER as ASSERTION_HEADER
from .assertion import UpstreamAssertions

# Request headers passed upstream; everything else (Authorization, DPoP, x-api-key, cookies,
# forwarding and hop-by-hop headers) stops at the gateway.
PASS_REQUEST_HEADERS = frozenset(
    {"content-type", "accept", "anthropic-version", "anthropic-beta", "openai-beta", "user-agent"}
)
PASS_RESPONSE_HEADERS = frozenset(
    {"content-type", "x-request-id", "request-id", "openai-processing-ms", "retry-after"}
)


def upstream_path(route: ModelRoute, path: str) -> str:
    """OpenAI-style base URLs end in ``/v1``; Anthropic-style ones are the host root."""
    return route.base_url + (path[3:] if route.api == "openai" else path)


def request_headers(route: ModelRoute, headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    out = {
        key: value.decode("latin-1")
        for name, value in headers
        if (key := name.decode("latin-1")) in PASS_REQUEST_HEADERS or key in route.forward_headers
    }
    out["accept-encoding"] = "identity"  # usage is read from the stream as it passes
    if route.api_key_env and route.api_key is None:
        raise Unavailable(
            f"upstream {route.upstream!r} has no API key: set {route.api_key_env} for Bastion"
        )
    if route.api_key is not None:
        if route.api == "anthropic":
            out["x-api-key"] = route.api_key
        else:
            out["authorization"] = f"Bearer {route.api_key}"
    return out


def response_headers(response: httpx2.Response) -> list[tuple[bytes, bytes]]:
    return [
        (name.encode("latin-1"), value.encode("latin-1"))
        for name, value in response.headers.items()
        if name in PASS_RESPONSE_HEADERS
    ]


class UpstreamProxy:
    """With ``assertions``, every request carries Bastion's signed assertion (``bastion guard``)."""

    def __init__(
        self,
        transport: httpx2.AsyncBaseTransport | None = None,
        assertions: UpstreamAssertions | None = None,
    ) -> None:
        self._assertions = assertions
        self._client = httpx2.AsyncClient(
            transport=transport,
            limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=200),
            follow_redirects=False,
            trust_env=False,
        )

    async def open(
        self,
        route: ModelRoute,
        method: str,
        path: str,
        headers: Iterable[tuple[bytes, bytes]],
        body: bytes,
        *,
        subject: str | None = None,
        event_id: str | None = None,
    ) -> httpx2.Response:
        """Send the request and return the response with its body still unread. ``subject``
        (the principal) and ``event_id`` (its audit event) go into the signed assertion."""
        request = self._client.build_request(
            method,
            upstream_path(route, path),
            headers=request_headers(route, headers),
            content=body,
            timeout=httpx2.Timeout(route.read_timeout, connect=route.connect_timeout),
        )
        if self._assertions is not None and route.assertion:  # over the target and body as sent
            target = request.url.raw_path.decode("ascii")
            request.headers[ASSERTION_HEADER] = self._assertions.sign(
                route, method, target, body, subject=subject, event_id=event_id
            )
        try:
            return await self._client.send(request, stream=True)
        except httpx2.TimeoutException:
            raise UpstreamTimeout(f"upstream {route.upstream!r} did not answer in time") from None
        except httpx2.HTTPError:
            raise UpstreamError(f"upstream {route.upstream!r} is unreachable") from None

    @staticmethod
    async def chunks(response: httpx2.Response, route: ModelRoute) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        except httpx2.TimeoutException:
            raise UpstreamTimeout(f"upstream {route.upstream!r} stalled mid-response") from None
        except httpx2.HTTPError:
            raise UpstreamError(f"upstream {route.upstream!r} broke the response") from None

    async def aclose(self) -> None:
        await self._client.aclose()

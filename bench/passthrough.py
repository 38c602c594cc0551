"""The benchmark's FLOOR arm: a bare pass-through reverse proxy, nothing else.

Same server stack as Bastion's gateway (uvicorn, a pure ASGI app, one shared
``httpx.AsyncClient`` connection pool) but no authentication, no policy, no audit: it forwards
method, path, query, body and end-to-end headers to ``target`` and streams the response back
chunk by chunk as it arrives. Whatever Bastion costs above this arm is the price of its controls;
what this arm costs above a direct call is the price of any Python proxy hop.

``--client httpx2`` swaps in ``httpx2`` (the successor fork the OpenAI and Anthropic SDKs are now
built on, same API) for comparison: the brief allows another upstream client "if the benchmark
shows a real gain", and this is how to measure one.

It does not watch for client disconnects: a stream the client abandons is still read to its end.

Run:  python -m bench.passthrough --target http://127.0.0.1:8081 --port 8082 [--client httpx2]
"""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType
from typing import Any

from starlette.types import Receive, Scope, Send

CLIENTS = ("httpx", "httpx2")

# RFC 9110 §7.6.1 connection-specific fields, plus ones the client library sets itself.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_REQUEST_DROP = HOP_BY_HOP | {b"host", b"content-length"}
_BAD_GATEWAY = b'{"error":{"message":"upstream unreachable","type":"bad_gateway"}}'


def _end_to_end(
    headers: list[tuple[bytes, bytes]], drop: frozenset[bytes]
) -> list[tuple[bytes, bytes]]:
    """Headers minus hop-by-hop ones, including any the Connection header names."""
    named = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.split(b",")
    }
    return [(n, v) for n, v in headers if n.lower() not in drop and n.lower() not in named]


class Passthrough:
    """The proxy; its client pool opens on ASGI lifespan startup and closes on shutdown."""

    def __init__(self, target: str, *, client: str = "httpx", max_connections: int = 256) -> None:
        if client not in CLIENTS:
            raise ValueError(f"client must be one of {CLIENTS}")
        self._target = target.rstrip("/")
        self._http: ModuleType = importlib.import_module(client)
        self._limits = self._http.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._client: Any = None  # an httpx.AsyncClient (or httpx2.AsyncClient) once started

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._proxy(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._client = self._http.AsyncClient(
                    limits=self._limits,
                    timeout=self._http.Timeout(60.0, connect=5.0),
                    trust_env=False,
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._client is not None:
                    await self._client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _proxy(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._client is None:
            raise RuntimeError("Passthrough needs the ASGI lifespan protocol (lifespan='on')")
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        url = self._target + scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode("latin-1")
        request = self._client.build_request(
            scope["method"],
            url,
            headers=_end_to_end(scope["headers"], _REQUEST_DROP),
            content=bytes(body),
        )
        try:
            response = await self._client.send(request, stream=True)
        except self._http.HTTPError:
            await _send_bad_gateway(send)
            return
        try:
            headers = _end_to_end(response.headers.raw, HOP_BY_HOP)
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": headers}
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()


async def _send_bad_gateway(send: Send) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_BAD_GATEWAY)).encode()),
    ]
    await send({"type": "http.response.start", "status": 502, "headers": headers})
    await send({"type": "http.response.body", "body": _BAD_GATEWAY})


def create_app(target: str, client: str = "httpx") -> Passthrough:
    """A bare reverse proxy to ``target`` (a base URL such as ``http://127.0.0.1:8081``)."""
    return Passthrough(target, client=client)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Bare pass-through proxy (benchmark floor).")
    parser.add_argument("--target", required=True, help="upstream base URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument("--client", choices=CLIENTS, default="httpx", help="upstream client")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    uvicorn.run(
        create_app(args.target, args.client),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        lifespan="on",
    )


if __name__ == "__main__":
    main()

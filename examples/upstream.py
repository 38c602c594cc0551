"""STAND-IN upstream model server: NOT A MODEL. For the demo, the tests and the benchmark.

It speaks just enough of the OpenAI and Anthropic HTTP APIs for the official Python SDKs to
work against it, and answers every prompt with the same canned, deterministic text:

    This is the example upstream. You said: <last user message, first 80 characters>

Token usage is a word count (prompt words in, reply words out). Streams send one word per chunk.

Routes
    GET  /healthz               readiness probe, no key needed
    GET  /v1/models             OpenAI model list
    POST /v1/chat/completions   OpenAI chat, non-streaming or SSE (``stream_options.include_usage``)
    POST /v1/completions        OpenAI legacy completions, non-streaming or SSE
    POST /v1/embeddings         8 deterministic dimensions from a hash of each input
    POST /v1/messages           Anthropic Messages, non-streaming or the full SSE event sequence

Upstream key
    With ``api_key`` set, OpenAI routes need ``Authorization: Bearer <key>`` and Anthropic routes
    ``x-api-key: <key>``; anything else is a 401 in that provider's error shape. This is how the
    tests prove that the gateway, not the caller, supplies the key. Anthropic routes also take
    ``Authorization: Bearer <key>`` when no ``x-api-key`` is sent, because that is how the
    anthropic 2.x SDK sends its ``api_key``; an ``x-api-key`` that is present must be right.

Test controls (request headers, both optional; bad values are a 400)
    x-example-chunk-delay   seconds to pause between SSE events, 0 to 2
    x-example-chunks        reply length in words (so in stream chunks), 1 to 10000; the canned
                            words repeat to fill it and it wins over ``max_tokens``

Slow upstream
    ``create_app(delay=...)`` / ``--delay``: seconds to wait before answering every request but
    ``/healthz``, for timeout and fault tests.

The whole server is one plain ASGI callable (no framework routing, no per-request logging),
because it is also the "direct" arm of the benchmark and must cost as little as possible.

Behind Bastion's guard
    ``--guard-jwks-url URL --guard-audience AUD`` (repeatable) wraps the app in
    ``bastion.guard``'s middleware: every request but ``GET /healthz`` then needs Bastion's signed
    assertion for one of those audiences (docs/guard.md). The demo runs it this way.

Run:  python examples/upstream.py --host 127.0.0.1 --port 8081 [--api-key KEY] [--delay SECONDS]
      (the key defaults to $EXAMPLE_UPSTREAM_KEY; no key means no check)
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import itertools
import math
import os
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

MODELS = ("example-gpt", "example-claude", "example-embed")
REPLY_PREFIX = "This is the example upstream. You said:"
ECHO_CHARS = 80
MAX_CHUNK_DELAY = 2.0
MAX_CHUNKS = 10_000
MAX_BODY_BYTES = 4 * 1024 * 1024
EMBEDDING_DIMS = 8

Flavor = Literal["openai", "anthropic"]
Payload = dict[str, Any]

_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]


class UpstreamError(Exception):
    """A request the stand-in refuses; rendered in the calling provider's error shape."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# Error "type" values each provider uses for the statuses this server can return.
_OPENAI_ERROR = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "unknown_url"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
}
_ANTHROPIC_ERROR = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
}


def error_body(flavor: Flavor, error: UpstreamError) -> Payload:
    """The JSON body a real provider sends for this error."""
    if flavor == "anthropic":
        kind = _ANTHROPIC_ERROR[error.status]
        return {"type": "error", "error": {"type": kind, "message": error.message}}
    kind, code = _OPENAI_ERROR[error.status]
    return {"error": {"message": error.message, "type": kind, "param": None, "code": code}}


@dataclass(frozen=True)
class Controls:
    """Per-request test controls read from the ``x-example-*`` headers."""

    chunk_delay: float = 0.0
    chunks: int | None = None


@dataclass(frozen=True)
class Reply:
    """The canned answer to one request: its words and why it stopped."""

    words: list[str]
    prompt_tokens: int
    truncated: bool

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def pieces(self) -> Iterator[str]:
        """Stream chunks; concatenated they equal ``text``."""
        for index, word in enumerate(self.words):
            yield word if index == 0 else " " + word

    @property
    def completion_tokens(self) -> int:
        return len(self.words)


@dataclass(frozen=True)
class JSONResult:
    payload: Payload
    status: int = 200


@dataclass(frozen=True)
class StreamResult:
    events: Iterator[bytes]
    pace: float = 0.0


Result = JSONResult | StreamResult


def _text_of(content: Any) -> str:
    """Text of a message ``content``: a string or a list of ``{"type": "text"}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def _word_count(text: str) -> int:
    return len(text.split())


def _positive_int(body: Payload, field: str, *, required: bool = False) -> int | None:
    value = body.get(field)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UpstreamError(400, f"{field}: must be a positive integer")
    return value


def _field(body: Payload, field: str, kind: type) -> Any:
    value = body.get(field)
    if not isinstance(value, kind):
        raise UpstreamError(400, f"{field}: required, of type {kind.__name__}")
    return value


def make_reply(said: str, prompt_tokens: int, limit: int | None, controls: Controls) -> Reply:
    """The deterministic answer, sized by ``x-example-chunks`` or cut at ``limit`` words."""
    words = f"{REPLY_PREFIX} {said[:ECHO_CHARS]}".split()
    if controls.chunks is not None:
        cycle = itertools.cycle(words)
        return Reply([next(cycle) for _ in range(controls.chunks)], prompt_tokens, False)
    if limit is not None and limit < len(words):
        return Reply(words[:limit], prompt_tokens, True)
    return Reply(words, prompt_tokens, False)


def embedding_of(item: Any) -> list[float]:
    """A unit vector of ``EMBEDDING_DIMS`` floats derived from a SHA-256 of the input."""
    digest = hashlib.sha256(orjson.dumps(item)).digest()
    raw = [
        int.from_bytes(digest[2 * i : 2 * i + 2], "big") / 32767.5 - 1.0
        for i in range(EMBEDDING_DIMS)
    ]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [round(v / norm, 6) for v in raw]


def _sse(data: Payload, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(data) + b"\n\n"


_SSE_DONE = b"data: [DONE]\n\n"


def _parse_controls(headers: dict[bytes, bytes]) -> Controls:
    delay_raw = headers.get(b"x-example-chunk-delay")
    chunks_raw = headers.get(b"x-example-chunks")
    delay, chunks = 0.0, None
    if delay_raw is not None:
        try:
            delay = float(delay_raw)
        except ValueError:
            delay = -1.0
        if not 0.0 <= delay <= MAX_CHUNK_DELAY:
            raise UpstreamError(400, f"x-example-chunk-delay: seconds from 0 to {MAX_CHUNK_DELAY}")
    if chunks_raw is not None:
        try:
            chunks = int(chunks_raw)
        except ValueError:
            chunks = 0
        if not 1 <= chunks <= MAX_CHUNKS:
            raise UpstreamError(400, f"x-example-chunks: an integer from 1 to {MAX_CHUNKS}")
    return Controls(delay, chunks)


Handler = Callable[["ExampleUpstream", Payload, Controls], Result]


class ExampleUpstream:
    """The ASGI application; build it with :func:`create_app`."""

    def __init__(self, api_key: str | None, delay: float) -> None:
        self._api_key = api_key.encode() if api_key else None
        self._delay = delay
        self._ids = itertools.count(1)
        self._routes: dict[tuple[str, str], tuple[Flavor, Handler]] = {
            ("POST", "/v1/chat/completions"): ("openai", ExampleUpstream._chat),
            ("POST", "/v1/completions"): ("openai", ExampleUpstream._completions),
            ("POST", "/v1/embeddings"): ("openai", ExampleUpstream._embeddings),
            ("POST", "/v1/messages"): ("anthropic", ExampleUpstream._messages),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        flavor: Flavor = "anthropic" if path.startswith("/v1/messages") else "openai"
        if self._delay and path != "/healthz":
            await anyio.sleep(self._delay)
        try:
            result = await self._handle(method, path, flavor, scope, receive)
        except UpstreamError as error:
            result = JSONResult(error_body(flavor, error), error.status)
        if isinstance(result, JSONResult):
            await _send_json(send, result)
        else:
            await _send_stream(send, receive, result.events, result.pace)

    async def _handle(
        self, method: str, path: str, flavor: Flavor, scope: Scope, receive: Receive
    ) -> Result:
        if path == "/healthz" and method == "GET":
            return JSONResult({"status": "ok"})
        headers = dict(scope["headers"])
        if path == "/v1/models":
            if method != "GET":
                raise UpstreamError(405, f"{method} is not allowed on {path}")
            self._check_key(flavor, headers)
            return JSONResult(self._models())
        route = self._routes.get((method, path))
        if route is None:
            known = any(p == path for _, p in self._routes)
            raise UpstreamError(405 if known else 404, f"no route for {method} {path}")
        self._check_key(flavor, headers)
        controls = _parse_controls(headers)
        body = await _read_json(receive)
        return route[1](self, body, controls)

    def _check_key(self, flavor: Flavor, headers: dict[bytes, bytes]) -> None:
        if self._api_key is None:
            return
        scheme, _, bearer = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() != b"bearer":
            bearer = b""
        if flavor == "anthropic" and b"x-api-key" in headers:
            presented = headers[b"x-api-key"]
        else:
            presented = bearer
        if not hmac.compare_digest(presented, self._api_key):
            header = "x-api-key" if flavor == "anthropic" else "Authorization: Bearer"
            raise UpstreamError(401, f"missing or invalid upstream key ({header})")

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}example{next(self._ids):08d}"

    def _models(self) -> Payload:
        models = [
            {"id": name, "object": "model", "created": 0, "owned_by": "example-upstream"}
            for name in MODELS
        ]
        return {"object": "list", "data": models}

    # OpenAI ------------------------------------------------------------------------------------

    def _chat(self, body: Payload, controls: Controls) -> Result:
        model = _field(body, "model", str)
        messages = _field(body, "messages", list)
        if not all(isinstance(m, dict) for m in messages):
            raise UpstreamError(400, "messages: each message must be an object")
        limit = _positive_int(body, "max_completion_tokens") or _positive_int(body, "max_tokens")
        users = [m for m in messages if m.get("role") == "user"]
        said = _text_of(users[-1].get("content")) if users else ""
        prompt_tokens = sum(_word_count(_text_of(m.get("content"))) for m in messages)
        reply = make_reply(said, prompt_tokens, limit, controls)
        head = {"id": self._next_id("chatcmpl-"), "created": int(time.time()), "model": model}
        finish = "length" if reply.truncated else "stop"
        if body.get("stream") is True:
            usage = _include_usage(body)
            return StreamResult(_chat_events(head, reply, finish, usage), controls.chunk_delay)
        message = {"role": "assistant", "content": reply.text, "refusal": None}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        return JSONResult(
            {**head, "object": "chat.completion", "choices": [choice], "usage": _usage(reply)}
        )

    def _completions(self, body: Payload, controls: Controls) -> Result:
        model = _field(body, "model", str)
        prompt = body.get("prompt")
        if isinstance(prompt, list):
            prompt = next((p for p in prompt if isinstance(p, str)), "")
        if not isinstance(prompt, str):
            raise UpstreamError(400, "prompt: required, a string or a list of strings")
        limit = _positive_int(body, "max_tokens")
        reply = make_reply(prompt, _word_count(prompt), limit, controls)
        head = {"id": self._next_id("cmpl-"), "created": int(time.time()), "model": model}
        finish = "length" if reply.truncated else "stop"
        if body.get("stream") is True:
            usage = _include_usage(body)
            return StreamResult(
                _completion_events(head, reply, finish, usage), controls.chunk_delay
            )
        choice = {"index": 0, "text": reply.text, "logprobs": None, "finish_reason": finish}
        return JSONResult(
            {**head, "object": "text_completion", "choices": [choice], "usage": _usage(reply)}
        )

    def _embeddings(self, body: Payload, _controls: Controls) -> Result:
        model = _field(body, "model", str)
        raw = body.get("input")
        if isinstance(raw, str) or (
            isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw)
        ):
            items: list[Any] = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(i, str | list) for i in raw):
            items = raw
        else:
            raise UpstreamError(400, "input: a string, a list of strings or token arrays")
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, item in enumerate(items):
            vector: Any = embedding_of(item)
            if as_base64:
                vector = base64.b64encode(struct.pack(f"<{EMBEDDING_DIMS}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        tokens = sum(_word_count(i) if isinstance(i, str) else len(i) for i in items)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return JSONResult({"object": "list", "data": data, "model": model, "usage": usage})

    # Anthropic ---------------------------------------------------------------------------------

    def _messages(self, body: Payload, controls: Controls) -> Result:
        model = _field(body, "model", str)
        messages = _field(body, "messages", list)
        if not messages or not all(isinstance(m, dict) for m in messages):
            raise UpstreamError(400, "messages: a non-empty list of message objects")
        limit = _positive_int(body, "max_tokens", required=True)
        users = [m for m in messages if m.get("role") == "user"]
        said = _text_of(users[-1].get("content")) if users else ""
        texts = [_text_of(body.get("system")), *(_text_of(m.get("content")) for m in messages)]
        reply = make_reply(said, sum(_word_count(t) for t in texts), limit, controls)
        stop = "max_tokens" if reply.truncated else "end_turn"
        message = {
            "id": self._next_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": reply.text}],
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": reply.prompt_tokens, "output_tokens": len(reply.words)},
        }
        if body.get("stream") is True:
            return StreamResult(_message_events(message, reply, stop), controls.chunk_delay)
        return JSONResult(message)


def _usage(reply: Reply) -> Payload:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }


def _include_usage(body: Payload) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _chat_events(head: Payload, reply: Reply, finish: str, with_usage: bool) -> Iterator[bytes]:
    base = {**head, "object": "chat.completion.chunk", "system_fingerprint": None}
    if with_usage:
        base["usage"] = None  # OpenAI sends usage: null on every chunk but the last

    def chunk(delta: Payload, finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return _sse({**base, "choices": [choice]})

    yield chunk({"role": "assistant", "content": ""})
    for piece in reply.pieces:
        yield chunk({"content": piece})
    yield chunk({}, finish)
    if with_usage:
        yield _sse({**base, "choices": [], "usage": _usage(reply)})
    yield _SSE_DONE


def _completion_events(
    head: Payload, reply: Reply, finish: str, with_usage: bool
) -> Iterator[bytes]:
    base = {**head, "object": "text_completion"}

    def chunk(text: str, finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        return _sse({**base, "choices": [choice]})

    for piece in reply.pieces:
        yield chunk(piece)
    yield chunk("", finish)
    if with_usage:
        yield _sse({**base, "choices": [], "usage": _usage(reply)})
    yield _SSE_DONE


def _message_events(message: Payload, reply: Reply, stop: str) -> Iterator[bytes]:
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": reply.prompt_tokens, "output_tokens": 0},
    }
    yield _sse({"type": "message_start", "message": start}, "message_start")
    block = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    yield _sse(block, "content_block_start")
    yield _sse({"type": "ping"}, "ping")
    for piece in reply.pieces:
        delta = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": piece},
        }
        yield _sse(delta, "content_block_delta")
    yield _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    final = {
        "type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": None},
        "usage": {"output_tokens": reply.completion_tokens},
    }
    yield _sse(final, "message_delta")
    yield _sse({"type": "message_stop"}, "message_stop")


# ASGI plumbing ---------------------------------------------------------------------------------


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_json(receive: Receive) -> Payload:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise UpstreamError(400, "client went away before sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise UpstreamError(413, f"request body over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    try:
        body = orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError:
        raise UpstreamError(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise UpstreamError(400, "request body must be a JSON object")
    return body


async def _send_json(send: Send, result: JSONResult) -> None:
    body = orjson.dumps(result.payload)
    headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": result.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_stream(send: Send, receive: Receive, events: Iterator[bytes], pace: float) -> None:
    """Send SSE events one by one, pausing ``pace`` seconds between them; stop if the client goes.

    uvicorn silently drops writes after a disconnect, so a watcher task ends long streams.
    """
    await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
    async with anyio.create_task_group() as group:
        group.start_soon(_cancel_on_disconnect, receive, group.cancel_scope)
        for index, event in enumerate(events):
            if pace and index:
                await anyio.sleep(pace)
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        group.cancel_scope.cancel()


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


def create_app(api_key: str | None = None, delay: float = 0.0) -> ExampleUpstream:
    """The stand-in upstream. ``api_key``: required upstream key (None: no check).
    ``delay``: seconds to wait before answering any request but ``/healthz`` (a slow model)."""
    return ExampleUpstream(api_key, delay)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--api-key", default=os.environ.get("EXAMPLE_UPSTREAM_KEY") or None)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before every answer")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--guard-jwks-url", help="accept only requests Bastion signed (its JWKS)")
    parser.add_argument("--guard-audience", action="append", default=[], help="aud to accept")
    args = parser.parse_args(argv)
    app: ASGIApp = create_app(api_key=args.api_key, delay=args.delay)
    if args.guard_jwks_url:
        if not args.guard_audience:
            parser.error("--guard-jwks-url needs at least one --guard-audience")
        from bastion.guard import protect

        try:
            app = protect(
                app,
                jwks_url=args.guard_jwks_url,
                audiences=args.guard_audience,
                open_paths=("/healthz",),
            )
        except ValueError as exc:
            parser.error(f"--guard-jwks-url: {exc}")
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        lifespan="on",
    )


if __name__ == "__main__":
    main()

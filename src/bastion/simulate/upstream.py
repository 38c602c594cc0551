"""The simulation's stand-in model server: NOT A MODEL.

Just enough of the OpenAI chat completions and Anthropic messages APIs for Bastion to forward to
and meter: every answer is a short canned text, and its ``usage`` reports exactly the output
tokens the caller asked for (``max_tokens``), so the simulated population controls the volumes
the detectors see without moving megabytes of text. Requests without the upstream key get a 401,
as a real provider would: that proves the gateway, not the caller, supplies it.
"""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

MAX_BODY = 1024 * 1024
REPLY = "(simulated reply)"

_JSON = [(b"content-type", b"application/json")]


class StandInUpstream:
    """A plain ASGI app; ``api_key`` is the key Bastion must present."""

    def __init__(self, api_key: str) -> None:
        self._key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await _body(receive)
        status, payload = self._answer(scope, body)
        await send({"type": "http.response.start", "status": status, "headers": _JSON})
        await send({"type": "http.response.body", "body": orjson.dumps(payload)})

    def _answer(self, scope: Scope, body: bytes) -> tuple[int, dict[str, Any]]:
        path: str = scope["path"]
        if scope["method"] != "POST" or path not in ("/v1/chat/completions", "/v1/messages"):
            return 404, _error("no such route")
        headers = dict(scope["headers"])
        bearer = headers.get(b"authorization", b"").removeprefix(b"Bearer ")
        presented = headers.get(b"x-api-key", bearer)
        if not hmac.compare_digest(presented, self._key):
            return 401, _error("invalid upstream key")
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            return 400, _error("the body is not JSON")
        if not isinstance(request, dict) or not isinstance(request.get("model"), str):
            return 400, _error("a JSON object with a model is required")
        tokens = request.get("max_tokens")
        tokens = tokens if isinstance(tokens, int) and 0 < tokens <= 1_000_000 else 16
        prompt = _prompt_words(request.get("messages"))
        if path == "/v1/messages":
            return 200, _message(request["model"], prompt, tokens)
        return 200, _completion(request["model"], prompt, tokens)


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error"}}


def _prompt_words(messages: object) -> int:
    if not isinstance(messages, list):
        return 0
    texts = [m.get("content") for m in messages if isinstance(m, dict)]
    return sum(len(text.split()) for text in texts if isinstance(text, str))


def _completion(model: str, prompt: int, tokens: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-sim",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": REPLY},
                "finish_reason": "length",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": tokens,
            "total_tokens": prompt + tokens,
        },
    }


def _message(model: str, prompt: int, tokens: int) -> dict[str, Any]:
    return {
        "id": "msg_sim",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": REPLY}],
        "stop_reason": "max_tokens",
        "usage": {"input_tokens": prompt, "output_tokens": tokens},
    }


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= MAX_BODY:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)

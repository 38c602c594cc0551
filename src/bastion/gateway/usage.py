"""Reading token usage out of upstream responses as they stream past, without buffering them.

Server-sent events are scanned line by line for ``data:`` lines that mention usage; plain JSON
bodies are kept (up to a cap) and parsed once at the end. Unknown shapes yield no usage. The same
pass notes whether the upstream refused to answer (a detection signal; never the text).
"""

from __future__ import annotations

from typing import Any

import orjson

MAX_JSON_BODY = 4 * 1024 * 1024
MAX_LINE = 1024 * 1024


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class UsageMeter:
    def __init__(self, api: str, event_stream: bool) -> None:
        self.api = api
        self.event_stream = event_stream
        self.tokens_in: int | None = None
        self.tokens_out: int | None = None
        # The upstream declined to answer (Anthropic ``stop_reason: refusal``; OpenAI
        # ``finish_reason: content_filter`` or a ``refusal`` message): a D10 signal.
        self.refused = False
        self._buffer = bytearray()
        self._overflow = False

    def feed(self, chunk: bytes) -> None:
        if self._overflow:
            return
        self._buffer += chunk
        if not self.event_stream:
            self._overflow = len(self._buffer) > MAX_JSON_BODY
            return
        *lines, rest = self._buffer.split(b"\n")
        self._buffer = bytearray(rest)
        if len(self._buffer) > MAX_LINE:
            self._buffer.clear()
        for line in lines:
            if line.startswith(b"data:") and any(mark in line for mark in _MARKS):
                self._read(bytes(line[5:].strip()))

    def finish(self) -> None:
        if not self.event_stream and not self._overflow and self._buffer:
            self._read(bytes(self._buffer))
        self._buffer.clear()

    def _read(self, payload: bytes) -> None:
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(data, dict):
            return
        if not self.refused:
            self.refused = _refusal(self.api, data)
        if self.api == "anthropic":
            self._anthropic(data)
        else:
            usage = data.get("usage")
            if isinstance(usage, dict):
                tokens_in = _int(usage.get("prompt_tokens"))
                tokens_out = _int(usage.get("completion_tokens"))
                if tokens_in is not None:
                    self.tokens_in = tokens_in
                if tokens_out is not None:
                    self.tokens_out = tokens_out

    def _anthropic(self, data: dict[str, Any]) -> None:
        message = data.get("message")
        usage = message.get("usage") if isinstance(message, dict) else data.get("usage")
        if not isinstance(usage, dict):
            return
        tokens_in = _int(usage.get("input_tokens"))
        tokens_out = _int(usage.get("output_tokens"))
        if tokens_in is not None:
            self.tokens_in = tokens_in
        if tokens_out is not None:
            self.tokens_out = tokens_out


_MARKS = (b'"usage"', b'"refusal"', b'"content_filter"')


def _refusal(api: str, data: dict[str, Any]) -> bool:
    """Whether a response body or stream event says the model refused."""
    if api == "anthropic":
        delta = data.get("delta")
        reason = delta.get("stop_reason") if isinstance(delta, dict) else data.get("stop_reason")
        return reason == "refusal"
    choices = data.get("choices")
    if not isinstance(choices, list):
        return False
    for choice in choices[:8]:
        if not isinstance(choice, dict):
            continue
        if choice.get("finish_reason") == "content_filter":
            return True
        for key in ("message", "delta"):
            part = choice.get(key)
            if isinstance(part, dict) and isinstance(part.get("refusal"), str) and part["refusal"]:
                return True
    return False


class UsageChunkFilter:
    """Drops the usage-only chunk Bastion asked an OpenAI upstream for, when the caller did not.

    Bastion adds ``stream_options.include_usage`` to every streamed OpenAI request so metering
    never depends on the caller; the upstream then ends the stream with a chunk whose
    ``choices`` is empty. A caller who did not ask for it would trip over it, so whole SSE events
    are passed through as they complete and that one is left out.
    """

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._partial + chunk
        *events, self._partial = data.split(b"\n\n")
        return b"".join(event + b"\n\n" for event in events if not self._usage_only(event))

    def finish(self) -> bytes:
        rest, self._partial = self._partial, b""
        return b"" if self._usage_only(rest) else rest

    @staticmethod
    def _usage_only(event: bytes) -> bool:
        if b'"usage"' not in event or b'"choices"' not in event:
            return False
        for line in event.split(b"\n"):
            if line.startswith(b"data:"):
                try:
                    payload = orjson.loads(line[5:].strip())
                except orjson.JSONDecodeError:
                    return False
                return (
                    isinstance(payload, dict)
                    and payload.get("choices") == []
                    and isinstance(payload.get("usage"), dict)
                )
        return False

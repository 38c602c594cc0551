"""How the gateway answers when it does not forward: the one place errors are rendered.

Error bodies have one stable shape that both official SDKs parse::

    {"type": "error", "error": {"type": CODE, "code": CODE, "message": TEXT, "reasons": [...]}}

Authentication failures add ``WWW-Authenticate: DPoP error="...", error_description="..."``
(RFC 9449 §7.1, RFC 6750 §3); a step-up (RFC 9470) adds ``max_age=N`` in seconds. Messages
come from ``BastionError`` and never hold request content.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import orjson
from starlette.types import Send

from bastion.errors import (
    AccessDenied,
    AuthenticationError,
    BastionError,
    InsufficientUserAuthentication,
    InvalidDPoPProof,
    TooManyRequests,
)

log = logging.getLogger("bastion.gateway")

JSON_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-type", b"application/json"),
    (b"cache-control", b"no-store"),
]
DPOP_ALGS = b'algs="EdDSA ES256"'


def error_body(error: BastionError) -> bytes:
    detail: dict[str, object] = {"type": error.code, "code": error.code, "message": error.message}
    if isinstance(error, AccessDenied):
        detail["reasons"] = list(error.reasons)
    return orjson.dumps({"type": "error", "error": detail})


def _quote(text: str) -> bytes:
    """Make a message safe inside a quoted header value: no quotes, backslashes or controls."""
    safe = "".join(c if c.isprintable() else " " for c in text)
    return safe.replace("\\", "").replace('"', "'").encode("ascii", "replace")


def error_headers(error: BastionError) -> list[tuple[bytes, bytes]]:
    headers = list(JSON_HEADERS)
    if isinstance(error, TooManyRequests):
        headers.append((b"retry-after", str(error.retry_after).encode()))
    if isinstance(error, AuthenticationError):
        code = b"invalid_dpop_proof" if isinstance(error, InvalidDPoPProof) else b"invalid_token"
        step_up = b""
        if isinstance(error, InsufficientUserAuthentication):  # RFC 9470 §3
            code = b"insufficient_user_authentication"
            step_up = b"max_age=" + str(int(error.max_age)).encode() + b", "
        description = b'error_description="' + _quote(error.message) + b'", '
        challenge = b'DPoP error="' + code + b'", ' + description + step_up + DPOP_ALGS
        headers.append((b"www-authenticate", challenge))
    return headers


async def send_json(
    send: Send, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = JSON_HEADERS
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, error: BastionError) -> None:
    await send_json(send, error.status, error_body(error), error_headers(error))


def internal_error() -> BastionError:
    """What a caller sees for anything unexpected: a plain 500, details only in the log."""
    return BastionError("internal error")

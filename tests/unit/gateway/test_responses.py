"""The gateway's one error shape, its status codes, and the WWW-Authenticate challenge."""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.errors import (
    AccessDenied,
    AuthenticationError,
    BadRequest,
    BastionError,
    BodyTooLarge,
    HeadersTooLarge,
    InvalidDPoPProof,
    InvalidJSON,
    InvalidToken,
    NotFound,
    Unavailable,
    UnknownModel,
    UpstreamError,
    UpstreamTimeout,
)
from bastion.gateway.responses import (
    error_body,
    error_headers,
    internal_error,
    send_error,
    send_json,
)

# RFC 9110 quoted-string content minus '"' and '\\': what the description may hold.
CHALLENGE = re.compile(
    rb'DPoP error="(?P<code>[a-z_]+)", '
    rb'error_description="(?P<text>[\t\x20\x21\x23-\x5b\x5d-\x7e]*)", '
    rb'algs="EdDSA ES256"'
)


def test_the_error_body_shape_is_pinned() -> None:
    body = error_body(AccessDenied("denied: locked_org", ("locked_org",)))
    assert body == (
        b'{"type":"error","error":{"type":"access_denied","code":"access_denied",'
        b'"message":"denied: locked_org","reasons":["locked_org"]}}'
    )


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (NotFound("no such endpoint: /v2"), "not_found"),
        (UnknownModel("unknown model 'gpt-9'"), "model_not_found"),
        (BadRequest("bad"), "invalid_request"),
        (InvalidJSON("the body is not JSON"), "invalid_json"),
        (InvalidToken("access token has expired"), "invalid_token"),
        (InvalidDPoPProof("DPoP proof replayed"), "invalid_dpop_proof"),
        (Unavailable("no snapshot"), "unavailable"),
        (UpstreamTimeout("upstream timed out"), "upstream_timeout"),
        (BastionError("internal error"), "internal_error"),
    ],
)
def test_every_error_has_the_same_shape_without_reasons(error: BastionError, code: str) -> None:
    assert orjson.loads(error_body(error)) == {
        "type": "error",
        "error": {"type": code, "code": code, "message": error.message},
    }


def test_access_denied_always_lists_its_reasons() -> None:
    two = orjson.loads(error_body(AccessDenied("x", ("principal_disabled", "locked_all"))))
    assert two["error"]["reasons"] == ["principal_disabled", "locked_all"]
    none = orjson.loads(error_body(AccessDenied("x")))
    assert none["error"]["reasons"] == []


def test_an_unexpected_error_is_a_plain_500() -> None:
    error = internal_error()
    assert (error.status, error.code, error.message) == (500, "internal_error", "internal error")
    assert orjson.loads(error_body(error))["error"]["message"] == "internal error"


def test_errors_that_are_not_authentication_failures_carry_no_challenge() -> None:
    for error in (AccessDenied("no"), NotFound("x"), BadRequest("x"), internal_error()):
        headers = dict(error_headers(error))
        assert headers == {b"content-type": b"application/json", b"cache-control": b"no-store"}


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidToken("access token has expired"), b"invalid_token"),
        (AuthenticationError("the token's principal no longer exists"), b"invalid_token"),
        (InvalidDPoPProof("DPoP proof replayed"), b"invalid_dpop_proof"),
    ],
)
def test_authentication_failures_carry_a_dpop_challenge(
    error: AuthenticationError, code: bytes
) -> None:
    headers = error_headers(error)
    challenges = [value for name, value in headers if name == b"www-authenticate"]
    assert len(challenges) == 1
    match = CHALLENGE.fullmatch(challenges[0])
    assert match is not None, challenges[0]
    assert match["code"] == code
    assert (b"content-type", b"application/json") in headers


def test_the_challenge_is_exactly_formatted() -> None:
    headers = dict(error_headers(InvalidToken("access token has expired")))
    assert headers[b"www-authenticate"] == (
        b'DPoP error="invalid_token", error_description="access token has expired", '
        b'algs="EdDSA ES256"'
    )


def test_quotes_and_backslashes_in_a_message_cannot_break_the_challenge() -> None:
    message = 'send "DPoP <token>" \\", error="forged'
    challenge = dict(error_headers(InvalidToken(message)))[b"www-authenticate"]
    match = CHALLENGE.fullmatch(challenge)
    assert match is not None, challenge
    assert match["code"] == b"invalid_token"
    assert match["text"] == b"send 'DPoP <token>' ', error='forged"


def test_non_ascii_in_a_message_becomes_question_marks() -> None:
    challenge = dict(error_headers(InvalidDPoPProof("clé “wrong”")))[b"www-authenticate"]
    assert b'error_description="cl? ?wrong?"' in challenge


def test_control_characters_in_a_message_cannot_break_the_header() -> None:
    # uvicorn and h11 refuse a header value holding CR, LF or other controls: the 401 would
    # become a dropped connection instead of a readable challenge.
    challenge = dict(error_headers(InvalidToken("bad token\r\nSet-Cookie: session=x")))[
        b"www-authenticate"
    ]
    assert CHALLENGE.fullmatch(challenge) is not None, challenge


@settings(max_examples=300, deadline=None, database=None)
@given(message=st.text(st.characters(exclude_categories=["Cc"]), max_size=80))
def test_any_printable_message_gives_a_well_formed_challenge(message: str) -> None:
    challenge = dict(error_headers(InvalidDPoPProof(message)))[b"www-authenticate"]
    assert CHALLENGE.fullmatch(challenge) is not None, challenge


# -- sending --------------------------------------------------------------------------------------


class _Capture:
    def __init__(self) -> None:
        self.messages: list[MutableMapping[str, Any]] = []

    async def __call__(self, message: MutableMapping[str, Any]) -> None:
        self.messages.append(message)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidToken("x"), 401),
        (InvalidDPoPProof("x"), 401),
        (AccessDenied("x", ("not_granted",)), 403),
        (UnknownModel("x"), 404),
        (BadRequest("x"), 400),
        (BodyTooLarge("x"), 413),
        (HeadersTooLarge("x"), 431),
        (UpstreamError("x"), 502),
        (Unavailable("x"), 503),
        (UpstreamTimeout("x"), 504),
        (internal_error(), 500),
    ],
)
async def test_send_error_answers_with_the_status_body_and_headers(
    error: BastionError, status: int
) -> None:
    send = _Capture()
    await send_error(send, error)
    start, body = send.messages
    assert start["type"] == "http.response.start"
    assert start["status"] == status
    headers = dict(start["headers"])
    assert headers[b"content-length"] == str(len(body["body"])).encode()
    assert headers[b"content-type"] == b"application/json"
    assert (b"www-authenticate" in headers) == (status == 401)
    assert body == {"type": "http.response.body", "body": error_body(error)}


@pytest.mark.anyio
async def test_send_json_sends_one_complete_body() -> None:
    send = _Capture()
    await send_json(send, 200, b'{"ok":true}')
    start, body = send.messages
    assert start["status"] == 200
    assert start["headers"] == [
        (b"content-type", b"application/json"),
        (b"cache-control", b"no-store"),
        (b"content-length", b"11"),
    ]
    assert body == {"type": "http.response.body", "body": b'{"ok":true}'}
    assert not body.get("more_body", False)

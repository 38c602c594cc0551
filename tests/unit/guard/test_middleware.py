"""The guard in front of a model server: a valid assertion passes once; every bad one is refused
with its own code, and the model server never sees the request."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from bastion.gateway.assertion import TYP, body_hash
from bastion.identity import jws
from bastion.identity.keys import IssuerKey, generate_private_jwk, load_private_key

from .conftest import AUDIENCE, BODY, ISSUER, NOW, PATH, Guarded

pytestmark = pytest.mark.anyio


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": int(NOW),
        "exp": int(NOW) + 60,
        "jti": secrets.token_urlsafe(16),
        "htm": "POST",
        "htu": PATH,
        "bsh": body_hash(BODY),
        "sub": "alice",
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def unsigned(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    head = jws.b64url_encode(orjson.dumps(header)) + "." + jws.b64url_encode(orjson.dumps(payload))
    return head + "." + jws.b64url_encode(signature)


def hs256(g: Guarded) -> str:
    """HS256 keyed with Bastion's public key: the classic algorithm-confusion forgery."""
    header = {"alg": "HS256", "typ": TYP, "kid": g.issuer.kid}
    head = unsigned(header, claims()).rsplit(".", 1)[0]
    secret = g.issuer.verify_key.public_bytes_raw()
    return head + "." + jws.b64url_encode(hmac.new(secret, head.encode(), hashlib.sha256).digest())


def other_key_same_kid(g: Guarded) -> str:
    impostor = load_private_key(generate_private_jwk("EdDSA"))
    return jws.sign(impostor, {"alg": "EdDSA", "typ": TYP, "kid": g.issuer.kid}, claims())


def own(**changes: Any) -> Callable[[Guarded], str]:
    return lambda g: g.issuer.sign_jwt({"typ": TYP}, claims(**changes))


FORGED: dict[str, tuple[Callable[[Guarded], str], str]] = {
    "expired long ago": (own(iat=int(NOW) - 200, exp=int(NOW) - 140), "expired"),
    "issued in the future": (own(iat=int(NOW) + 40, exp=int(NOW) + 100), "not_yet_valid"),
    "for another upstream": (own(aud="http://other-model.test/v1"), "wrong_audience"),
    "aud as a list": (own(aud=[AUDIENCE]), "wrong_audience"),
    "from another issuer": (own(iss="https://evil.test"), "wrong_issuer"),
    "signed by another key under Bastion's kid": (other_key_same_kid, "bad_signature"),
    "signed by another key": (
        lambda g: IssuerKey.generate().sign_jwt({"typ": TYP}, claims()),
        "unknown_key",
    ),
    "alg none": (
        lambda g: unsigned({"alg": "none", "typ": TYP, "kid": g.issuer.kid}, claims()),
        "unsupported_alg",
    ),
    "HS256 with the public key": (hs256, "unsupported_alg"),
    "crit header": (
        lambda g: g.issuer.sign_jwt({"typ": TYP, "crit": ["x"], "x": 1}, claims()),
        "unsupported_alg",
    ),
    "an access token": (lambda g: g.issuer.sign_jwt({"typ": "at+jwt"}, claims()), "wrong_type"),
    "for another path": (own(htu="/v1/embeddings"), "path_mismatch"),
    "for another method": (own(htm="PUT"), "method_mismatch"),
    "a body changed by one byte": (own(bsh=body_hash(BODY[:-1] + b"]")), "body_mismatch"),
    "living an hour": (own(exp=int(NOW) + 3600), "invalid_claims"),
    "without jti": (own(jti=None), "invalid_claims"),
    "with a string iat": (own(iat=str(int(NOW))), "invalid_claims"),
    "garbage": (lambda g: "not-a-jwt", "malformed_assertion"),
    "three garbage parts": (lambda g: "a.b.c", "malformed_assertion"),
    "no kid": (
        lambda g: jws.sign(
            load_private_key(generate_private_jwk()), {"alg": "EdDSA", "typ": TYP}, claims()
        ),
        "malformed_assertion",
    ),
    "oversized": (lambda g: "a" * 9000 + ".b.c", "malformed_assertion"),
}


def assert_refused(response: httpx.Response, g: Guarded, code: str, status: int = 401) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    if status == 401:
        assert response.headers["www-authenticate"] == f'Bastion-Assertion error="{code}"'
    assert g.inner.calls == []  # the model server never saw it


async def test_a_valid_assertion_passes_once_without_its_header(guarded: Guarded) -> None:
    response = await guarded.post(guarded.assertion())
    assert response.status_code == 200
    assert response.text == "model says hi"
    [(scope, body)] = guarded.inner.calls
    assert body == BODY  # replayed to the app byte for byte
    assert all(name != b"bastion-assertion" for name, _ in scope["headers"])
    verified = scope["bastion.assertion"]
    assert (verified.subject, verified.event_id, verified.audience) == ("alice", "ev-1", AUDIENCE)


@pytest.mark.parametrize("case", sorted(FORGED))
async def test_forged_assertions_are_refused_with_their_code(guarded: Guarded, case: str) -> None:
    forge, code = FORGED[case]
    assert_refused(await guarded.post(forge(guarded)), guarded, code)


async def test_a_replayed_assertion_is_refused(guarded: Guarded) -> None:
    token = guarded.assertion()
    assert (await guarded.post(token)).status_code == 200
    guarded.inner.calls.clear()
    assert_refused(await guarded.post(token), guarded, "replayed")


async def test_a_failed_check_does_not_use_the_assertion_up(guarded: Guarded) -> None:
    token = guarded.assertion()
    assert_refused(await guarded.post(token, body=BODY + b" "), guarded, "body_mismatch")
    assert (await guarded.post(token)).status_code == 200  # the real request still goes through


async def test_expiry_allows_thirty_seconds_of_clock_skew(guarded: Guarded) -> None:
    token = guarded.assertion()
    guarded.clock.now = NOW + 60 + 29
    assert (await guarded.post(token)).status_code == 200
    guarded.inner.calls.clear()
    late = guarded.assertion()
    guarded.clock.now += 60 + 30
    assert_refused(await guarded.post(late), guarded, "expired")


async def test_missing_and_doubled_headers_are_refused(guarded: Guarded) -> None:
    assert_refused(await guarded.post(None), guarded, "missing_assertion")
    token = guarded.assertion()
    async with guarded.client() as client:
        response = await client.post(
            PATH, content=BODY, headers=[("bastion-assertion", token), ("bastion-assertion", token)]
        )
    assert_refused(response, guarded, "malformed_assertion")


async def test_method_path_and_query_are_bound(guarded: Guarded) -> None:
    async with guarded.client() as client:
        put = await client.put(
            PATH, content=BODY, headers={"bastion-assertion": guarded.assertion()}
        )
    assert_refused(put, guarded, "method_mismatch")
    token = guarded.assertion()
    assert_refused(await guarded.post(token, path=PATH + "?debug=1"), guarded, "path_mismatch")
    assert (
        await guarded.post(guarded.assertion(target=PATH + "?debug=1"), path=PATH + "?debug=1")
    ).status_code == 200


async def test_an_oversized_body_is_413_before_any_check(guarded: Guarded) -> None:
    big = b"x" * (64 * 1024 + 1)
    assert_refused(
        await guarded.post(guarded.assertion(body=big), body=big), guarded, "body_too_large", 413
    )


async def test_refusals_log_the_code_never_the_assertion(
    guarded: Guarded, caplog: pytest.LogCaptureFixture
) -> None:
    token = other_key_same_kid(guarded)
    with caplog.at_level(logging.INFO, logger="bastion.guard"):
        await guarded.post(token)
    assert "bad_signature" in caplog.text
    assert token not in caplog.text
    assert token.split(".")[1] not in caplog.text


async def test_open_paths_take_get_without_an_assertion_and_nothing_else(guarded: Guarded) -> None:
    async with guarded.client() as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.post("/healthz", content=b"{}")).status_code == 401
        assert (await client.get("/healthz/x")).status_code == 401


async def test_websockets_are_closed_before_the_app(guarded: Guarded) -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "websocket.connect"}

    await guarded.app({"type": "websocket", "path": PATH, "headers": []}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]
    assert guarded.inner.calls == []

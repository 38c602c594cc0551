"""RFC 7523 client assertions: made by clients, checked by the token endpoint, used once."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson
import pytest

from bastion.errors import InvalidClient
from bastion.identity import jws
from bastion.identity.assertions import (
    ClientAssertion,
    make_client_assertion,
    verify_client_assertion,
)
from bastion.identity.keys import (
    SigningKey,
    generate_private_jwk,
    load_private_key,
    public_jwk,
    thumbprint,
)
from bastion.identity.replay import MemoryReplayCache

TOKEN_URL = "https://bastion.test/oauth/token"
NOW = 1_800_000_000
WRONG_AUD = "client assertion aud is not this token endpoint"


@pytest.fixture(params=["EdDSA", "ES256"])
def key(request: pytest.FixtureRequest) -> SigningKey:
    return SigningKey(generate_private_jwk(request.param))


@pytest.fixture
def cache() -> MemoryReplayCache:
    return MemoryReplayCache()


class Enrolled:
    """The enrolled keys of each client, as ``lookup`` sees them; records every lookup."""

    def __init__(self, *entries: tuple[str, SigningKey]) -> None:
        self.keys = {(client, key.kid): dict(key.public_jwk) for client, key in entries}
        self.calls: list[tuple[str, str]] = []

    def __call__(self, client_id: str, kid: str) -> dict[str, str] | None:
        self.calls.append((client_id, kid))
        return self.keys.get((client_id, kid))


def b64json(value: object) -> str:
    return jws.b64url_encode(orjson.dumps(value))


def assertion(key: SigningKey, header: dict[str, Any] | None = None, **claims: Any) -> str:
    full = {
        "iss": "alice",
        "sub": "alice",
        "aud": TOKEN_URL,
        "iat": NOW,
        "exp": NOW + 60,
        "jti": "a-1",
    }
    full.update(claims)
    full = {k: v for k, v in full.items() if v is not None}
    return key.sign({"typ": "JWT", "kid": key.kid, **(header or {})}, full)


def verify(
    token: str, cache: MemoryReplayCache, lookup: Enrolled, now: float = NOW
) -> ClientAssertion:
    return verify_client_assertion(
        token, audiences={TOKEN_URL}, lookup=lookup, replay=cache, now=now
    )


def refused(
    token: str, cache: MemoryReplayCache, lookup: Enrolled, message: str, now: float = NOW
) -> None:
    before = len(cache)
    with pytest.raises(InvalidClient) as info:
        verify(token, cache, lookup, now)
    assert info.value.message == message
    assert len(cache) == before
    if len(token) > 8:
        assert token not in info.value.message


def test_a_made_assertion_verifies(key: SigningKey, cache: MemoryReplayCache) -> None:
    jwk_private = generate_private_jwk(key.alg)
    lookup = Enrolled(("alice", SigningKey(jwk_private)))
    token = make_client_assertion(jwk_private, client_id="alice", audience=TOKEN_URL, now=NOW)
    result = verify(token, cache, lookup)
    assert result.client_id == "alice"
    assert result.jkt == thumbprint(jwk_private)
    parts = jws.parse(token)
    assert parts.header == {"alg": key.alg, "typ": "JWT", "kid": thumbprint(jwk_private)}
    claims = jws.json_object(parts.payload)
    assert claims["iss"] == claims["sub"] == "alice"
    assert claims["exp"] - claims["iat"] == 60
    assert result.jti == claims["jti"]
    assert len(cache) == 1


def test_an_assertion_works_once(key: SigningKey, cache: MemoryReplayCache) -> None:
    lookup = Enrolled(("alice", key))
    token = assertion(key)
    verify(token, cache, lookup)
    refused(token, cache, lookup, "client assertion jti was already used", now=NOW + 1)


def test_jti_scope_is_the_client(cache: MemoryReplayCache) -> None:
    alice, bob = SigningKey(generate_private_jwk()), SigningKey(generate_private_jwk())
    lookup = Enrolled(("alice", alice), ("bob", bob))
    verify(assertion(alice, jti="same"), cache, lookup)
    verify(assertion(bob, iss="bob", sub="bob", jti="same"), cache, lookup)


def test_the_aud_may_be_a_list(key: SigningKey, cache: MemoryReplayCache) -> None:
    lookup = Enrolled(("alice", key))
    verify(assertion(key, aud=["https://elsewhere.test", TOKEN_URL]), cache, lookup)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("x" * 9000, "client assertion is too large"),
        ("abc", "client assertion is not a well-formed JWS"),
        ("a.b.c.d", "client assertion is not a well-formed JWS"),
        ("bm9wZQ.e30.AA", "client assertion header is not a JSON object"),
    ],
)
def test_garbled_assertions_are_refused(token: str, message: str, cache: MemoryReplayCache) -> None:
    refused(token, cache, Enrolled(), message)


def test_alg_none_and_hmac_are_refused(key: SigningKey, cache: MemoryReplayCache) -> None:
    lookup = Enrolled(("alice", key))
    claims = {"iss": "alice", "sub": "alice", "aud": TOKEN_URL, "exp": NOW + 60, "jti": "j"}
    none = f"{b64json({'alg': 'none', 'kid': key.kid})}.{b64json(claims)}."
    message = "client assertion alg must be asymmetric (none and HMAC refused)"
    refused(none, cache, lookup, message)
    signing_input = f"{b64json({'alg': 'HS256', 'kid': key.kid})}.{b64json(claims)}"
    mac = hmac.new(key.public_jwk["x"].encode(), signing_input.encode(), hashlib.sha256)
    refused(f"{signing_input}.{jws.b64url_encode(mac.digest())}", cache, lookup, message)
    assert lookup.calls == []  # refused before any key lookup


def test_other_algs_and_a_missing_kid_are_refused(
    key: SigningKey, cache: MemoryReplayCache
) -> None:
    lookup = Enrolled(("alice", key))
    rs = f"{b64json({'alg': 'RS256', 'kid': key.kid})}.{b64json({})}.AAAA"
    refused(rs, cache, lookup, "client assertion alg must be one of ES256, EdDSA")
    no_alg = f"{b64json({'kid': key.kid})}.{b64json({})}.AAAA"
    refused(no_alg, cache, lookup, "client assertion header has no alg")
    refused(assertion(key, header={"kid": ""}), cache, lookup, "client assertion header has no kid")
    no_kid = key.sign({"typ": "JWT"}, {"iss": "alice", "sub": "alice"})
    refused(no_kid, cache, lookup, "client assertion header has no kid")


def test_payload_must_be_a_json_object(key: SigningKey, cache: MemoryReplayCache) -> None:
    header = b64json({"alg": key.alg, "kid": key.kid})
    token = f"{header}.{jws.b64url_encode(b'[1]')}.AAAA"
    refused(token, cache, Enrolled(("alice", key)), "client assertion payload is not a JSON object")


@pytest.mark.parametrize(
    "claims",
    [{"iss": None}, {"sub": None}, {"sub": "bob"}, {"iss": 5, "sub": 5}, {"iss": "", "sub": ""}],
)
def test_iss_and_sub_must_be_the_client(
    key: SigningKey, cache: MemoryReplayCache, claims: dict[str, Any]
) -> None:
    refused(
        assertion(key, **claims),
        cache,
        Enrolled(("alice", key)),
        "client assertion iss and sub must both be the client_id",
    )


def test_the_key_must_be_enrolled_for_that_client(
    key: SigningKey, cache: MemoryReplayCache
) -> None:
    lookup = Enrolled(("bob", key))  # the key belongs to bob, not alice
    refused(assertion(key), cache, lookup, "client assertion key is not enrolled for this client")
    assert lookup.calls == [("alice", key.kid)]


def test_an_unusable_enrolled_key_is_refused(key: SigningKey, cache: MemoryReplayCache) -> None:
    lookup = Enrolled(("alice", key))
    lookup.keys[("alice", key.kid)] = {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}
    refused(assertion(key), cache, lookup, "the enrolled key for this client is unusable")


def test_alg_must_fit_the_enrolled_key(cache: MemoryReplayCache) -> None:
    enrolled = SigningKey(generate_private_jwk("EdDSA"))
    p256 = load_private_key(generate_private_jwk("ES256"))
    claims = {"iss": "alice", "sub": "alice", "aud": TOKEN_URL, "exp": NOW + 60, "jti": "j"}
    token = jws.sign(p256, {"alg": "ES256", "kid": enrolled.kid}, claims)
    refused(
        token,
        cache,
        Enrolled(("alice", enrolled)),
        "client assertion alg does not match the enrolled key",
    )


def test_the_signature_must_be_by_the_enrolled_key(
    key: SigningKey, cache: MemoryReplayCache
) -> None:
    impostor = SigningKey(generate_private_jwk(key.alg))
    token = assertion(impostor, header={"kid": key.kid})
    refused(token, cache, Enrolled(("alice", key)), "client assertion signature is invalid")


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"aud": "https://other.test/oauth/token"}, WRONG_AUD),
        ({"aud": ["https://other.test"]}, WRONG_AUD),
        ({"aud": None}, WRONG_AUD),
        ({"aud": [5]}, WRONG_AUD),
        ({"exp": None}, "client assertion has no exp"),
        ({"exp": "later"}, "client assertion exp is not a number"),
        ({"exp": NOW - 5}, "client assertion has expired"),
        ({"exp": NOW + 306}, "client assertion exp is more than 300 s ahead"),
        ({"nbf": NOW + 30}, "client assertion is not valid yet (nbf)"),
        ({"iat": NOW + 30}, "client assertion iat is in the future"),
        ({"iat": False}, "client assertion iat is not a number"),
        ({"jti": None}, "client assertion has no jti"),
        ({"jti": ""}, "client assertion has no jti"),
        ({"jti": "j" * 257}, "client assertion jti is too long"),
    ],
)
def test_claims_are_checked(
    key: SigningKey, cache: MemoryReplayCache, claims: dict[str, Any], message: str
) -> None:
    refused(assertion(key, **claims), cache, Enrolled(("alice", key)), message)


def test_lifetime_limits(key: SigningKey, cache: MemoryReplayCache) -> None:
    lookup = Enrolled(("alice", key))
    verify(assertion(key, exp=NOW + 305, jti="far"), cache, lookup)
    verify(assertion(key, exp=NOW - 4, jti="just-expired-within-skew"), cache, lookup)


def test_public_jwk_of_the_result_key_matches(key: SigningKey, cache: MemoryReplayCache) -> None:
    result = verify(assertion(key), cache, Enrolled(("alice", key)))
    assert result.jkt == thumbprint(public_jwk(key.public_jwk))

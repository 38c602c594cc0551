"""RFC 9068 access tokens: issue, verify, and every way a token can be wrong (forged by hand)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion.errors import InvalidToken
from bastion.identity import jws
from bastion.identity.access_tokens import AccessClaims, AccessTokenCodec
from bastion.identity.keys import IssuerKey, generate_private_jwk, load_private_key

ISSUER = "https://bastion.test"
AUDIENCE = "https://bastion.test/gateway"
NOW = 1_800_000_000.0
JKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"


@pytest.fixture
def issuer_jwk() -> dict[str, str]:
    return generate_private_jwk()


@pytest.fixture
def codec(issuer_jwk: dict[str, str]) -> AccessTokenCodec:
    return AccessTokenCodec(IssuerKey(issuer_jwk), ISSUER, AUDIENCE)


def b64json(value: object) -> str:
    return jws.b64url_encode(orjson.dumps(value))


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": AUDIENCE,
        "client_id": "alice",
        "iat": int(NOW),
        "exp": int(NOW) + 600,
        "jti": "j1",
        "cnf": {"jkt": JKT},
        "org": "lab",
        "fam": "fam_1",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def signed(jwk: dict[str, str], header: dict[str, Any], payload: bytes) -> str:
    """A token signed with ``jwk`` over an arbitrary header and payload, as an attacker would."""
    signing_input = f"{b64json(header)}.{jws.b64url_encode(payload)}"
    key = Ed25519PrivateKey.from_private_bytes(jws.b64url_decode(jwk["d"]))
    signature = key.sign(signing_input.encode())
    return f"{signing_input}.{jws.b64url_encode(signature)}"


def header_for(jwk: dict[str, str], **overrides: Any) -> dict[str, Any]:
    header: dict[str, Any] = {"alg": "EdDSA", "typ": "at+jwt", "kid": IssuerKey(jwk).kid}
    header.update(overrides)
    return {k: v for k, v in header.items() if v is not None}


def refused(codec: AccessTokenCodec, token: str, message: str, now: float = NOW) -> None:
    with pytest.raises(InvalidToken) as info:
        codec.verify(token, now)
    assert info.value.message == message
    if len(token) > 8:
        assert token not in info.value.message


def test_issued_token_verifies_to_its_claims(codec: AccessTokenCodec) -> None:
    token, issued = codec.issue(
        sub="alice", client_id="alice", org="lab", jkt=JKT, family="fam_1", ttl=600, now=NOW
    )
    assert codec.verify(token, NOW + 1) == issued
    assert issued == AccessClaims(
        sub="alice",
        client_id="alice",
        org="lab",
        jkt=JKT,
        family="fam_1",
        jti=issued.jti,
        iat=int(NOW),
        exp=int(NOW) + 600,
        iss=ISSUER,
        aud=AUDIENCE,
    )
    assert len(jws.b64url_decode(issued.jti)) == 16  # 128 random bits
    parts = jws.parse(token)
    assert parts.header == {"alg": "EdDSA", "typ": "at+jwt", "kid": codec_kid(codec)}
    payload = jws.json_object(parts.payload)
    assert payload["cnf"] == {"jkt": JKT}
    assert payload["fam"] == "fam_1"


def codec_kid(codec: AccessTokenCodec) -> str:
    token, _ = codec.issue(sub="a", client_id="a", org="o", jkt=JKT, family="f", ttl=1, now=NOW)
    return str(jws.parse(token).header["kid"])


def test_jtis_are_unique(codec: AccessTokenCodec) -> None:
    jtis = {
        codec.issue(sub="a", client_id="a", org="o", jkt=JKT, family="f", ttl=60, now=NOW)[1].jti
        for _ in range(50)
    }
    assert len(jtis) == 50


@pytest.mark.parametrize("ttl", [901, 3600, 0, -1])
def test_ttl_over_15_minutes_is_refused(codec: AccessTokenCodec, ttl: int) -> None:
    with pytest.raises(ValueError, match="between 1 and 900"):
        codec.issue(sub="a", client_id="a", org="o", jkt=JKT, family="f", ttl=ttl, now=NOW)


def test_ttl_of_15_minutes_is_allowed(codec: AccessTokenCodec) -> None:
    token, issued = codec.issue(
        sub="a", client_id="a", org="o", jkt=JKT, family="f", ttl=900, now=NOW
    )
    assert issued.exp - issued.iat == 900
    assert codec.verify(token, NOW + 899).jti == issued.jti


@pytest.mark.parametrize(
    "token", ["", "abc", "a.b", "a.b.c.d", "e30.e30.A!A", "e30 .e30.AA", "e30.e30.A"]
)
def test_garbled_tokens_are_refused(codec: AccessTokenCodec, token: str) -> None:
    refused(codec, token, "access token is not a JWS (three base64url parts)")


def test_oversize_tokens_are_refused(codec: AccessTokenCodec) -> None:
    refused(codec, "e30." + "A" * 9000 + ".AA", "access token is too large")


@pytest.mark.parametrize("header", ["bm90IGpzb24", "WzFd", ""])
def test_header_must_be_a_json_object(codec: AccessTokenCodec, header: str) -> None:
    refused(codec, f"{header}.e30.AA", "access token header is not a JSON object")


def test_alg_none_is_refused(codec: AccessTokenCodec, issuer_jwk: dict[str, str]) -> None:
    forged = f"{b64json(header_for(issuer_jwk, alg='none'))}.{b64json(claims())}."
    refused(codec, forged, "access token alg must be EdDSA")


def test_hs256_signed_with_the_public_key_is_refused(
    codec: AccessTokenCodec, issuer_jwk: dict[str, str]
) -> None:
    """The classic key-confusion attack: HMAC with the issuer's public key as the secret."""
    public_pem = (
        load_private_key(issuer_jwk)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for secret in (public_pem, jws.b64url_decode(issuer_jwk["x"]), issuer_jwk["x"].encode()):
        signing_input = f"{b64json(header_for(issuer_jwk, alg='HS256'))}.{b64json(claims())}"
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        refused(
            codec, f"{signing_input}.{jws.b64url_encode(mac)}", "access token alg must be EdDSA"
        )


def test_an_es256_token_is_refused(codec: AccessTokenCodec, issuer_jwk: dict[str, str]) -> None:
    other = generate_private_jwk("ES256")
    token = jws.sign(load_private_key(other), header_for(issuer_jwk, alg="ES256"), claims())
    refused(codec, token, "access token alg must be EdDSA")


@pytest.mark.parametrize("typ", [None, "JWT", "dpop+jwt", 1])
def test_typ_must_be_at_jwt(codec: AccessTokenCodec, issuer_jwk: dict[str, str], typ: Any) -> None:
    token = signed(issuer_jwk, header_for(issuer_jwk, typ=typ), orjson.dumps(claims()))
    refused(codec, token, "access token typ must be at+jwt")


@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt", "Application/AT+JWT"])
def test_typ_media_type_forms_are_accepted(
    codec: AccessTokenCodec, issuer_jwk: dict[str, str], typ: str
) -> None:
    token = signed(issuer_jwk, header_for(issuer_jwk, typ=typ), orjson.dumps(claims()))
    assert codec.verify(token, NOW).sub == "alice"


@pytest.mark.parametrize("kid", ["someone-else", None, 7])
def test_unknown_kid_is_refused(
    codec: AccessTokenCodec, issuer_jwk: dict[str, str], kid: Any
) -> None:
    header = {"alg": "EdDSA", "typ": "at+jwt"} if kid is None else header_for(issuer_jwk, kid=kid)
    refused(
        codec, signed(issuer_jwk, header, orjson.dumps(claims())), "access token kid is unknown"
    )


def test_bad_signature_is_refused(codec: AccessTokenCodec, issuer_jwk: dict[str, str]) -> None:
    token, _ = codec.issue(sub="a", client_id="a", org="o", jkt=JKT, family="f", ttl=60, now=NOW)
    head, payload, signature = token.split(".")
    tampered_payload = b64json(claims(sub="mallory"))
    refused(codec, f"{head}.{tampered_payload}.{signature}", "access token signature is invalid")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    refused(codec, f"{head}.{payload}.{flipped}", "access token signature is invalid")
    # Signed by another Ed25519 key that claims the issuer's kid.
    impostor = signed(generate_private_jwk(), header_for(issuer_jwk), orjson.dumps(claims()))
    refused(codec, impostor, "access token signature is invalid")


def test_signed_payload_must_be_a_json_object(
    codec: AccessTokenCodec, issuer_jwk: dict[str, str]
) -> None:
    for payload in (b"not json", b"[1]", b'"s"'):
        token = signed(issuer_jwk, header_for(issuer_jwk), payload)
        refused(codec, token, "access token payload is not a JSON object")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"iss": "https://evil.test"}, "access token iss is not this issuer"),
        ({"iss": None}, "access token iss is not this issuer"),
        ({"aud": "https://other.test"}, "access token aud does not include this audience"),
        ({"aud": ["https://other.test"]}, "access token aud does not include this audience"),
        ({"aud": None}, "access token aud does not include this audience"),
        ({"exp": None}, "access token exp is missing or not an integer"),
        ({"exp": "soon"}, "access token exp is missing or not an integer"),
        ({"iat": True}, "access token iat is missing or not an integer"),
        ({"sub": None}, "access token sub is missing"),
        ({"client_id": ""}, "access token client_id is missing"),
        ({"jti": 5}, "access token jti is missing"),
        ({"org": None}, "access token org is missing"),
        ({"fam": None}, "access token fam is missing"),
        ({"cnf": None}, "access token has no cnf.jkt: only DPoP-bound tokens are accepted"),
        (
            {"cnf": {"x5t#S256": "abc"}},
            "access token has no cnf.jkt: only DPoP-bound tokens are accepted",
        ),
        ({"cnf": {"jkt": ""}}, "access token has no cnf.jkt: only DPoP-bound tokens are accepted"),
        ({"cnf": "jkt"}, "access token has no cnf.jkt: only DPoP-bound tokens are accepted"),
    ],
)
def test_claims_are_checked(
    codec: AccessTokenCodec, issuer_jwk: dict[str, str], overrides: dict[str, Any], message: str
) -> None:
    token = signed(issuer_jwk, header_for(issuer_jwk), orjson.dumps(claims(**overrides)))
    refused(codec, token, message)


def test_aud_may_be_a_list(codec: AccessTokenCodec, issuer_jwk: dict[str, str]) -> None:
    payload = orjson.dumps(claims(aud=["https://other.test", AUDIENCE]))
    assert codec.verify(signed(issuer_jwk, header_for(issuer_jwk), payload), NOW).aud == AUDIENCE


def test_expiry_allows_the_clock_skew_and_no_more(codec: AccessTokenCodec) -> None:
    token, issued = codec.issue(
        sub="a", client_id="a", org="o", jkt=JKT, family="f", ttl=60, now=NOW
    )
    assert codec.verify(token, issued.exp + 4.9) == issued
    refused(codec, token, "access token has expired", now=issued.exp + 5)
    refused(codec, token, "access token has expired", now=issued.exp + 3600)


def test_iat_in_the_future_beyond_the_skew_is_refused(codec: AccessTokenCodec) -> None:
    token, issued = codec.issue(
        sub="a", client_id="a", org="o", jkt=JKT, family="f", ttl=60, now=NOW
    )
    assert codec.verify(token, NOW - 5) == issued
    refused(codec, token, "access token iat is in the future", now=NOW - 5.5)


def test_a_repeated_token_pays_the_signature_check_once(
    codec: AccessTokenCodec, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks: list[bytes] = []
    real = jws.verify

    def counting(*args: Any) -> bool:
        checks.append(args[2])
        return real(*args)

    monkeypatch.setattr(jws, "verify", counting)
    token, _ = codec.issue(sub="a", client_id="a", org="o", jkt=JKT, family="f", ttl=60, now=NOW)
    for offset in range(5):
        codec.verify(token, NOW + offset)
    assert len(checks) == 1
    # The cache never skips the expiry check.
    refused(codec, token, "access token has expired", now=NOW + 120)
    assert len(checks) == 1


def test_refused_tokens_are_not_cached(
    codec: AccessTokenCodec, issuer_jwk: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    checks: list[bytes] = []
    real = jws.verify

    def counting(*args: Any) -> bool:
        checks.append(args[2])
        return real(*args)

    monkeypatch.setattr(jws, "verify", counting)
    impostor = signed(generate_private_jwk(), header_for(issuer_jwk), orjson.dumps(claims()))
    for _ in range(3):
        refused(codec, impostor, "access token signature is invalid")
    assert len(checks) == 3


def test_the_cache_is_bounded(issuer_jwk: dict[str, str]) -> None:
    codec = AccessTokenCodec(IssuerKey(issuer_jwk), ISSUER, AUDIENCE, cache_size=2)
    tokens = [
        codec.issue(sub="a", client_id="a", org="o", jkt=JKT, family="f", ttl=60, now=NOW)[0]
        for _ in range(5)
    ]
    for token in tokens:
        codec.verify(token, NOW)
    assert codec._verified.cache_info().currsize == 2


def test_a_token_of_another_issuer_key_is_refused(codec: AccessTokenCodec) -> None:
    other = AccessTokenCodec(IssuerKey.generate(), ISSUER, AUDIENCE)
    token, _ = other.issue(sub="a", client_id="a", org="o", jkt=JKT, family="f", ttl=60, now=NOW)
    refused(codec, token, "access token kid is unknown")

"""Fuzzing: whatever arrives as a token, proof or assertion, the only outcome is the error of the
tree (never a crash, never a different exception), and a refused input leaves the replay cache
untouched."""

from __future__ import annotations

import contextlib
import string
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.errors import InvalidClient, InvalidDPoPProof, InvalidToken
from bastion.identity import jws
from bastion.identity.access_tokens import AccessTokenCodec
from bastion.identity.assertions import verify_client_assertion
from bastion.identity.dpop import DPoPVerifier
from bastion.identity.keys import IssuerKey, SigningKey, generate_private_jwk
from bastion.identity.replay import MemoryReplayCache

URL = "https://gw.test/v1/chat/completions"
NOW = 1_800_000_000
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=8,
)
b64_text = st.text(alphabet=string.ascii_letters + string.digits + "-_", max_size=90)


def maybe(*choices: Any) -> st.SearchStrategy[Any]:
    return st.sampled_from(choices) | json_values


jwks = st.fixed_dictionaries(
    {},
    optional={
        "kty": maybe("OKP", "EC", "RSA", "oct"),
        "crv": maybe("Ed25519", "P-256", "X25519", "P-384"),
        "x": b64_text | json_values,
        "y": b64_text | json_values,
        "d": b64_text,
        "kid": json_values,
    },
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "typ": maybe("dpop+jwt", "at+jwt", "application/at+jwt", "JWT"),
        "alg": maybe("EdDSA", "ES256", "none", "HS256", "RS256"),
        "jwk": jwks | json_values,
        "kid": b64_text | json_values,
    },
)
claims = st.fixed_dictionaries(
    {},
    optional={
        "jti": b64_text | json_values,
        "htm": maybe("POST", "GET", "post"),
        "htu": maybe(URL, "https://GW.test:443/v1/chat/completions", "/x", "http://[::1"),
        "iat": st.integers(NOW - 100, NOW + 100) | json_values,
        "exp": st.integers(NOW - 100, NOW + 1000) | json_values,
        "ath": b64_text | json_values,
        "iss": maybe("alice", "https://bastion.test"),
        "sub": maybe("alice"),
        "aud": maybe("https://bastion.test", ["https://bastion.test"]),
        "cnf": st.fixed_dictionaries({}, optional={"jkt": b64_text | json_values}) | json_values,
    },
)


def encode(header: Any, payload: Any, signature: bytes) -> str:
    return ".".join(
        [
            jws.b64url_encode(orjson.dumps(header)),
            jws.b64url_encode(orjson.dumps(payload)),
            jws.b64url_encode(signature),
        ]
    )


compact = st.builds(encode, headers | json_values, claims | json_values, st.binary(max_size=80))
anything = st.text(max_size=300) | compact | st.builds(lambda a, b: a + b, compact, st.text())


@FUZZ
@given(proof=anything | st.lists(anything, max_size=3), token=st.none() | st.text(max_size=50))
def test_dpop_verify_only_raises_invalid_dpop_proof(proof: Any, token: str | None) -> None:
    cache = MemoryReplayCache()
    try:
        DPoPVerifier(cache).verify(proof, method="POST", url=URL, access_token=token, now=NOW)
    except InvalidDPoPProof:
        assert len(cache) == 0


@FUZZ
@given(header=headers, payload=claims, alg=st.sampled_from(["EdDSA", "ES256"]), data=st.data())
def test_signed_dpop_proofs_with_fuzzed_claims(
    header: dict[str, Any], payload: dict[str, Any], alg: str, data: st.DataObject
) -> None:
    """Correctly signed proofs reach the claim checks; those too refuse cleanly."""
    key = SigningKey(generate_private_jwk(alg))
    header = {**header, "alg": alg}
    if data.draw(st.booleans()):
        header = {**header, "typ": "dpop+jwt", "jwk": key.public_jwk}
    proof = jws.sign(key._key, header, payload)
    cache = MemoryReplayCache()
    try:
        DPoPVerifier(cache).verify(proof, method="POST", url=URL, access_token=None, now=NOW)
    except InvalidDPoPProof:
        assert len(cache) == 0
    else:
        assert len(cache) == 1


@FUZZ
@given(token=anything)
def test_access_token_verify_only_raises_invalid_token(token: str) -> None:
    codec = AccessTokenCodec(IssuerKey.generate(), "https://bastion.test", "https://bastion.test")
    with contextlib.suppress(InvalidToken):
        codec.verify(token, NOW)


@FUZZ
@given(header=headers, payload=claims)
def test_issuer_signed_fuzzed_claims_only_raise_invalid_token(
    header: dict[str, Any], payload: dict[str, Any]
) -> None:
    """Tokens with a valid issuer signature reach the claim checks; those too refuse cleanly."""
    issuer = IssuerKey.generate()
    codec = AccessTokenCodec(issuer, "https://bastion.test", "https://bastion.test")
    token = issuer.sign_jwt({**header, "alg": "EdDSA"}, payload)
    with contextlib.suppress(InvalidToken):
        codec.verify(token, NOW)


@FUZZ
@given(assertion=anything, kid_found=st.booleans())
def test_client_assertion_verify_only_raises_invalid_client(
    assertion: str, kid_found: bool
) -> None:
    key = SigningKey(generate_private_jwk())
    cache = MemoryReplayCache()
    try:
        verify_client_assertion(
            assertion,
            audiences={"https://bastion.test"},
            lookup=lambda client, kid: key.public_jwk if kid_found else None,
            replay=cache,
            now=NOW,
        )
    except InvalidClient:
        assert len(cache) == 0

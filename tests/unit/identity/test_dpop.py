"""DPoP proofs (RFC 9449 §4.3): every check, its message, and that refusals leave no trace."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion.errors import InvalidDPoPProof
from bastion.identity import jws
from bastion.identity.dpop import (
    DPoPProof,
    DPoPSigner,
    DPoPVerifier,
    access_token_hash,
    check_binding,
    normalize_htu,
    sign_proof,
)
from bastion.identity.keys import (
    SigningKey,
    generate_private_jwk,
    load_private_key,
    public_jwk,
    thumbprint,
)
from bastion.identity.replay import MemoryReplayCache

URL = "https://gw.test/v1/chat/completions"
NOW = 1_800_000_000
TOKEN = "header.payload.signature-of-an-access-token"
MISMATCH = "DPoP proof htu does not match the request URL"


@pytest.fixture
def cache() -> MemoryReplayCache:
    return MemoryReplayCache()


@pytest.fixture
def verifier(cache: MemoryReplayCache) -> DPoPVerifier:
    return DPoPVerifier(cache)


@pytest.fixture(params=["EdDSA", "ES256"])
def key(request: pytest.FixtureRequest) -> SigningKey:
    return SigningKey(generate_private_jwk(request.param))


def make(
    key: SigningKey,
    *,
    header: dict[str, Any] | None = None,
    claims: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
    token: str | None = None,
) -> str:
    """A proof signed by ``key`` with chosen header and claim changes."""
    full_header: dict[str, Any] = {"typ": "dpop+jwt", "jwk": key.public_jwk, **(header or {})}
    full_claims: dict[str, Any] = {
        "jti": secrets.token_urlsafe(12),
        "htm": "POST",
        "htu": URL,
        "iat": NOW,
    }
    if token is not None:
        full_claims["ath"] = access_token_hash(token)
    full_claims.update(claims or {})
    for name in drop:
        full_header.pop(name, None)
        full_claims.pop(name, None)
    return key.sign(full_header, full_claims)


def b64json(value: object) -> str:
    return jws.b64url_encode(orjson.dumps(value))


def check(
    verifier: DPoPVerifier,
    proof: Any,
    *,
    method: str = "POST",
    url: str = URL,
    token: str | None = None,
    now: float = NOW,
) -> DPoPProof:
    return verifier.verify(proof, method=method, url=url, access_token=token, now=now)


def rejected(
    verifier: DPoPVerifier,
    cache: MemoryReplayCache,
    proof: Any,
    message: str,
    **kwargs: Any,
) -> None:
    before = len(cache)
    with pytest.raises(InvalidDPoPProof) as info:
        check(verifier, proof, **kwargs)
    assert info.value.message == message
    assert len(cache) == before, "a refused proof must not touch the replay cache"
    if isinstance(proof, str) and len(proof) > 8:
        assert proof not in info.value.message


@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("HTTPS://GW.Test:443/v1/Chat?stream=1#frag", "https://gw.test/v1/Chat"),
        ("http://gw.test:80", "http://gw.test/"),
        ("http://gw.test:8080/a", "http://gw.test:8080/a"),
        ("https://gw.test:80/a", "https://gw.test:80/a"),
        ("http://gw.test:443/a", "http://gw.test:443/a"),
        ("https://user:secret@gw.test/a", "https://gw.test/a"),
        ("https://[::1]:8443/a", "https://[::1]:8443/a"),
        ("https://[::1]:443/", "https://[::1]/"),
        ("https://gw.test/a%2Fb/./c", "https://gw.test/a%2Fb/./c"),
        ("https://gw.test?x=1", "https://gw.test/"),
    ],
)
def test_normalize_htu(url: str, normalized: str) -> None:
    assert normalize_htu(url) == normalized


@pytest.mark.parametrize("url", ["/v1/chat", "gw.test/v1", "", "https:///path", "http://h:99999/"])
def test_normalize_htu_refuses_urls_that_are_not_absolute(url: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - urlsplit's own messages vary
        normalize_htu(url)


def test_a_valid_proof_is_accepted_and_its_jti_recorded(
    verifier: DPoPVerifier, cache: MemoryReplayCache, key: SigningKey
) -> None:
    proof = make(key, claims={"jti": "jti-1"})
    result = check(verifier, proof, url=URL + "?stream=true")
    assert result == DPoPProof(
        jkt=thumbprint(key.public_jwk),
        jti="jti-1",
        iat=NOW,
        htm="POST",
        htu=URL,
        public_jwk=public_jwk(key.public_jwk),
    )
    assert len(cache) == 1
    assert not cache.add(f"{result.jkt}:jti-1", ttl=1, now=NOW)


def test_a_proof_with_ath_is_accepted(verifier: DPoPVerifier, key: SigningKey) -> None:
    assert check(verifier, make(key, token=TOKEN), token=TOKEN).jkt == key.kid


def test_sign_proof_makes_proofs_the_verifier_accepts(verifier: DPoPVerifier) -> None:
    jwk = generate_private_jwk("ES256")
    proof = sign_proof(jwk, method="GET", url=URL + "?q=1", access_token=TOKEN, now=NOW)
    parts = jws.parse(proof)
    assert parts.header == {"alg": "ES256", "typ": "dpop+jwt", "jwk": public_jwk(jwk)}
    assert jws.json_object(parts.payload)["htu"] == URL
    assert check(verifier, [proof], method="GET", token=TOKEN).jkt == thumbprint(jwk)


def test_raw_header_lists_are_accepted(verifier: DPoPVerifier, key: SigningKey) -> None:
    assert check(verifier, [" " + make(key) + " "]).htm == "POST"


@pytest.mark.parametrize("proof", [None, [], [""], "", "  "])
def test_a_missing_proof_is_refused(
    verifier: DPoPVerifier, cache: MemoryReplayCache, proof: Any
) -> None:
    rejected(verifier, cache, proof, "missing DPoP proof header")


def test_two_dpop_headers_are_refused(
    verifier: DPoPVerifier, cache: MemoryReplayCache, key: SigningKey
) -> None:
    rejected(verifier, cache, [make(key), make(key)], "more than one DPoP header")
    rejected(
        verifier,
        cache,
        f"{make(key)}, {make(key)}",
        "more than one DPoP proof in the DPoP header",
    )


def test_an_oversize_proof_is_refused(
    verifier: DPoPVerifier, cache: MemoryReplayCache, key: SigningKey
) -> None:
    rejected(verifier, cache, make(key, claims={"pad": "x" * 4096}), "DPoP proof is too large")


@pytest.mark.parametrize("proof", ["abc", "a.b", "a.b.c.d", "e30.e30.A", "e30.e30!.AA", "é.e30.AA"])
def test_garbled_proofs_are_refused(
    verifier: DPoPVerifier, cache: MemoryReplayCache, proof: str
) -> None:
    rejected(verifier, cache, proof, "DPoP proof is not a well-formed JWS")


@pytest.mark.parametrize("header", ["bm90IGpzb24", "WzFd", "", "bnVsbA"])
def test_the_header_must_be_a_json_object(
    verifier: DPoPVerifier, cache: MemoryReplayCache, header: str
) -> None:
    rejected(verifier, cache, f"{header}.e30.AA", "DPoP proof header is not a JSON object")


@pytest.mark.parametrize("typ", [None, "JWT", "at+jwt", "DPOP+JWT", 7])
def test_typ_must_be_dpop_jwt(
    verifier: DPoPVerifier, cache: MemoryReplayCache, key: SigningKey, typ: Any
) -> None:
    proof = make(key, drop=("typ",)) if typ is None else make(key, header={"typ": typ})
    rejected(verifier, cache, proof, "DPoP proof typ must be dpop+jwt")


def test_alg_none_is_refused(
    verifier: DPoPVerifier, cache: MemoryReplayCache, key: SigningKey
) -> None:
    header = {"typ": "dpop+jwt", "alg": "none", "jwk": key.public_jwk}
    claims = {"jti": "j", "htm": "POST", "htu": URL, "iat": NOW}
    forged = f"{b64json(header)}.{b64json(claims)}."
    rejected(verifier, cache, forged, "DPoP proof alg must be asymmetric (none and HMAC refused)")


def test_hmac_with_the_public_key_is_refused(
    verifier: DPoPVerifier, cache: MemoryReplayCache, key: SigningKey
) -> None:
    header = {"typ": "dpop+jwt", "alg": "HS256", "jwk": key.public_jwk}
    claims = {"jti": "j", "htm": "POST", "htu": URL, "iat": NOW}
    signing_input = f"{b64json(header)}.{b64json(claims)}"
    secret = key.public_jwk["x"].encode()
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{jws.b64url_encode(mac)}"
    rejected(verifier, cache, forged, "DPoP proof alg must be asymmetric (none and HMAC refused)")


def test_alg_must_be_allowed(verifier: DPoPVerifier, cache: MemoryReplayCache) -> None:
    key = SigningKey(generate_private_jwk())
    header = {"typ": "dpop+jwt", "alg": "RS256", "jwk": key.public_jwk}
    forged = f"{b64json(header)}.{b64json({})}.AAAA"
    rejected(verifier, cache, forged, "DPoP proof alg must be one of ES256, EdDSA")
    no_alg = f"{b64json({'typ': 'dpop+jwt', 'jwk': key.public_jwk})}.{b64json({})}.AAAA"
    rejected(verifier, cache, no_alg, "DPoP proof header has no alg")


def test_the_alg_allow_list_is_configurable(cache: MemoryReplayCache) -> None:
    verifier = DPoPVerifier(cache, algs=frozenset({"EdDSA"}))
    proof = make(SigningKey(generate_private_jwk("ES256")))
    rejected(verifier, cache, proof, "DPoP proof alg must be one of EdDSA")
    with pytest.raises(ValueError, match="subset"):
        DPoPVerifier(cache, algs=frozenset({"RS256"}))


@pytest.mark.parametrize("jwk", [None, "a-key", ["k"]])
def test_the_jwk_must_be_present(
    verifier: DPoPVerifier, cache: MemoryReplayCache, key: SigningKey, jwk: Any
) -> None:
    proof = make(key, drop=("jwk",)) if jwk is None else make(key, header={"jwk": jwk})
    rejected(verifier, cache, proof, "DPoP proof header has no jwk")


@pytest.mark.parametrize("member", ["d", "p", "k"])
def test_a_jwk_with_private_members_is_refused(
    verifier: DPoPVerifier, cache: MemoryReplayCache, member: str
) -> None:
    private = generate_private_jwk()
    key = SigningKey(private)
    leaked = {**key.public_jwk, member: private["d"]}
    rejected(
        verifier,
        cache,
        make(key, header={"jwk": leaked}),
        "DPoP proof jwk contains private key material",
    )


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
        {"kty": "OKP", "crv": "Ed448", "x": "A" * 57},
        {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"},
        {"kty": "OKP", "crv": "Ed25519", "x": 5},
        {"kty": "OKP", "crv": "Ed25519"},
        {"kty": "EC", "crv": "P-256", "x": "A" * 43},
        {"kty": "EC", "crv": "P-256", "x": "A" * 43, "y": "A" * 43},
        {"kty": "EC", "crv": "P-256", "x": "A" * 43, "y": "!" * 43},
        {},
    ],
)
def test_an_invalid_jwk_is_refused(
    verifier: DPoPVerifier, cache: MemoryReplayCache, key: SigningKey, jwk: dict[str, Any]
) -> None:
    rejected(
        verifier,
        cache,
        make(key, header={"jwk": jwk}),
        "DPoP proof jwk is not a valid Ed25519 or P-256 public key",
    )


def test_the_jwk_must_fit_the_alg(verifier: DPoPVerifier, cache: MemoryReplayCache) -> None:
    ed_key = SigningKey(generate_private_jwk("EdDSA"))
    p256 = load_private_key(generate_private_jwk("ES256"))
    header = {"alg": "ES256", "typ": "dpop+jwt", "jwk": ed_key.public_jwk}
    proof = jws.sign(p256, header, {"jti": "j", "htm": "POST", "htu": URL, "iat": NOW})
    rejected(verifier, cache, proof, "DPoP proof jwk does not match its alg")


def test_the_signature_must_be_by_the_jwk(
    verifier: DPoPVerifier, cache: MemoryReplayCache, key: SigningKey
) -> None:
    other = SigningKey(generate_private_jwk(key.alg))
    by_other = make(other, header={"jwk": key.public_jwk})
    rejected(verifier, cache, by_other, "DPoP proof signature is invalid")
    head, _, signature = make(key).split(".")
    changed = b64json({"jti": "j", "htm": "POST", "htu": URL, "iat": NOW})
    rejected(verifier, cache, f"{head}.{changed}.{signature}", "DPoP proof signature is invalid")
    rejected(verifier, cache, f"{head}.{changed}.", "DPoP proof signature is invalid")


def test_the_signed_payload_must_be_a_json_object(
    verifier: DPoPVerifier, cache: MemoryReplayCache
) -> None:
    jwk = generate_private_jwk()
    key = SigningKey(jwk)
    header = b64json({"alg": "EdDSA", "typ": "dpop+jwt", "jwk": key.public_jwk})
    for payload in (b"[]", b"nope", b""):
        signing_input = f"{header}.{jws.b64url_encode(payload)}"
        ed = Ed25519PrivateKey.from_private_bytes(jws.b64url_decode(jwk["d"]))
        signature = ed.sign(signing_input.encode())
        proof = f"{signing_input}.{jws.b64url_encode(signature)}"
        rejected(verifier, cache, proof, "DPoP proof payload is not a JSON object")


@pytest.mark.parametrize(
    ("changes", "drop", "message"),
    [
        ({}, ("jti",), "DPoP proof has no jti"),
        ({"jti": ""}, (), "DPoP proof has no jti"),
        ({"jti": 12}, (), "DPoP proof has no jti"),
        ({"jti": "j" * 257}, (), "DPoP proof jti is too long"),
        ({}, ("htm",), "DPoP proof has no htm"),
        ({"htm": ["POST"]}, (), "DPoP proof has no htm"),
        ({"htm": "GET"}, (), "DPoP proof htm does not match the request method"),
        ({"htm": "post"}, (), "DPoP proof htm does not match the request method"),
        ({}, ("htu",), "DPoP proof has no htu"),
        ({"htu": "/v1/chat/completions"}, (), "DPoP proof htu is not a valid URL"),
        ({"htu": "https://gw.test/v1/embeddings"}, (), MISMATCH),
        ({"htu": "https://evil.test/v1/chat/completions"}, (), MISMATCH),
        ({"htu": "http://gw.test/v1/chat/completions"}, (), MISMATCH),
        ({"htu": "https://gw.test:8443/v1/chat/completions"}, (), MISMATCH),
        ({"htu": "https://gw.test/v1/chat/completions/"}, (), MISMATCH),
        ({}, ("iat",), "DPoP proof has no iat"),
        ({"iat": "now"}, (), "DPoP proof has no iat"),
        ({"iat": True}, (), "DPoP proof has no iat"),
        ({"iat": NOW + 6}, (), "DPoP proof iat is in the future"),
        ({"iat": NOW - 61}, (), "DPoP proof is too old (iat over 60 s ago)"),
    ],
)
def test_claims_are_checked(
    verifier: DPoPVerifier,
    cache: MemoryReplayCache,
    key: SigningKey,
    changes: dict[str, Any],
    drop: tuple[str, ...],
    message: str,
) -> None:
    rejected(verifier, cache, make(key, claims=changes, drop=drop), message)


@pytest.mark.parametrize("iat", [NOW + 5, NOW - 60, NOW + 0.5])
def test_iat_limits_are_inclusive(verifier: DPoPVerifier, key: SigningKey, iat: float) -> None:
    assert check(verifier, make(key, claims={"iat": iat})).iat == iat


def test_htu_is_compared_after_normalizing_both_sides(
    verifier: DPoPVerifier, key: SigningKey
) -> None:
    proof = make(key, claims={"htu": "HTTPS://GW.TEST:443/v1/chat/completions"})
    assert check(verifier, proof, url="https://gw.test/v1/chat/completions?x=1").htu == URL


def test_ath_is_required_and_checked_with_a_token(
    verifier: DPoPVerifier, cache: MemoryReplayCache, key: SigningKey
) -> None:
    rejected(verifier, cache, make(key), "DPoP proof has no ath", token=TOKEN)
    rejected(verifier, cache, make(key, claims={"ath": 5}), "DPoP proof has no ath", token=TOKEN)
    wrong = make(key, token="another-token")
    rejected(verifier, cache, wrong, "DPoP proof ath does not match the access token", token=TOKEN)
    odd = make(key, claims={"ath": "äöü"})
    rejected(verifier, cache, odd, "DPoP proof ath does not match the access token", token=TOKEN)


def test_a_replayed_proof_is_refused(
    verifier: DPoPVerifier, cache: MemoryReplayCache, key: SigningKey
) -> None:
    proof = make(key)
    check(verifier, proof)
    rejected(verifier, cache, proof, "DPoP proof replayed")
    rejected(verifier, cache, proof, "DPoP proof replayed", now=NOW + 60)
    # Once the entry may expire (max_age + skew), the proof is too old to be accepted anyway.
    rejected(verifier, cache, proof, "DPoP proof is too old (iat over 60 s ago)", now=NOW + 65)


def test_the_replay_scope_is_the_key(verifier: DPoPVerifier) -> None:
    one, two = SigningKey(generate_private_jwk()), SigningKey(generate_private_jwk())
    check(verifier, make(one, claims={"jti": "same"}))
    check(verifier, make(two, claims={"jti": "same"}))


def test_a_refused_proof_does_not_burn_its_jti(
    verifier: DPoPVerifier, cache: MemoryReplayCache, key: SigningKey
) -> None:
    """An attacker who saw a jti cannot pre-empt the real proof with a garbage one."""
    rejected(
        verifier,
        cache,
        make(key, claims={"jti": "victim", "htm": "GET"}),
        "DPoP proof htm does not match the request method",
    )
    assert check(verifier, make(key, claims={"jti": "victim"})).jti == "victim"


def test_a_full_replay_cache_refuses_proofs(key: SigningKey) -> None:
    cache = MemoryReplayCache(max_entries=1)
    verifier = DPoPVerifier(cache)
    check(verifier, make(key))
    rejected(verifier, cache, make(key), "DPoP proof replayed")


def test_public_keys_are_cached(verifier: DPoPVerifier, key: SigningKey) -> None:
    for _ in range(3):
        check(verifier, make(key))
    info = verifier._keys.cache_info()
    assert (info.misses, info.hits) == (1, 2)


def test_check_binding(verifier: DPoPVerifier, key: SigningKey) -> None:
    proof = check(verifier, make(key))
    check_binding(proof, key.kid)
    with pytest.raises(InvalidDPoPProof) as info:
        check_binding(proof, thumbprint(generate_private_jwk()))
    assert info.value.message == "DPoP proof key does not match the token's cnf.jkt"


def test_signer_reports_its_thumbprint() -> None:
    jwk = generate_private_jwk()
    assert DPoPSigner(jwk).jkt == thumbprint(jwk)

"""Keys: generation, public parts, RFC 7638 thumbprints, key files (0600) and the issuer key."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import orjson
import pytest

from bastion.errors import ConfigError
from bastion.identity import jws
from bastion.identity.keys import (
    IssuerKey,
    SigningKey,
    generate_private_jwk,
    jwk_alg,
    load_private_key,
    load_public_key,
    public_jwk,
    read_private_jwk,
    thumbprint,
    write_private_jwk,
)

# RFC 7638 §3.1: the RSA key of RFC 7517 Appendix A.1 and its SHA-256 thumbprint.
RFC7638_KEY = {
    "kty": "RSA",
    "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc"
    "_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2"
    "QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6We"
    "Zu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_thumbprint_matches_the_rfc7638_example() -> None:
    assert thumbprint(RFC7638_KEY) == RFC7638_THUMBPRINT


def test_thumbprint_ignores_optional_members_and_private_ones() -> None:
    jwk = generate_private_jwk()
    assert thumbprint(jwk) == thumbprint(public_jwk(jwk))
    assert thumbprint({**public_jwk(jwk), "kid": "x", "use": "sig"}) == thumbprint(jwk)


@pytest.mark.parametrize(
    "jwk", [{}, {"kty": "OKP", "crv": "Ed25519"}, {"kty": "nope", "x": "a"}, {"kty": "EC", "x": 1}]
)
def test_thumbprint_of_an_incomplete_jwk_is_refused(jwk: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="JWK"):
        thumbprint(jwk)


@pytest.mark.parametrize(
    ("alg", "kty", "crv"), [("EdDSA", "OKP", "Ed25519"), ("ES256", "EC", "P-256")]
)
def test_generated_keys_have_the_expected_type_and_alg(alg: str, kty: str, crv: str) -> None:
    jwk = generate_private_jwk(alg)
    assert (jwk["kty"], jwk["crv"]) == (kty, crv)
    assert "d" in jwk
    assert jwk_alg(jwk) == alg
    assert "d" not in public_jwk(jwk)
    load_private_key(jwk)
    load_public_key(public_jwk(jwk))


def test_generate_refuses_other_algs() -> None:
    with pytest.raises(ValueError, match="EdDSA or ES256"):
        generate_private_jwk("RS256")


def test_public_jwk_keeps_only_public_members() -> None:
    jwk = {**generate_private_jwk("ES256"), "kid": "k", "use": "sig", "key_ops": ["sign"]}
    assert set(public_jwk(jwk)) == {"kty", "crv", "x", "y"}


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
        {"kty": "OKP", "crv": "X25519", "x": "A" * 43},
        {"kty": "EC", "crv": "P-384", "x": "A" * 64, "y": "A" * 64},
    ],
)
def test_only_ed25519_and_p256_are_supported(jwk: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="only Ed25519"):
        jwk_alg(jwk)
    with pytest.raises(ValueError, match="only Ed25519"):
        load_public_key(jwk)


def test_public_key_points_are_validated() -> None:
    good = public_jwk(generate_private_jwk("ES256"))
    with pytest.raises(ValueError, match="not a point on P-256"):
        load_public_key({**good, "x": jws.b64url_encode((1).to_bytes(32, "big")), "y": good["x"]})
    with pytest.raises(ValueError, match="wrong length"):
        load_public_key({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"})
    with pytest.raises(ValueError, match="base64url"):
        load_public_key({"kty": "OKP", "crv": "Ed25519", "x": "!" * 43})


def test_private_key_must_match_its_public_members() -> None:
    one, two = generate_private_jwk(), generate_private_jwk()
    with pytest.raises(ValueError, match="do not match"):
        load_private_key({**one, "x": two["x"]})


def test_private_jwk_file_is_0600_in_new_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "device.jwk"
    jwk = generate_private_jwk()
    old = os.umask(0)  # even with a permissive umask the file is never readable by others
    try:
        write_private_jwk(path, jwk)
    finally:
        os.umask(old)
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert read_private_jwk(path) == jwk
    assert [p.name for p in path.parent.iterdir()] == ["device.jwk"]  # no temp file left


def test_rewriting_replaces_the_key_and_keeps_0600(tmp_path: Path) -> None:
    path = tmp_path / "device.jwk"
    write_private_jwk(path, generate_private_jwk())
    path.chmod(0o644)
    second = generate_private_jwk()
    write_private_jwk(path, second)
    assert mode(path) == 0o600
    assert read_private_jwk(path) == second


def test_exclusive_write_never_replaces(tmp_path: Path) -> None:
    path = tmp_path / "device.jwk"
    first = generate_private_jwk()
    write_private_jwk(path, first, exclusive=True)
    with pytest.raises(FileExistsError):
        write_private_jwk(path, generate_private_jwk(), exclusive=True)
    assert read_private_jwk(path) == first
    assert [p.name for p in tmp_path.iterdir()] == ["device.jwk"]


@pytest.mark.parametrize("perm", [0o640, 0o604, 0o660, 0o602])
def test_a_key_file_others_can_access_is_refused(tmp_path: Path, perm: int) -> None:
    path = tmp_path / "device.jwk"
    write_private_jwk(path, generate_private_jwk())
    path.chmod(perm)
    with pytest.raises(ConfigError, match=r"accessible by group or others .*chmod 600") as info:
        read_private_jwk(path)
    assert str(path) in info.value.message
    assert '"d"' not in info.value.message


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "not a JWK"),
        (b'{"kty": "OKP", "crv": "Ed25519", "x": 1}', "not a JWK"),
        (b'{"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}', "holds a public key"),
        (b'{"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "d": "AAAA"}', "not a usable private"),
    ],
)
def test_unusable_key_files_are_refused_with_the_reason(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "device.jwk"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match=problem):
        read_private_jwk(path)


def test_signing_key_never_shows_its_private_part() -> None:
    jwk = generate_private_jwk()
    key = SigningKey(jwk)
    assert jwk["d"] not in repr(key)
    assert key.kid == thumbprint(jwk)
    with pytest.raises(ValueError, match="signs with EdDSA"):
        key.sign({"alg": "HS256"}, {})


def test_issuer_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "state" / "issuer.jwk"
    first = IssuerKey.load_or_create(path)
    assert mode(path) == 0o600
    again = IssuerKey.load_or_create(path)
    assert again.kid == first.kid
    assert first.kid == thumbprint(orjson.loads(path.read_bytes()))


def test_issuer_key_refuses_a_p256_key_file(tmp_path: Path) -> None:
    path = tmp_path / "issuer.jwk"
    write_private_jwk(path, generate_private_jwk("ES256"))
    with pytest.raises(ConfigError, match="must be an Ed25519 key"):
        IssuerKey.load_or_create(path)


def test_issuer_key_refuses_a_world_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "issuer.jwk"
    IssuerKey.load_or_create(path)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        IssuerKey.load_or_create(path)


def test_issuer_key_signs_jwts_its_verify_key_accepts() -> None:
    key = IssuerKey.generate()
    token = key.sign_jwt({"typ": "at+jwt"}, {"sub": "alice"})
    parts = jws.parse(token)
    assert parts.header == {"alg": "EdDSA", "typ": "at+jwt", "kid": key.kid}
    assert jws.verify(key.verify_key, "EdDSA", parts.signing_input, parts.signature)
    assert jws.json_object(parts.payload) == {"sub": "alice"}


def test_jwks_publishes_only_the_public_key() -> None:
    key = IssuerKey.generate()
    (published,) = key.jwks()["keys"]
    assert published == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": published["x"],
        "kid": key.kid,
        "alg": "EdDSA",
        "use": "sig",
    }
    assert thumbprint(published) == key.kid
    assert "IssuerKey(kid=" in repr(key)

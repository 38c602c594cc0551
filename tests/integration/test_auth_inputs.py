"""Hostile credentials at the gateway and the token endpoint: each gets its specific error, and
nothing changes (no request reaches the upstream, no token is issued, the replay cache keeps
only what it had)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from bastion.identity.assertions import ASSERTION_TYPE, make_client_assertion
from bastion.identity.dpop import sign_proof
from bastion.identity.keys import SigningKey, generate_private_jwk, public_jwk
from bastion.store import events as event_rows
from bastion.testing import BASE_URL, Harness

pytestmark = pytest.mark.anyio
CHAT = BASE_URL + "/v1/chat/completions"
TOKEN = BASE_URL + "/oauth/token"
BODY = {"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jws(header: dict[str, Any], claims: dict[str, Any], sign: Any) -> str:
    signing_input = f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(claims))}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


@dataclass
class Login:
    private: dict[str, str]
    access: str
    refresh: str


async def login(harness: Harness, principal: str = "alice") -> Login:
    profile = await harness.enroll(principal)
    return await grant(harness, profile.private_jwk, principal)


async def grant(harness: Harness, private: dict[str, str], principal: str) -> Login:
    assertion = make_client_assertion(private, client_id=principal, audience=TOKEN)
    async with harness.client() as client:
        response = await client.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion,
            },
            headers={"DPoP": sign_proof(private, method="POST", url=TOKEN)},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "DPoP"
    assert body["expires_in"] <= 900
    return Login(private, body["access_token"], body["refresh_token"])


async def call(
    harness: Harness, authorization: str | None, proof: str | None, **extra: Any
) -> httpx.Response:
    headers = {}
    if authorization is not None:
        headers["Authorization"] = authorization
    if proof is not None:
        headers["DPoP"] = proof
    async with harness.client() as client:
        response = await client.post(CHAT, json=BODY, headers=headers, **extra)
    # Whatever happened, the response echoes no credential it was sent.
    echoed = response.text + " ".join(response.headers.values())
    for secret in (authorization, proof):
        if secret:
            assert secret.removeprefix("DPoP ").removeprefix("Bearer ") not in echoed
    return response


def good_proof(who: Login, **overrides: Any) -> str:
    args: dict[str, Any] = {"method": "POST", "url": CHAT, "access_token": who.access}
    args.update(overrides)
    return sign_proof(who.private, **args)


async def allowed_count(harness: Harness) -> int:
    await harness.services.recorder.flush()
    with harness.services.store.read() as conn:
        rows = event_rows.last(conn, 10_000, "request.")
    return sum(1 for row in rows if orjson.loads(row.body)["allowed"])


def assert_refused(response: httpx.Response, error: str, description: str) -> None:
    assert response.status_code == 401, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith(f'DPoP error="{error}"'), challenge
    assert description in challenge, challenge
    assert description in response.json()["error"]["message"]


async def test_good_request_is_allowed(harness: Harness) -> None:
    who = await login(harness)
    response = await call(harness, f"DPoP {who.access}", good_proof(who))
    assert response.status_code == 200


async def test_missing_and_garbled_tokens(harness: Harness) -> None:
    who = await login(harness)
    before = await allowed_count(harness)
    assert_refused(await call(harness, None, None), "invalid_token", "missing Authorization")
    garbled = await call(harness, "DPoP not.a.token", good_proof(who, access_token="not.a.token"))
    assert garbled.status_code == 401
    assert garbled.headers["www-authenticate"].startswith('DPoP error="invalid_token"')
    assert_refused(await call(harness, "Basic abc", None), "invalid_token", "scheme")
    assert await allowed_count(harness) == before


async def test_bearer_presentation_of_a_dpop_token_is_refused(harness: Harness) -> None:
    who = await login(harness)
    response = await call(harness, f"Bearer {who.access}", None)
    assert_refused(response, "invalid_token", "Bearer tokens are not accepted")


async def test_forged_tokens(harness: Harness) -> None:
    who = await login(harness)
    _header, claims, _sig = who.access.split(".")
    real_claims = orjson.loads(base64.urlsafe_b64decode(claims + "=="))
    issuer_public = public_jwk(harness.services.issuer.jwks()["keys"][0])

    def attempt(token: str) -> tuple[str, str]:
        return f"DPoP {token}", good_proof(who, access_token=token)

    alg_none = f"{b64(orjson.dumps({'alg': 'none', 'typ': 'at+jwt'}))}.{claims}."
    response = await call(harness, *attempt(alg_none))
    assert response.status_code == 401
    assert "alg" in response.headers["www-authenticate"]

    # HS256 "signed" with the issuer's public key as the HMAC secret (key confusion).
    secret = orjson.dumps(issuer_public)
    hs256 = jws(
        {"alg": "HS256", "typ": "at+jwt", "kid": harness.services.issuer.kid},
        real_claims,
        lambda data: hmac.new(secret, data, hashlib.sha256).digest(),
    )
    response = await call(harness, *attempt(hs256))
    assert response.status_code == 401
    assert "alg" in response.headers["www-authenticate"]

    # Correctly signed by a key that is not the issuer's.
    rogue = SigningKey(generate_private_jwk())
    forged = rogue.sign(
        {"alg": "EdDSA", "typ": "at+jwt", "kid": harness.services.issuer.kid}, real_claims
    )
    response = await call(harness, *attempt(forged))
    assert response.status_code == 401
    assert "signature" in response.headers["www-authenticate"]


def reissue(harness: Harness, **claim_overrides: Any) -> Any:
    """A token signed by the real issuer key with some claims changed."""

    def make(who: Login, header: dict[str, Any] | None = None) -> str:
        claims = orjson.loads(base64.urlsafe_b64decode(who.access.split(".")[1] + "=="))
        claims.update(claim_overrides)
        head = header or {"alg": "EdDSA", "typ": "at+jwt", "kid": harness.services.issuer.kid}
        return harness.services.issuer.sign_jwt(head, claims)

    return make


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"exp": int(time.time()) - 120}, "expired"),
        ({"aud": "https://elsewhere.example"}, "aud"),
        ({"iss": "https://evil.example"}, "iss"),
    ],
)
async def test_tokens_with_wrong_claims(
    harness: Harness, overrides: dict[str, Any], needle: str
) -> None:
    who = await login(harness)
    token = reissue(harness, **overrides)(who)
    response = await call(harness, f"DPoP {token}", good_proof(who, access_token=token))
    assert_refused(response, "invalid_token", needle)


async def test_token_with_wrong_typ(harness: Harness) -> None:
    who = await login(harness)
    header = {"alg": "EdDSA", "typ": "JWT", "kid": harness.services.issuer.kid}
    token = reissue(harness)(who, header)
    response = await call(harness, f"DPoP {token}", good_proof(who, access_token=token))
    assert_refused(response, "invalid_token", "typ")


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"method": "GET"}, "htm"),
        ({"url": BASE_URL + "/v1/embeddings"}, "htu"),
        ({"now": time.time() - 3600}, "iat"),
        ({"access_token": "some-other-token"}, "ath"),
    ],
)
async def test_bad_proofs(harness: Harness, overrides: dict[str, Any], needle: str) -> None:
    who = await login(harness)
    before = await allowed_count(harness)
    response = await call(harness, f"DPoP {who.access}", good_proof(who, **overrides))
    assert_refused(response, "invalid_dpop_proof", needle)
    assert await allowed_count(harness) == before


async def test_replayed_proof_is_refused(harness: Harness) -> None:
    who = await login(harness)
    proof = good_proof(who)
    assert (await call(harness, f"DPoP {who.access}", proof)).status_code == 200
    assert_refused(await call(harness, f"DPoP {who.access}", proof), "invalid_dpop_proof", "replay")


async def test_proof_with_private_key_in_jwk(harness: Harness) -> None:
    who = await login(harness)
    key = SigningKey(who.private)
    claims = {"jti": "x1", "htm": "POST", "htu": CHAT, "iat": int(time.time())}
    proof = key.sign({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": who.private}, claims)
    assert_refused(
        await call(harness, f"DPoP {who.access}", proof), "invalid_dpop_proof", "private"
    )


async def test_proof_key_not_matching_cnf_jkt(harness: Harness) -> None:
    who = await login(harness)
    other = generate_private_jwk()
    proof = sign_proof(other, method="POST", url=CHAT, access_token=who.access)
    response = await call(harness, f"DPoP {who.access}", proof)
    assert response.status_code == 401
    assert "cnf.jkt" in response.headers["www-authenticate"]


async def test_two_dpop_headers_refused(harness: Harness) -> None:
    who = await login(harness)
    async with harness.client() as client:
        response = await client.post(
            CHAT,
            json=BODY,
            headers=[
                ("Authorization", f"DPoP {who.access}"),
                ("DPoP", good_proof(who)),
                ("DPoP", good_proof(who)),
            ],
        )
    assert response.status_code == 401
    assert "invalid_dpop_proof" in response.headers["www-authenticate"]


async def test_refresh_rotation_and_reuse_revokes_family(harness: Harness) -> None:
    who = await login(harness)

    async def refresh(token: str) -> httpx.Response:
        async with harness.client() as client:
            return await client.post(
                "/oauth/token",
                data={"grant_type": "refresh_token", "refresh_token": token},
                headers={"DPoP": sign_proof(who.private, method="POST", url=TOKEN)},
            )

    first = await refresh(who.refresh)
    assert first.status_code == 200
    rotated = first.json()
    assert rotated["refresh_token"] != who.refresh
    fresh = Login(who.private, rotated["access_token"], rotated["refresh_token"])
    assert (await call(harness, f"DPoP {fresh.access}", good_proof(fresh))).status_code == 200

    reuse = await refresh(who.refresh)  # the rotated-out token, as a thief would replay it
    assert reuse.status_code == 400
    assert reuse.json()["error"] == "invalid_grant"
    assert "revoked" in reuse.json()["error_description"]

    # Every token of the family is dead: the new access token, the old one, the new refresh token.
    for token in (fresh.access, who.access):
        denied = await call(harness, f"DPoP {token}", good_proof(Login(who.private, token, "")))
        assert denied.status_code == 403
        assert denied.json()["error"]["reasons"] == ["locked_family"]
    assert (await refresh(fresh.refresh)).status_code == 400
    # A fresh login on the same device starts a new family and works.
    again = await grant(harness, who.private, "alice")
    assert (await call(harness, f"DPoP {again.access}", good_proof(again))).status_code == 200


async def test_refresh_with_another_key_is_refused(harness: Harness) -> None:
    who = await login(harness)
    thief = generate_private_jwk()
    async with harness.client() as client:
        response = await client.post(
            "/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": who.refresh},
            headers={"DPoP": sign_proof(thief, method="POST", url=TOKEN)},
        )
    assert response.status_code == 400
    assert "another device key" in response.json()["error_description"]
    # a refresh token presented without its device key is theft: the family is revoked
    denied = await call(harness, f"DPoP {who.access}", good_proof(who))
    assert denied.status_code == 403
    assert denied.json()["error"]["reasons"] == ["locked_family"]


async def test_refused_grants_are_audited(harness: Harness) -> None:
    stranger = generate_private_jwk()
    assertion = make_client_assertion(stranger, client_id="alice", audience=TOKEN)
    async with harness.client() as client:
        await client.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion,
            },
            headers={"DPoP": sign_proof(stranger, method="POST", url=TOKEN)},
        )
        await client.post(
            "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": "nope"}
        )
    await harness.services.recorder.flush()
    with harness.services.store.read() as conn:
        refused = [orjson.loads(r.body) for r in event_rows.last(conn, 100, "token.refused")]
    assert [e["error"] for e in refused] == ["invalid_client", "invalid_dpop_proof"]
    assert all(e["grant_type"] for e in refused)
    assert assertion not in str(refused)


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({}, "invalid_request"),
        ({"grant_type": "password"}, "unsupported_grant_type"),
        ({"grant_type": "client_credentials"}, "invalid_client"),
        (
            {
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": "garbage",
            },
            "invalid_client",
        ),
        ({"grant_type": "refresh_token"}, "invalid_request"),
        ({"grant_type": "refresh_token", "refresh_token": "nope"}, "invalid_grant"),
    ],
)
async def test_token_endpoint_bad_forms(harness: Harness, form: dict[str, str], error: str) -> None:
    private = (await harness.enroll("alice")).private_jwk
    async with harness.client() as client:
        response = await client.post(
            "/oauth/token",
            data=form,
            headers={"DPoP": sign_proof(private, method="POST", url=TOKEN)},
        )
    assert response.status_code in (400, 401)
    assert response.json()["error"] == error
    assert response.headers["cache-control"] == "no-store"


async def test_token_endpoint_needs_a_proof_by_the_assertion_key(harness: Harness) -> None:
    private = (await harness.enroll("alice")).private_jwk
    assertion = make_client_assertion(private, client_id="alice", audience=TOKEN)
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    async with harness.client() as client:
        no_proof = await client.post("/oauth/token", data=form)
        other = generate_private_jwk()
        wrong_key = await client.post(
            "/oauth/token",
            data={
                **form,
                "client_assertion": make_client_assertion(
                    private, client_id="alice", audience=TOKEN
                ),
            },
            headers={"DPoP": sign_proof(other, method="POST", url=TOKEN)},
        )
    assert no_proof.status_code == 400
    assert no_proof.json()["error"] == "invalid_dpop_proof"
    assert wrong_key.status_code == 401
    assert "DPoP proof must be signed" in wrong_key.json()["error_description"]


async def test_unenrolled_key_and_locked_principal_get_no_token(harness: Harness) -> None:
    stranger = generate_private_jwk()
    assertion = make_client_assertion(stranger, client_id="alice", audience=TOKEN)
    async with harness.client() as client:
        response = await client.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion,
            },
            headers={"DPoP": sign_proof(stranger, method="POST", url=TOKEN)},
        )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"

"""Token exchange (RFC 8693) of OIDC id tokens from configured identity providers, and
delegation (``act``): a vendor acting under its sponsor's grant never reaches further than the
vendor's own boundary allows.

One provider's keys are served over real HTTP on loopback (``jwks_uri``), the other's from a file
(``jwks_file``). Every refusal is a specific OAuth error that issues nothing.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest
import sqlalchemy as sa
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from bastion.client.profile import Profile
from bastion.client.sdk import SDKDPoPAuth
from bastion.config.federation import ExternalIssuer
from bastion.identity.dpop import DPoPSigner
from bastion.identity.federation import FederationVerifier, JWKSCache
from bastion.identity.jws import b64url_encode
from bastion.identity.keys import SigningKey
from bastion.store.tables import audit_events, token_families
from bastion.testing import BASE_URL, Harness, running
from tests.conftest import CONFIG

pytestmark = pytest.mark.anyio
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"


class JWKSServer:
    """A real HTTP server on loopback serving a JWKS that the test can swap."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.hits = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits += 1
                body = json.dumps(server.document).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_port}/jwks"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )  # shutdown() waits up to one poll_interval (0.5 s by default)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class IdP:
    """A signing key of an identity provider and a way to mint id tokens."""

    def __init__(self, issuer: str, kid: str, alg: str = "ES256") -> None:
        self.issuer, self.kid, self.alg = issuer, kid, alg
        self.key: Any = ECKey.generate_key("P-256") if alg == "ES256" else RSAKey.generate_key(2048)

    def jwk(self) -> dict[str, Any]:
        return {**self.key.as_dict(private=False), "kid": self.kid, "alg": self.alg, "use": "sig"}

    def token(self, sub: str, **overrides: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": sub,
            "aud": "bastion",
            "iat": now,
            "exp": now + 300,
            "preferred_username": sub,
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode({"alg": self.alg, "kid": self.kid}, claims, self.key)


@pytest.fixture
def jwks_server() -> Iterator[JWKSServer]:
    server = JWKSServer()
    yield server
    server.close()


@pytest.fixture
def corp(jwks_server: JWKSServer) -> IdP:
    idp = IdP("https://login.corp.example", "corp-1", "RS256")
    jwks_server.document = {"keys": [idp.jwk()]}
    return idp


@pytest.fixture
def acme() -> IdP:
    return IdP("https://sso.acme.example", "acme-1")


def federated_config(jwks_url: str, acme_jwks: Path) -> str:
    config = (
        CONFIG.replace(
            "    contract: {start",
            "    ceiling: internal\n    contract: {start",
        )
        .replace(
            "compartments:\n",
            "compartments:\n  secret:\n    level: restricted\n"
            "    grants:\n      principals: [alice]\n",
        )
        .replace(
            "models:\n",
            "models:\n  - name: secret-chat\n    upstream: example-openai\n"
            "    compartment: secret\n",
        )
    )
    return (
        config
        + f"""federation:
  issuers:
    corp:
      issuer: https://login.corp.example
      audience: bastion
      jwks_uri: {jwks_url}
      orgs: [lab]
      principal_claim: preferred_username
      algorithms: [RS256]
    acme-sso:
      issuer: https://sso.acme.example
      audience: bastion
      jwks_file: {acme_jwks}
      orgs: [acme]
      principal_claim: preferred_username
"""
    )


@pytest.fixture
async def fed(
    tmp_path: Path,
    jwks_server: JWKSServer,
    corp: IdP,
    acme: IdP,
    upstream_env: dict[str, str],
    upstream_transport: httpx2.ASGITransport,
    database_url: str,
) -> AsyncIterator[Harness]:
    acme_jwks = tmp_path / "acme-jwks.json"
    acme_jwks.write_text(json.dumps({"keys": [acme.jwk()]}), encoding="utf-8")
    async with running(
        federated_config(jwks_server.url, acme_jwks),
        tmp_path,
        upstream=upstream_transport,
        env=upstream_env,
        database_url=database_url,
    ) as harness:
        for name in ("alice", "bob", "victor"):
            await harness.enroll(name)
        yield harness


def _signer(profile: Profile) -> DPoPSigner:
    return DPoPSigner(SigningKey(profile.private_jwk))


async def exchange(harness: Harness, profile: Profile, **form: str) -> httpx.Response:
    proof = _signer(profile).proof(method="POST", url=BASE_URL + "/oauth/token", now=time.time())
    async with harness.client() as client:
        response = await client.post(
            "/oauth/token", data={"grant_type": EXCHANGE, **form}, headers={"DPoP": proof}
        )
    return response


async def chat(harness: Harness, profile: Profile, token: str, model: str) -> Any:
    url = BASE_URL + "/v1/chat/completions"
    proof = _signer(profile).proof(method="POST", url=url, access_token=token, now=time.time())
    async with harness.client() as client:
        return await client.post(
            "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"DPoP {token}", "DPoP": proof},
        )


def subject(token: str) -> dict[str, str]:
    return {"subject_token": token, "subject_token_type": ID_TOKEN}


def actor(token: str) -> dict[str, str]:
    return {"actor_token": token, "actor_token_type": ID_TOKEN}


def families(harness: Harness) -> int:
    with harness.services.store.begin() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(token_families)).scalar())


async def event_bodies(harness: Harness, name: str) -> list[dict[str, Any]]:
    await harness.services.recorder.flush()
    with harness.services.store.begin() as conn:
        rows = conn.execute(sa.select(audit_events.c.body).where(audit_events.c.name == name))
        return [json.loads(row.body) for row in rows]


async def test_an_id_token_and_an_enrolled_key_get_a_dpop_token(fed: Harness, corp: IdP) -> None:
    alice = fed.profiles["alice"]
    response = await exchange(fed, alice, **subject(corp.token("alice", amr=["pwd", "mfa"])))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "DPoP"
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert "refresh_token" not in body  # exchange a fresh id token instead
    claims = fed.services.tokens._codec.verify(body["access_token"], time.time())
    assert claims.sub == "alice"
    assert claims.act == ()
    assert claims.auth_time is not None
    assert "mfa" in claims.amr
    reply = await chat(fed, alice, body["access_token"], "demo-chat")
    assert reply.status_code == 200, reply.text
    (issued,) = await event_bodies(fed, "token.exchanged")
    assert issued["principal"] == "alice"
    assert issued["reason"] == "id token from corp"


async def test_without_mfa_at_the_provider_the_token_carries_no_auth_time(
    fed: Harness, corp: IdP
) -> None:
    response = await exchange(fed, fed.profiles["alice"], **subject(corp.token("alice")))
    claims = fed.services.tokens._codec.verify(response.json()["access_token"], time.time())
    assert claims.auth_time is None
    assert claims.amr == ("pop",)


def _bad_tokens(corp: IdP, acme: IdP) -> dict[str, tuple[dict[str, str], str, str]]:
    stranger = IdP("https://login.corp.example", "corp-1", "RS256")  # same kid, other key
    now = int(time.time())
    unsigned = (
        ".".join(
            b64url_encode(json.dumps(part).encode())
            for part in ({"alg": "none"}, {"iss": corp.issuer, "sub": "alice", "aud": "bastion"})
        )
        + "."
    )
    return {
        "no subject": ({}, "invalid_request", "missing subject_token"),
        "wrong type": (
            {"subject_token": corp.token("alice"), "subject_token_type": "urn:x"},
            "invalid_request",
            "subject_token_type must be",
        ),
        "garbage": (subject("not-a-jwt"), "invalid_grant", "not a signed JWT"),
        "unknown issuer": (
            subject(IdP("https://evil.example", "e").token("alice")),
            "invalid_grant",
            "not a configured federation issuer",
        ),
        "forged": (subject(stranger.token("alice")), "invalid_grant", "does not verify"),
        "alg none": (subject(unsigned), "invalid_grant", "does not verify"),
        "wrong aud": (subject(corp.token("alice", aud="other")), "invalid_grant", "aud"),
        "expired": (
            subject(corp.token("alice", iat=now - 400, exp=now - 100)),
            "invalid_grant",
            "expired",
        ),
        "too old": (
            subject(corp.token("alice", iat=now - 3600, exp=now + 3600)),
            "invalid_grant",
            "too old",
        ),
        "future": (subject(corp.token("alice", iat=now + 600)), "invalid_grant", "future"),
        "nonce": (
            {**subject(corp.token("alice", nonce="n-1")), "nonce": "n-2"},
            "invalid_grant",
            "nonce",
        ),
        "no principal claim": (
            subject(corp.token("alice", preferred_username=None)),
            "invalid_grant",
            "preferred_username",
        ),
        "unknown principal": (subject(corp.token("mallory")), "invalid_grant", "no enabled"),
        "vendor idp vouching for staff": (
            subject(acme.token("alice")),
            "invalid_grant",
            "may not vouch",
        ),
        "requested type": (
            {**subject(corp.token("alice")), "requested_token_type": "urn:x:refresh"},
            "invalid_request",
            "requested_token_type",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "no subject",
        "wrong type",
        "garbage",
        "unknown issuer",
        "forged",
        "alg none",
        "wrong aud",
        "expired",
        "too old",
        "future",
        "nonce",
        "no principal claim",
        "unknown principal",
        "vendor idp vouching for staff",
        "requested type",
    ],
)
async def test_bad_exchanges_are_refused_and_issue_nothing(
    fed: Harness, corp: IdP, acme: IdP, case: str
) -> None:
    form, error, words = _bad_tokens(corp, acme)[case]
    before = families(fed)
    response = await exchange(fed, fed.profiles["alice"], **form)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == error
    assert words in response.json()["error_description"]
    assert families(fed) == before
    assert "eyJ" not in response.text  # the token is never echoed
    refused = await event_bodies(fed, "token.refused")
    assert refused
    assert refused[-1]["error"] == error


async def test_the_device_key_must_be_enrolled_for_the_principal(fed: Harness, corp: IdP) -> None:
    response = await exchange(fed, fed.profiles["bob"], **subject(corp.token("alice")))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert "device key" in response.json()["error_description"]


async def test_a_vendor_acting_for_its_sponsor_is_held_to_its_own_boundary(
    fed: Harness, corp: IdP, acme: IdP
) -> None:
    victor = fed.profiles["victor"]
    form = {**subject(corp.token("alice")), **actor(acme.token("victor"))}
    response = await exchange(fed, victor, **form)
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    claims = fed.services.tokens._codec.verify(token, time.time())
    assert claims.sub == "alice"
    assert claims.act == ("victor",)

    # alice's grant, within victor's ceiling (internal): allowed, and the audit event says who.
    reply = await chat(fed, victor, token, "demo-chat")
    assert reply.status_code == 200, reply.text
    decided = [e for e in await event_bodies(fed, "request.decided") if e["allowed"]]
    assert decided[-1]["principal"] == "alice"
    assert decided[-1]["act"] == ["victor"]

    # alice's own grant to a restricted compartment does not lift victor's ceiling.
    reply = await chat(fed, victor, token, "secret-chat")
    assert reply.status_code == 403
    assert reply.json()["error"]["reasons"] == ["above_vendor_ceiling"]

    # Locking the actor stops the delegated token, though alice herself is not locked.
    fed.services.locks.lock("principal", "victor", reason="test", author="test")
    await fed.reload()
    reply = await chat(fed, victor, token, "demo-chat")
    assert reply.status_code == 403
    assert reply.json()["error"]["reasons"] == ["locked_principal"]


@pytest.mark.parametrize(
    ("subject_name", "actor_idp", "actor_name", "key", "words"),
    [
        ("bob", "acme", "victor", "victor", "may act only under their org's sponsor"),
        ("alice", "corp", "bob", "bob", "may act only under their org's sponsor"),
        ("alice", "acme", "victor", "alice", "device key"),
    ],
)
async def test_delegation_is_narrow(
    fed: Harness,
    corp: IdP,
    acme: IdP,
    subject_name: str,
    actor_idp: str,
    actor_name: str,
    key: str,
    words: str,
) -> None:
    actor_token = (acme if actor_idp == "acme" else corp).token(actor_name)
    form = {**subject(corp.token(subject_name)), **actor(actor_token)}
    response = await exchange(fed, fed.profiles[key], **form)
    assert response.status_code == 400, response.text
    assert words in response.json()["error_description"]


async def test_exchange_is_refused_when_no_issuer_is_configured(
    harness: Harness, corp: IdP
) -> None:
    profile = await harness.enroll("alice")
    response = await exchange(harness, profile, **subject(corp.token("alice")))
    assert response.status_code == 400
    assert "not enabled" in response.json()["error_description"]


async def test_rotated_provider_keys_are_fetched_again(jwks_server: JWKSServer, corp: IdP) -> None:
    issuer = ExternalIssuer(
        issuer=corp.issuer,
        audience="bastion",
        jwks_uri=jwks_server.url,
        orgs=("lab",),
        algorithms=("RS256",),
    )
    verifier = FederationVerifier(JWKSCache(min_refetch=0.0))
    first = await verifier.verify(
        corp.token("alice"), {"corp": issuer}, nonce=None, now=time.time()
    )
    assert first.principal == "alice"
    assert jwks_server.hits == 1
    rotated = IdP(corp.issuer, "corp-2", "RS256")
    jwks_server.document = {"keys": [corp.jwk(), rotated.jwk()]}
    second = await verifier.verify(
        rotated.token("bob"), {"corp": issuer}, nonce=None, now=time.time()
    )
    assert second.principal == "bob"
    assert jwks_server.hits == 2


async def test_the_official_sdk_uses_token_exchange_through_the_client_helper(
    fed: Harness, corp: IdP, acme: IdP
) -> None:
    auth = SDKDPoPAuth(
        fed.profiles["victor"],
        id_token=lambda: corp.token("alice"),
        actor_token=lambda: acme.token("victor"),
    )
    http = httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=fed.app), base_url=BASE_URL, auth=auth
    )
    async with http:
        sdk = openai.AsyncOpenAI(base_url=BASE_URL + "/v1", api_key="unused", http_client=http)
        reply = await sdk.chat.completions.create(
            model="demo-chat", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content
        with pytest.raises(openai.PermissionDeniedError) as denied:
            await sdk.chat.completions.create(
                model="secret-chat", messages=[{"role": "user", "content": "hi"}]
            )
    assert "above_vendor_ceiling" in str(denied.value)
    (exchanged,) = await event_bodies(fed, "token.exchanged")
    assert exchanged["act"] == ["victor"]

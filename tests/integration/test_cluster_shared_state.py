"""Cluster mode, shared state: two Bastion apps on one PostgreSQL and one Redis behave as one
gateway for DPoP replay, quotas and throttle locks; with Redis gone, proofs are refused (503)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import httpx2
import pytest
import redis.asyncio as aioredis

from bastion.console.attempts import BURST
from bastion.identity.assertions import ASSERTION_TYPE, make_client_assertion
from bastion.identity.dpop import sign_proof
from bastion.testing import BASE_URL, Harness, running
from tests.conftest import CONFIG, _postgres_schema_url
from tests.integration.console.conftest import Browser

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]
REDIS_URL = "redis://127.0.0.1:6379/0"
DEAD_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
TOKEN = BASE_URL + "/oauth/token"
CHAT = BASE_URL + "/v1/chat/completions"
BODY = {"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]}
LIMITED = CONFIG.replace(
    """    grants:
      orgs: [lab]
""",
    """    grants:
      orgs: [lab]
    quotas:
      principal: {requests_per_minute: 3}
""",
    1,
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from _postgres_schema_url()


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """This test's own Redis namespace; its keys are deleted afterwards (only its keys)."""
    name = "t" + secrets.token_hex(6)
    yield name
    client = aioredis.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(match=f"{name}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@contextlib.asynccontextmanager
async def gateways(
    config: str,
    tmp: Path,
    postgres_url: str,
    prefix: str,
    upstream: httpx2.AsyncBaseTransport,
    env: dict[str, str],
    redis_urls: tuple[str, ...] = (REDIS_URL, REDIS_URL),
) -> AsyncIterator[list[Harness]]:
    """One app per Redis URL, on one database and one state directory (one issuer key)."""
    async with contextlib.AsyncExitStack() as stack:
        apps = [
            await stack.enter_async_context(
                running(
                    config,
                    tmp,
                    upstream=upstream,
                    env=env,
                    database_url=postgres_url,
                    redis_url=url,
                    redis_prefix=prefix,
                )
            )
            for url in redis_urls
        ]
        yield apps


async def enroll_everywhere(apps: list[Harness], principal: str) -> dict[str, str]:
    profile = await apps[0].enroll(principal)
    for app in apps[1:]:
        await app.reload()
    return profile.private_jwk


async def login(app: Harness, private: dict[str, str], principal: str) -> str:
    assertion = make_client_assertion(private, client_id=principal, audience=TOKEN)
    async with app.client() as client:
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
    return str(response.json()["access_token"])


async def chat(app: Harness, access: str, proof: str) -> httpx.Response:
    async with app.client() as client:
        return await client.post(
            "/v1/chat/completions",
            json=BODY,
            headers={"Authorization": f"DPoP {access}", "DPoP": proof},
        )


async def test_a_proof_is_accepted_once_whichever_gateway_it_reaches(
    tmp_path: Path,
    postgres_url: str,
    prefix: str,
    upstream_transport: httpx2.ASGITransport,
    upstream_env: dict[str, str],
) -> None:
    async with gateways(
        CONFIG, tmp_path, postgres_url, prefix, upstream_transport, upstream_env
    ) as apps:
        private = await enroll_everywhere(apps, "alice")
        access = await login(apps[0], private, "alice")
        proof = sign_proof(private, method="POST", url=CHAT, access_token=access)
        first = await chat(apps[0], access, proof)
        second = await chat(apps[1], access, proof)
        assert first.status_code == 200, first.text
        assert second.status_code == 401
        assert "DPoP proof replayed" in second.headers["www-authenticate"]
        fresh = sign_proof(private, method="POST", url=CHAT, access_token=access)
        assert (await chat(apps[1], access, fresh)).status_code == 200  # the token works there

        # the token endpoint shares the cache too: one token request proof, one token
        assertion = make_client_assertion(private, client_id="alice", audience=TOKEN)
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        }
        token_proof = sign_proof(private, method="POST", url=TOKEN)
        answers = []
        for app in apps:
            async with app.client() as client:
                answers.append(
                    await client.post("/oauth/token", data=form, headers={"DPoP": token_proof})
                )
        assert answers[0].status_code == 200, answers[0].text
        assert answers[1].status_code == 400
        assert answers[1].json()["error"] == "invalid_dpop_proof"


async def test_a_quota_of_n_a_minute_allows_exactly_n_across_gateways(
    tmp_path: Path,
    postgres_url: str,
    prefix: str,
    upstream_transport: httpx2.ASGITransport,
    upstream_env: dict[str, str],
) -> None:
    async with gateways(
        LIMITED, tmp_path, postgres_url, prefix, upstream_transport, upstream_env
    ) as apps:
        private = await enroll_everywhere(apps, "alice")
        access = await login(apps[0], private, "alice")
        statuses = []
        for turn in range(6):  # alternate: 0, 1, 0, 1, ...
            proof = sign_proof(private, method="POST", url=CHAT, access_token=access)
            response = await chat(apps[turn % 2], access, proof)
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert response.json()["error"]["code"] == "quota_exceeded"
                assert 1 <= int(response.headers["retry-after"]) <= 20
        assert statuses == [200, 200, 200, 429, 429, 429]


async def test_a_throttle_lock_holds_across_gateways(
    tmp_path: Path,
    postgres_url: str,
    prefix: str,
    upstream_transport: httpx2.ASGITransport,
    upstream_env: dict[str, str],
) -> None:
    async with gateways(
        CONFIG, tmp_path, postgres_url, prefix, upstream_transport, upstream_env
    ) as apps:
        private = await enroll_everywhere(apps, "alice")
        access = await login(apps[0], private, "alice")
        apps[0].services.locks.lock(
            "throttle", "alice", reason="integration test", author="test", rate=1
        )
        for app in apps:
            await app.reload()
        first = await chat(
            apps[0], access, sign_proof(private, method="POST", url=CHAT, access_token=access)
        )
        second = await chat(
            apps[1], access, sign_proof(private, method="POST", url=CHAT, access_token=access)
        )
        assert first.status_code == 200, first.text
        assert second.status_code == 429
        assert second.json()["error"]["code"] == "throttled"
        assert 55 <= int(second.headers["retry-after"]) <= 60


async def test_redis_unreachable_refuses_proofs_with_503(
    tmp_path: Path,
    postgres_url: str,
    prefix: str,
    upstream_transport: httpx2.ASGITransport,
    upstream_env: dict[str, str],
) -> None:
    """A gateway whose Redis does not answer cannot prove a proof's single use across the
    cluster: strict compartments and the token endpoint refuse (503), others use its own cache."""
    async with gateways(
        CONFIG,
        tmp_path,
        postgres_url,
        prefix,
        upstream_transport,
        upstream_env,
        redis_urls=(REDIS_URL, DEAD_REDIS_URL),
    ) as (live, dead):
        private = await enroll_everywhere([live, dead], "carol")
        access = await login(live, private, "carol")  # a valid token, from the healthy gateway
        critical = {"model": "cyber-frontier", "messages": [{"role": "user", "content": "hi"}]}
        async with dead.client() as client:
            refused = await client.post(
                "/v1/chat/completions",
                json=critical,
                headers={
                    "Authorization": f"DPoP {access}",
                    "DPoP": sign_proof(private, method="POST", url=CHAT, access_token=access),
                },
            )
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "replay_cache_unavailable"
        assert "compartment 'frontier'" in refused.json()["error"]["message"]
        assert access not in refused.text
        # an internal compartment keeps serving, single use held by this gateway's own cache
        proof = sign_proof(private, method="POST", url=CHAT, access_token=access)
        assert (await chat(dead, access, proof)).status_code == 200
        replayed = await chat(dead, access, proof)
        assert replayed.status_code == 401
        assert "DPoP proof replayed" in replayed.headers["www-authenticate"]
        async with dead.client() as client:
            token_request = await client.post(
                "/oauth/token",
                data={"grant_type": "client_credentials"},
                headers={"DPoP": sign_proof(private, method="POST", url=TOKEN)},
            )
        assert token_request.status_code == 503
        assert token_request.json()["error"] == "temporarily_unavailable"
        # the healthy gateway is unaffected
        fine = await chat(
            live, access, sign_proof(private, method="POST", url=CHAT, access_token=access)
        )
        assert fine.status_code == 200


async def test_console_sign_in_attempts_are_limited_across_gateways(
    tmp_path: Path,
    postgres_url: str,
    prefix: str,
    upstream_transport: httpx2.ASGITransport,
    upstream_env: dict[str, str],
) -> None:
    async with gateways(
        CONFIG, tmp_path, postgres_url, prefix, upstream_transport, upstream_env
    ) as apps:
        browsers = [Browser(app) for app in apps]
        statuses = []
        for turn in range(int(BURST) + 2):  # one address guessing login codes through both
            guess = f"/console/login#code={'A' * 42}{turn % 10}"
            statuses.append((await browsers[turn % 2].open_link(guess)).status_code)
        for browser in browsers:
            await browser.client.aclose()
    assert statuses == [400] * int(BURST) + [429, 429]  # unknown code, then the shared limit

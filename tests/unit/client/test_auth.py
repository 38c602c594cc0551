"""The DPoP auth flow against a fake Bastion that verifies everything the client sends."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from bastion.client import (
    DPoPAuth,
    Profile,
    async_httpx_client,
    httpx_client,
    save_profile,
)
from bastion.errors import ConfigError, InvalidClient, InvalidDPoPProof, OAuthError, Unavailable
from bastion.identity.keys import generate_private_jwk

from .fake_bastion import SERVER, FakeBastion

Handler = Callable[[httpx.Request], httpx.Response]
BEARER = b'{"access_token": "t", "token_type": "Bearer", "expires_in": 60}'


@pytest.fixture
def device_jwk() -> dict[str, str]:
    return generate_private_jwk()


@pytest.fixture
def profile(device_jwk: dict[str, str]) -> Profile:
    return Profile(server=SERVER, client_id="alice", private_jwk=device_jwk)


@pytest.fixture
def fake(device_jwk: dict[str, str]) -> FakeBastion:
    return FakeBastion("alice", device_jwk)


def handler(fake: FakeBastion) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        status, headers, body = fake.handle(
            request.method, str(request.url), request.headers.multi_items(), request.read()
        )
        return httpx.Response(status, headers=headers, content=body)

    return handle


def async_handler(fake: FakeBastion) -> Callable[[httpx.Request], Awaitable[httpx.Response]]:
    """Like :func:`handler`, with a token endpoint that yields to the event loop while it works,
    so that concurrent requests really overlap."""

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            await asyncio.sleep(0.02)
        return handler(fake)(request)

    return handle


def client(profile: Profile, fake: FakeBastion) -> httpx.Client:
    return httpx.Client(
        base_url=SERVER,
        auth=DPoPAuth(profile, clock=fake.clock),
        transport=httpx.MockTransport(handler(fake)),
    )


def async_client(profile: Profile, fake: FakeBastion) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=SERVER,
        auth=DPoPAuth(profile, clock=fake.clock),
        transport=httpx.MockTransport(async_handler(fake)),
    )


def test_the_first_request_gets_a_dpop_bound_token(profile: Profile, fake: FakeBastion) -> None:
    with client(profile, fake) as c:
        response = c.get("/v1/models")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "sub": "alice"}
    assert fake.grants == ["client_credentials"]
    (seen,) = fake.seen
    assert seen.headers["authorization"][0].startswith("DPoP ")
    assert len(seen.headers["dpop"]) == 1


def test_sdk_placeholder_credentials_are_replaced(profile: Profile, fake: FakeBastion) -> None:
    with client(profile, fake) as c:
        response = c.post(
            "/v1/chat/completions",
            headers={"Authorization": "Bearer unused", "x-api-key": "sk-ant-placeholder"},
            json={"model": "demo-chat", "messages": []},
        )
    assert response.status_code == 200
    (seen,) = fake.seen
    assert len(seen.headers["authorization"]) == 1
    assert seen.headers["authorization"][0].startswith("DPoP ")
    assert "x-api-key" not in seen.headers
    assert b'"demo-chat"' in seen.body


def test_the_token_is_reused_with_a_fresh_proof_per_request(
    profile: Profile, fake: FakeBastion
) -> None:
    with client(profile, fake) as c:
        statuses = [c.get(f"/v1/models?page={i}").status_code for i in range(3)]
    assert statuses == [200, 200, 200]  # the server's replay cache would refuse a reused proof
    assert fake.grants == ["client_credentials"]
    proofs = {seen.headers["dpop"][0] for seen in fake.seen}
    tokens = {seen.headers["authorization"][0] for seen in fake.seen}
    assert (len(proofs), len(tokens)) == (3, 1)


def test_the_token_is_refreshed_30_s_before_expiry(profile: Profile, fake: FakeBastion) -> None:
    with client(profile, fake) as c:
        c.get("/v1/models")
        fake.clock.now += fake.access_ttl - 31
        c.get("/v1/models")
        assert fake.grants == ["client_credentials"]
        fake.clock.now += 2
        assert c.get("/v1/models").status_code == 200
    assert fake.grants == ["client_credentials", "refresh_token"]
    assert fake.seen[1].headers["authorization"] != fake.seen[2].headers["authorization"]


def test_short_lived_tokens_are_renewed_halfway(profile: Profile, fake: FakeBastion) -> None:
    fake.access_ttl = 40
    with client(profile, fake) as c:
        c.get("/v1/models")
        fake.clock.now += 19
        c.get("/v1/models")
        assert fake.grants == ["client_credentials"]
        fake.clock.now += 2
        c.get("/v1/models")
    assert fake.grants == ["client_credentials", "refresh_token"]


def test_a_failed_refresh_falls_back_to_client_credentials(
    profile: Profile, fake: FakeBastion
) -> None:
    fake.fail_refresh = True
    with client(profile, fake) as c:
        c.get("/v1/models")
        fake.clock.now += fake.access_ttl
        assert c.get("/v1/models").status_code == 200
    assert fake.grants == ["client_credentials", "refresh_token", "client_credentials"]


def test_invalid_token_gets_one_new_token_and_one_retry(
    profile: Profile, fake: FakeBastion
) -> None:
    fake.reject_tokens = 1
    with client(profile, fake) as c:
        response = c.post("/v1/chat/completions", json={"model": "demo-chat"})
    assert response.status_code == 200
    assert fake.grants == ["client_credentials", "refresh_token"]
    first, second = fake.seen
    assert (first.status, second.status) == (401, 200)
    assert first.body == second.body == b'{"model":"demo-chat"}'
    assert first.headers["authorization"] != second.headers["authorization"]


def test_a_second_invalid_token_is_returned_to_the_caller(
    profile: Profile, fake: FakeBastion
) -> None:
    fake.reject_tokens = 5
    with client(profile, fake) as c:
        response = c.get("/v1/models")
    assert response.status_code == 401
    assert len(fake.seen) == 2
    assert fake.grants == ["client_credentials", "refresh_token"]


def test_other_401s_are_not_retried(profile: Profile, fake: FakeBastion) -> None:
    fake.reject_tokens, fake.reject_with = 1, InvalidDPoPProof
    with client(profile, fake) as c:
        response = c.get("/v1/models")
    assert response.status_code == 401
    assert 'error="invalid_dpop_proof"' in response.headers["www-authenticate"]
    assert len(fake.seen) == 1


def test_a_refused_grant_raises_the_servers_reason(profile: Profile) -> None:
    stranger = FakeBastion("alice", generate_private_jwk())  # enrolled a different key
    with client(profile, stranger) as c, pytest.raises(InvalidClient) as info:
        c.get("/v1/models")
    assert info.value.message == (
        f"{SERVER}/oauth/token refused the grant (invalid_client): "
        "client assertion key is not enrolled for this client"
    )
    assert stranger.seen == []


def test_credentials_are_never_sent_to_another_origin(profile: Profile, fake: FakeBastion) -> None:
    with client(profile, fake) as c:
        for url in ("https://evil.test/v1/models", "http://bastion.test/v1/models"):
            with pytest.raises(ConfigError, match="refusing to send its credentials"):
                c.get(url)
    assert (fake.grants, fake.seen) == ([], [])


@pytest.mark.parametrize(
    ("status", "body", "error", "message"),
    [
        (200, b"<html>", Unavailable, "not JSON"),
        (200, b'{"token_type": "DPoP", "expires_in": 60}', Unavailable, "no access_token"),
        (200, BEARER, Unavailable, "not DPoP-bound"),
        (200, b'{"access_token": "t", "token_type": "DPoP"}', Unavailable, "no valid expires_in"),
        (502, b"<html>bad gateway</html>", Unavailable, "answered HTTP 502"),
        (400, b"{}", OAuthError, "refused the grant with HTTP 400"),
        (400, b'{"error": "slow_down"}', OAuthError, r"refused the grant \(slow_down\)"),
    ],
)
def test_bad_token_responses_are_clear_errors(
    profile: Profile, status: int, body: bytes, error: type[Exception], message: str
) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body)

    auth = DPoPAuth(profile)
    with (
        httpx.Client(auth=auth, transport=httpx.MockTransport(handle)) as c,
        pytest.raises(error, match=message),
    ):
        c.get(f"{SERVER}/v1/models")


def test_threads_share_one_grant(profile: Profile, fake: FakeBastion) -> None:
    fake.token_delay = 0.05
    statuses: list[int] = []
    with client(profile, fake) as c:
        threads = [
            threading.Thread(target=lambda: statuses.append(c.get("/v1/models").status_code))
            for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert statuses == [200] * 8
    assert fake.grants == ["client_credentials"]


def test_async_requests_share_one_grant_and_retry(profile: Profile, fake: FakeBastion) -> None:
    async def main() -> list[int]:
        async with async_client(profile, fake) as c:
            responses = await asyncio.gather(*(c.get("/v1/models") for _ in range(5)))
            fake.reject_tokens = 1
            retried = await c.post("/v1/chat/completions", json={"model": "demo-chat"})
            return [r.status_code for r in responses] + [retried.status_code]

    assert asyncio.run(main()) == [200] * 6
    assert fake.grants == ["client_credentials", "refresh_token"]
    assert [seen.status for seen in fake.seen] == [200] * 5 + [401, 200]


def test_async_refresh_falls_back_and_errors_raise(profile: Profile, fake: FakeBastion) -> None:
    fake.fail_refresh = True

    async def main() -> int:
        async with async_client(profile, fake) as c:
            await c.get("/v1/models")
            fake.clock.now += fake.access_ttl
            status = (await c.get("/v1/models")).status_code
            with pytest.raises(ConfigError):
                await c.get("https://evil.test/")
            return status

    assert asyncio.run(main()) == 200
    assert fake.grants == ["client_credentials", "refresh_token", "client_credentials"]


def test_http_client_factories(
    profile: Profile, fake: FakeBastion, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.clock.now = time.time()  # the factories' clients use the real clock
    monkeypatch.setenv("BASTION_CLIENT_DIR", str(tmp_path))
    save_profile(Profile(profile.server, profile.client_id, profile.private_jwk, name="work"))
    with httpx_client("work", transport=httpx.MockTransport(handler(fake))) as c:
        assert isinstance(c.auth, DPoPAuth)
        assert c.get("/v1/models").json()["sub"] == "alice"

    async def main() -> int:
        transport = httpx.MockTransport(handler(fake))
        async with async_httpx_client(profile, transport=transport) as c:
            return (await c.get("/v1/models")).status_code

    assert asyncio.run(main()) == 200

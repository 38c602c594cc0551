"""Step-up in the client helper (RFC 9470): a 401 ``insufficient_user_authentication`` gets one
new grant with an MFA code from the caller's provider and one retry; without a provider the 401
goes back unchanged. Profiles remember an MFA login."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from bastion.client import DPoPAuth, Profile, load_profile, save_profile
from bastion.errors import ConfigError, InvalidRequest
from bastion.identity.keys import generate_private_jwk

from .fake_bastion import SERVER, FakeBastion
from .test_auth import async_handler, handler


class Codes:
    """A provider that hands out codes and counts how often it was asked."""

    def __init__(self, *codes: object) -> None:
        self.codes = list(codes) or ["123456"]
        self.asked = 0

    def __call__(self) -> str:
        self.asked += 1
        code = self.codes[min(self.asked, len(self.codes)) - 1]
        return code  # type: ignore[return-value]  # some tests hand back a wrong type


@pytest.fixture
def device_jwk() -> dict[str, str]:
    return generate_private_jwk()


@pytest.fixture
def profile(device_jwk: dict[str, str]) -> Profile:
    return Profile(server=SERVER, client_id="alice", private_jwk=device_jwk)


@pytest.fixture
def fake(device_jwk: dict[str, str]) -> FakeBastion:
    return FakeBastion("alice", device_jwk)


def client(
    profile: Profile, fake: FakeBastion, mfa: Callable[[], str] | None = None
) -> httpx.Client:
    return httpx.Client(
        base_url=SERVER,
        auth=DPoPAuth(profile, clock=fake.clock, mfa=mfa),
        transport=httpx.MockTransport(handler(fake)),
    )


def test_a_step_up_gets_one_mfa_grant_and_one_retry(profile: Profile, fake: FakeBastion) -> None:
    codes = Codes()
    fake.step_up = 1
    with client(profile, fake, codes) as c:
        response = c.post("/v1/chat/completions", json={"model": "demo-chat"})
        assert response.status_code == 200
        assert c.get("/v1/models").status_code == 200  # the MFA token is kept
    assert codes.asked == 1
    assert fake.grants == ["client_credentials", "client_credentials"]  # never a refresh
    assert fake.mfa_codes == [None, "123456"]
    first, second, _ = fake.seen
    assert (first.status, second.status) == (401, 200)
    assert first.body == second.body == b'{"model":"demo-chat"}'


def test_a_second_step_up_is_returned_to_the_caller(profile: Profile, fake: FakeBastion) -> None:
    codes = Codes()
    fake.step_up = 5
    with client(profile, fake, codes) as c:
        response = c.get("/v1/models")
    assert response.status_code == 401
    assert 'error="insufficient_user_authentication"' in response.headers["www-authenticate"]
    assert codes.asked == 1
    assert len(fake.seen) == 2


def test_without_a_provider_the_401_is_returned_unchanged(
    profile: Profile, fake: FakeBastion
) -> None:
    fake.step_up = 1
    with client(profile, fake) as c:
        response = c.get("/v1/models")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        'DPoP error="insufficient_user_authentication", '
        'error_description="a recent MFA login is needed", max_age=300'
    )
    assert response.json() == {"error": "insufficient_user_authentication"}
    assert (fake.grants, len(fake.seen)) == (["client_credentials"], 1)


def test_a_profile_that_logged_in_with_mfa_sends_a_code_first_and_refreshes_after(
    profile: Profile, fake: FakeBastion
) -> None:
    codes = Codes("123 456")  # as authenticator apps show it
    with client(replace(profile, mfa=True), fake, codes) as c:
        assert c.get("/v1/models").status_code == 200
        fake.clock.now += fake.access_ttl  # renewal keeps the login's MFA: a refresh
        assert c.get("/v1/models").status_code == 200
    assert fake.grants == ["client_credentials", "refresh_token"]
    assert fake.mfa_codes == ["123456", None]
    assert codes.asked == 1


def test_a_profile_mfa_flag_without_a_provider_sends_no_code(
    profile: Profile, fake: FakeBastion
) -> None:
    with client(replace(profile, mfa=True), fake) as c:
        assert c.get("/v1/models").status_code == 200
    assert fake.mfa_codes == [None]


def test_a_provider_that_returns_no_string_is_a_clear_error(
    profile: Profile, fake: FakeBastion
) -> None:
    fake.step_up = 1
    with client(profile, fake, Codes(123456)) as c, pytest.raises(InvalidRequest) as info:
        c.get("/v1/models")
    assert info.value.message == "the mfa provider must return the code as a string"


def test_invalid_token_still_refreshes_without_asking_for_a_code(
    profile: Profile, fake: FakeBastion
) -> None:
    codes = Codes()
    fake.reject_tokens = 1
    with client(profile, fake, codes) as c:
        assert c.get("/v1/models").status_code == 200
    assert (fake.grants, codes.asked) == (["client_credentials", "refresh_token"], 0)


def test_async_step_up_asks_once_for_concurrent_requests(
    profile: Profile, fake: FakeBastion
) -> None:
    codes = Codes()

    async def main() -> list[int]:
        auth = DPoPAuth(profile, clock=fake.clock, mfa=codes)
        transport = httpx.MockTransport(async_handler(fake))
        async with httpx.AsyncClient(base_url=SERVER, auth=auth, transport=transport) as c:
            await c.get("/v1/models")
            fake.step_up = 3
            responses = await asyncio.gather(*(c.get("/v1/models") for _ in range(3)))
            return [r.status_code for r in responses]

    assert asyncio.run(main()) == [200, 200, 200]
    assert codes.asked == 1
    assert fake.mfa_codes == [None, "123456"]


def test_profiles_remember_an_mfa_login(profile: Profile, tmp_path: Path) -> None:
    env = {"BASTION_CLIENT_DIR": str(tmp_path)}
    save_profile(profile, env)
    assert load_profile("default", env).mfa is False
    assert "mfa" not in (tmp_path / "profiles" / "default.json").read_text()
    save_profile(replace(profile, mfa=True), env)
    assert load_profile("default", env).mfa is True
    path = tmp_path / "profiles" / "default.json"
    path.write_text(path.read_text().replace('"mfa": true', '"mfa": "yes"'))
    with pytest.raises(ConfigError, match="mfa: must be true or false"):
        load_profile("default", env)

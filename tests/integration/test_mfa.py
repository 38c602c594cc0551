"""MFA and step-up end to end (RFC 9470), on SQLite and PostgreSQL: a compartment that needs a
recent MFA login answers 401 ``insufficient_user_authentication`` with ``max_age`` until the
caller logs in with a TOTP code; the MFA time survives refreshes and goes stale on the clock.

The server and its clients share a settable clock (``running(..., clock=...)``), so "five minutes
later" takes no time; TOTP codes are computed for that clock.
"""

from __future__ import annotations

import base64
import re
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import orjson
import pyotp
import pytest
import sqlalchemy as sa

from bastion.client import Profile
from bastion.errors import BadRequest
from bastion.identity.assertions import ASSERTION_TYPE, make_client_assertion
from bastion.identity.dpop import sign_proof
from bastion.identity.mfa import ACR_KEY, ACR_MFA, STEP_SECONDS, MfaService
from bastion.store import events as event_rows
from bastion.store import mfa as mfa_rows
from bastion.store.tables import token_families
from bastion.testing import BASE_URL, Harness, running
from tests.conftest import CONFIG
from tests.integration.conftest import Cli

pytestmark = pytest.mark.anyio

MAX_AGE = 300
MFA_CONFIG = (
    CONFIG.replace(
        "  - name: cyber-frontier\n",
        "  - name: step-chat\n    upstream: example-openai\n    upstream_model: example-gpt\n"
        "    compartment: stepup\n  - name: cyber-frontier\n",
    )
    .replace(
        "compartments:\n",
        "compartments:\n  stepup:\n    level: restricted\n"
        f"    max_mfa_age_minutes: {MAX_AGE // 60}\n    grants:\n      orgs: [lab]\n",
    )
    .replace(
        "  audrey: {kind: user, org: lab, roles: [auditor]}\n",
        "  audrey: {kind: user, org: lab, roles: [auditor]}\n  robot: {kind: service, org: lab}\n",
    )
)
TOKEN = BASE_URL + "/oauth/token"
CHAT = BASE_URL + "/v1/chat/completions"
STEP = {"model": "step-chat", "messages": [{"role": "user", "content": "hi"}]}
PLAIN = {"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]}
CHALLENGE = re.compile(
    r'DPoP error="insufficient_user_authentication", '
    r"error_description=\"model 'step-chat' needs an MFA login at most 300 s old: "
    r'log in again with MFA", max_age=300, algs="EdDSA ES256"'
)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def mfa(
    tmp_path: Path,
    upstream_env: dict[str, str],
    upstream_transport: httpx2.ASGITransport,
    database_url: str,
    clock: Clock,
) -> AsyncIterator[Harness]:
    assert "max_mfa_age_minutes: 5" in MFA_CONFIG
    assert "robot:" in MFA_CONFIG
    async with running(
        MFA_CONFIG,
        tmp_path,
        upstream=upstream_transport,
        env=upstream_env,
        database_url=database_url,
        clock=clock,
    ) as harness:
        yield harness


@dataclass
class User:
    profile: Profile
    secret: str
    clock: Clock

    def code(self) -> str:
        """The authenticator app's code now; a new step each call, so no code is reused."""
        self.clock.now = (int(self.clock.now // STEP_SECONDS) + 1) * STEP_SECONDS + 1
        return pyotp.TOTP(self.secret).at(self.clock.now)


async def user(harness: Harness, clock: Clock, name: str = "alice") -> User:
    profile = await harness.enroll(name)
    return User(profile, harness.services.mfa.enroll(name, author="test").secret, clock)


async def grant(harness: Harness, profile: Profile, **form: str) -> httpx.Response:
    """A raw client_credentials grant (plus ``form``), signed at the shared clock's time."""
    now = harness.clock()
    assertion = make_client_assertion(
        profile.private_jwk, client_id=profile.client_id, audience=TOKEN, now=now
    )
    body = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
        **form,
    }
    proof = sign_proof(profile.private_jwk, method="POST", url=TOKEN, now=now)
    async with harness.client() as client:
        return await client.post("/oauth/token", data=body, headers={"DPoP": proof})


async def refresh(harness: Harness, profile: Profile, refresh_token: str) -> httpx.Response:
    proof = sign_proof(profile.private_jwk, method="POST", url=TOKEN, now=harness.clock())
    async with harness.client() as client:
        return await client.post(
            "/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": refresh_token},
            headers={"DPoP": proof},
        )


async def call(
    harness: Harness, profile: Profile, access: str, body: dict[str, Any] = STEP
) -> httpx.Response:
    proof = sign_proof(
        profile.private_jwk, method="POST", url=CHAT, access_token=access, now=harness.clock()
    )
    async with harness.client() as client:
        return await client.post(
            CHAT, json=body, headers={"Authorization": f"DPoP {access}", "DPoP": proof}
        )


def claims(access_token: str) -> dict[str, Any]:
    payload = access_token.split(".")[1]
    decoded: dict[str, Any] = orjson.loads(base64.urlsafe_b64decode(payload + "=="))
    return decoded


async def events(harness: Harness, prefix: str) -> list[dict[str, Any]]:
    await harness.services.recorder.flush()
    with harness.services.store.read() as conn:
        rows = event_rows.last(conn, 1000, prefix)
    return [orjson.loads(row.body) for row in rows]


def families(harness: Harness) -> int:
    with harness.services.store.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(token_families)).scalar())


def factor(harness: Harness, principal: str = "alice") -> mfa_rows.FactorRow | None:
    with harness.services.store.read() as conn:
        return mfa_rows.get(conn, principal)


# -- the step-up challenge -----------------------------------------------------------------------


async def test_without_mfa_the_compartment_answers_401_with_max_age(
    mfa: Harness, clock: Clock
) -> None:
    alice = await user(mfa, clock)
    async with mfa.client(alice.profile) as client:
        response = await client.post("/v1/chat/completions", json=STEP)
        assert response.status_code == 401
        assert CHALLENGE.fullmatch(response.headers["www-authenticate"])
        message = "model 'step-chat' needs an MFA login at most 300 s old: log in again with MFA"
        assert response.json() == {
            "type": "error",
            "error": {
                "type": "insufficient_user_authentication",
                "code": "insufficient_user_authentication",
                "message": message,
            },
        }
        # the same token still reaches compartments that ask for no MFA, and lists step-chat
        assert (await client.post("/v1/chat/completions", json=PLAIN)).status_code == 200
        listed = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
        assert "step-chat" in listed
    decided = [e for e in await events(mfa, "request.decided") if e["model"] == "step-chat"]
    assert decided[-1]["allowed"] is False
    assert decided[-1]["reasons"] == ["insufficient_user_authentication"]
    assert decided[-1]["policies"] == ["forbid-stale-mfa"]
    assert (decided[-1]["status"], decided[-1]["outcome"]) == (401, "denied")
    assert decided[-1]["error"] == "insufficient_user_authentication"


async def test_step_up_is_not_offered_when_mfa_would_not_help(mfa: Harness, clock: Clock) -> None:
    victor = await user(mfa, clock, "victor")  # a vendor without a grant to step-chat
    async with mfa.client(victor.profile) as client:
        response = await client.post("/v1/chat/completions", json=STEP)
    assert response.status_code == 403
    assert response.json()["error"]["reasons"] == [
        "not_granted",
        "insufficient_user_authentication",
    ]
    decided = (await events(mfa, "request.decided"))[-1]
    assert (decided["status"], decided["policies"]) == (403, ["forbid-stale-mfa"])
    login = await grant(mfa, victor.profile, mfa_code=victor.code())
    assert login.status_code == 200, login.text
    with_mfa = await call(mfa, victor.profile, login.json()["access_token"])
    assert with_mfa.status_code == 403
    assert with_mfa.json()["error"]["reasons"] == ["not_granted"]


async def test_an_mfa_login_is_allowed_until_it_is_older_than_max_age(
    mfa: Harness, clock: Clock
) -> None:
    alice = await user(mfa, clock)
    login = await grant(mfa, alice.profile, mfa_code=alice.code())
    assert login.status_code == 200, login.text
    access = login.json()["access_token"]
    assert (await call(mfa, alice.profile, access)).status_code == 200
    confirmed = factor(mfa)
    assert confirmed is not None
    assert confirmed.confirmed_at is not None

    clock.now += MAX_AGE  # exactly max_age old: still fresh
    assert (await call(mfa, alice.profile, access)).status_code == 200
    clock.now += 1
    stale = await call(mfa, alice.profile, access)  # the token itself is still valid
    assert stale.status_code == 401
    assert CHALLENGE.fullmatch(stale.headers["www-authenticate"])
    assert (await call(mfa, alice.profile, access, PLAIN)).status_code == 200


async def test_tokens_say_how_the_caller_logged_in_and_refresh_keeps_the_mfa_time(
    mfa: Harness, clock: Clock
) -> None:
    alice = await user(mfa, clock)
    plain = (await grant(mfa, alice.profile)).json()
    assert claims(plain["access_token"])["amr"] == ["pop"]
    assert claims(plain["access_token"])["acr"] == ACR_KEY
    assert "auth_time" not in claims(plain["access_token"])

    code = alice.code()
    logged_in_at = int(clock.now)
    first = (await grant(mfa, alice.profile, mfa_code=code)).json()
    assert {k: claims(first["access_token"])[k] for k in ("auth_time", "amr", "acr")} == {
        "auth_time": logged_in_at,
        "amr": ["pop", "otp"],
        "acr": ACR_MFA,
    }
    clock.now += 200
    renewed = (await refresh(mfa, alice.profile, first["refresh_token"])).json()
    renewed_claims = claims(renewed["access_token"])
    assert renewed_claims["iat"] == int(clock.now)
    assert renewed_claims["auth_time"] == logged_in_at  # when she authenticated, not now
    assert (renewed_claims["amr"], renewed_claims["acr"]) == (["pop", "otp"], ACR_MFA)
    assert (await call(mfa, alice.profile, renewed["access_token"])).status_code == 200
    clock.now += 101  # the refresh did not make the MFA any younger
    again = (await refresh(mfa, alice.profile, renewed["refresh_token"])).json()
    assert (await call(mfa, alice.profile, again["access_token"])).status_code == 401
    plain_refreshed = (await refresh(mfa, alice.profile, plain["refresh_token"])).json()
    assert "auth_time" not in claims(plain_refreshed["access_token"])
    issued = [e for e in await events(mfa, "token.issued") if e["principal"] == "alice"]
    assert [e["amr"] for e in issued] == [["pop"], ["pop", "otp"]]
    assert code not in str(await events(mfa, "token."))


# -- bad codes -----------------------------------------------------------------------------------


async def test_a_replayed_code_is_refused(mfa: Harness, clock: Clock) -> None:
    alice = await user(mfa, clock)
    code = alice.code()
    assert (await grant(mfa, alice.profile, mfa_code=code)).status_code == 200
    before = (families(mfa), factor(mfa))
    replayed = await grant(mfa, alice.profile, mfa_code=code)
    assert replayed.status_code == 400
    assert replayed.json() == {
        "error": "invalid_grant",
        "error_description": "this MFA code was already used; wait for the next one",
    }
    assert (families(mfa), factor(mfa)) == before
    refused = (await events(mfa, "token.refused"))[-1]
    assert (refused["principal"], refused["error"]) == ("alice", "invalid_grant")
    assert code not in orjson.dumps(refused).decode()


async def test_bad_mfa_codes_are_refused_and_change_nothing(mfa: Harness, clock: Clock) -> None:
    alice = await user(mfa, clock)
    before = (families(mfa), factor(mfa))
    for bad in ("", "abcdef", "1234567", "12345", "12 345", "1" * 4000):
        response = await grant(mfa, alice.profile, mfa_code=bad)
        assert response.status_code == 400, bad
        assert response.json() == {
            "error": "invalid_grant",
            "error_description": "mfa_code must be 6 digits",
        }
    huge = await grant(mfa, alice.profile, mfa_code="1" * 9000)
    assert huge.json()["error"] == "invalid_request"  # every form value is capped at 8 KiB
    assert (families(mfa), factor(mfa)) == before
    refusals = await events(mfa, "token.refused")
    assert len(refusals) == 7
    assert all(e["principal"] == "alice" for e in refusals[:6])

    wrong = next(c for c in ("000000", "111111") if c != pyotp.TOTP(alice.secret).at(clock.now))
    refused = await grant(mfa, alice.profile, mfa_code=wrong)
    assert refused.json()["error_description"] == "the MFA code is wrong or has expired"
    after = factor(mfa)
    assert after is not None
    assert (after.failures, after.last_step) == (1, None)
    assert families(mfa) == before[0]


async def test_mfa_needs_an_enrolled_factor_and_only_users_have_one(
    mfa: Harness, clock: Clock
) -> None:
    bob = await mfa.enroll("bob")
    response = await grant(mfa, bob, mfa_code="123456")
    assert response.json() == {
        "error": "invalid_grant",
        "error_description": (
            "principal 'bob' has no MFA factor enrolled; an admin enrols one with "
            "`bastion mfa enroll bob`"
        ),
    }
    with pytest.raises(BadRequest, match="'robot' is a service"):
        mfa.services.mfa.enroll("robot", author="test")
    assert factor(mfa, "robot") is None


async def test_metadata_lists_the_acr_values(mfa: Harness) -> None:
    async with mfa.client() as client:
        metadata = (await client.get("/.well-known/oauth-authorization-server")).json()
    assert metadata["acr_values_supported"] == [ACR_KEY, ACR_MFA]


# -- the client helper ---------------------------------------------------------------------------


async def test_the_client_helper_steps_up_with_a_provider_and_retries_once(
    mfa: Harness, clock: Clock
) -> None:
    alice = await user(mfa, clock)
    asked: list[str] = []

    def provider() -> str:
        asked.append(alice.code())
        return asked[-1]

    async with mfa.client(alice.profile, mfa=provider) as client:
        assert (await client.post("/v1/chat/completions", json=STEP)).status_code == 200
        assert len(asked) == 1
        assert (await client.post("/v1/chat/completions", json=STEP)).status_code == 200
        clock.now += MAX_AGE + 1
        assert (await client.post("/v1/chat/completions", json=STEP)).status_code == 200
        assert len(asked) == 2
    decided = [e for e in await events(mfa, "request.decided") if e["model"] == "step-chat"]
    assert [e["status"] for e in decided] == [401, 200, 200, 401, 200]


async def test_the_openai_sdk_gets_the_401_without_a_provider(mfa: Harness, clock: Clock) -> None:
    alice = await user(mfa, clock)
    sdk = openai.AsyncOpenAI(
        base_url=BASE_URL + "/v1",
        api_key="unused",
        http_client=mfa.sdk_client(alice.profile),
        max_retries=0,
    )
    with pytest.raises(openai.AuthenticationError) as refused:
        await sdk.chat.completions.create(
            model="step-chat", messages=[{"role": "user", "content": "x"}]
        )
    assert refused.value.status_code == 401
    assert refused.value.code == "insufficient_user_authentication"
    assert CHALLENGE.fullmatch(refused.value.response.headers["www-authenticate"])

    stepped = openai.AsyncOpenAI(
        base_url=BASE_URL + "/v1",
        api_key="unused",
        http_client=mfa.sdk_client(alice.profile, mfa=alice.code),
        max_retries=0,
    )
    reply = await stepped.chat.completions.create(
        model="step-chat", messages=[{"role": "user", "content": "x"}]
    )
    assert reply.choices[0].message.content


# -- bastion mfa (operator CLI) ------------------------------------------------------------------


def test_mfa_cli_enrols_lists_and_removes_factors(admin_cli: Cli) -> None:
    enrolled = admin_cli("mfa", "enroll", "alice")
    assert enrolled.code == 0, enrolled.err
    lines = enrolled.out.splitlines()
    assert lines[0] == "MFA factor created for alice."
    assert "shown only this once" in lines[1]
    uri = lines[2].removeprefix("otpauth URI: ")
    secret = lines[3].removeprefix("secret (base32): ")
    assert uri == f"otpauth://totp/Bastion:alice?secret={secret}&issuer=Bastion"
    key_file = admin_cli.root / ".bastion" / "mfa.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    # the server side (same state directory) accepts the app's codes
    service = MfaService(admin_cli.store, admin_cli.audit, key_file)
    service.verify("alice", pyotp.TOTP(secret).now(), time.time())

    listed = admin_cli("mfa", "list")
    assert listed.code == 0
    [row] = [line for line in listed.out.splitlines() if "alice" in line]
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells[0] == "alice"
    assert "-" not in (cells[2], cells[3])  # confirmed and last used by that first code
    assert cells[4] == "0"
    assert secret not in listed.out

    again = admin_cli("mfa", "enroll", "alice")
    assert again.code == 1
    assert again.err == (
        "error: 'alice' already has an MFA factor; "
        "remove it first with `bastion mfa remove alice`\n"
    )
    removed = admin_cli("mfa", "remove", "alice", "--reason", "lost phone")
    assert (removed.code, removed.out) == (0, "removed the MFA factor of alice\n")
    gone = admin_cli("mfa", "remove", "alice")
    assert (gone.code, gone.err) == (1, "error: 'alice' has no MFA factor\n")
    with admin_cli.store.read() as conn:
        names = [row.name for row in event_rows.last(conn, 100, "mfa.")]
        bodies = " ".join(row.body for row in event_rows.last(conn, 100))
    assert names == ["mfa.enrolled", "mfa.removed"]
    assert secret not in bodies


def test_mfa_cli_refuses_services_and_strangers(admin_cli: Cli) -> None:
    added = admin_cli(
        "principal", "add", "ci-bot", "--org", "lab", "--kind", "service", "--no-code"
    )
    assert added.code == 0
    service = admin_cli("mfa", "enroll", "ci-bot")
    assert service.code == 1
    assert service.err.startswith("error: 'ci-bot' is a service: MFA factors are for users")
    stranger = admin_cli("mfa", "enroll", "nobody")
    assert (stranger.code, stranger.err) == (1, "error: no principal named 'nobody'\n")
    assert "ci-bot" not in admin_cli("mfa", "list").out

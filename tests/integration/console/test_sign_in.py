"""Signing in to the console: the CLI's one-time link, TOTP, expiry and sign-out, on SQLite and
PostgreSQL. The server runs on a settable clock, so "two minutes later" takes no time."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from bastion.console.attempts import SignInAttempts, SignInLimits
from bastion.console.guard import COOKIE
from bastion.console.sessions import ABSOLUTE_SECONDS, IDLE_SECONDS, LINK_SECONDS
from bastion.store import events as event_rows
from bastion.testing import BASE_URL, running

from .conftest import CONSOLE_CONFIG, Console

pytestmark = pytest.mark.anyio


async def test_a_login_link_signs_in_once(console: Console) -> None:
    path = await console.link("audrey")
    assert path.startswith("/console/login#code=")
    first = console.browser()
    signed = await first.open_link(path)
    assert signed.status_code == 303
    assert signed.headers["location"] == "/console/"
    page = await first.get("/console/")
    assert page.status_code == 200
    assert "audrey" in page.text
    second = console.browser()
    again = await second.open_link(path)
    assert again.status_code == 400
    assert "unknown, already used or expired" in again.text
    assert COOKIE not in second.client.cookies
    assert (await second.get("/console/")).status_code == 303


async def test_a_login_link_expires_after_two_minutes(console: Console) -> None:
    assert LINK_SECONDS <= 120
    path = await console.link("audrey")
    console.clock.advance(LINK_SECONDS + 1)
    late = await console.browser().open_link(path)
    assert late.status_code == 400
    assert "expired" in late.text


async def test_only_a_device_key_gets_a_link(console: Console) -> None:
    anonymous = await console.browser().post("/console/login-links")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "invalid_token"
    assert "DPoP" in anonymous.headers["www-authenticate"]
    for refused in ("victor", "robot"):  # a vendor, a service
        client = await console.dpop(refused)
        response = await client.post("/console/login-links")
        assert response.status_code == 403, refused
        assert response.json()["error"]["code"] == "access_denied"
    await console.settle()
    with console.harness.services.store.read() as conn:
        denied = [row for row in event_rows.last(conn, 50) if row.name == "admin.denied"]
    assert {orjson.loads(row.body)["actor"] for row in denied} == {"victor", "robot"}


async def test_the_link_is_issued_and_the_sign_in_recorded(console: Console) -> None:
    await console.signed_in("audrey")
    with console.harness.services.store.read() as conn:
        names = [row.name for row in event_rows.last(conn, 20)]
    assert "console.link_issued" in names
    assert "console.signed_in" in names


async def test_totp_is_required_when_enrolled(console: Console) -> None:
    console.enroll_totp("audrey")
    browser = console.browser()
    response = await browser.open_link(await console.link("audrey"))
    assert response.status_code == 303
    assert response.headers["location"] == "/console/mfa"
    # the half-signed-in session opens the TOTP page only
    overview = await browser.get("/console/")
    assert overview.status_code == 303
    assert overview.headers["location"] == "/console/mfa"
    stream = await browser.get("/console/overview/stream")
    assert stream.status_code == 303
    csrf = await browser.load_csrf("/console/mfa")
    good = await browser.post("/console/mfa", {"code": console.totp("audrey"), "csrf": csrf})
    assert good.status_code == 303
    assert good.headers["location"] == "/console/"
    assert (await browser.get("/console/")).status_code == 200


async def test_a_wrong_or_malformed_totp_is_refused(console: Console) -> None:
    console.enroll_totp("audrey")
    browser = console.browser()
    await browser.open_link(await console.link("audrey"))
    csrf = await browser.load_csrf("/console/mfa")
    right = console.totp("audrey")
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    refused = await browser.post("/console/mfa", {"code": wrong, "csrf": csrf})
    assert refused.status_code == 400
    assert "the MFA code is wrong or has expired" in refused.text
    for bad in ("12345", "abcdef", "1234567", "", "\uff11\uff12\uff13\uff14\uff15\uff16"):
        malformed = await browser.post("/console/mfa", {"code": bad, "csrf": csrf})
        assert malformed.status_code == 400, bad
        assert "the code must be 6 digits" in malformed.text
    assert (await browser.get("/console/")).headers["location"] == "/console/mfa"


async def test_a_session_ends_when_idle(console: Console) -> None:
    browser = await console.signed_in("audrey")
    console.clock.advance(IDLE_SECONDS + 1)
    response = await browser.get("/console/")
    assert response.status_code == 303
    assert response.headers["location"] == "/console/login?notice=expired"
    notice = await browser.get("/console/login?notice=expired")
    assert "Your session ended" in notice.text


async def test_a_session_ends_at_its_absolute_limit_despite_activity(console: Console) -> None:
    browser = await console.signed_in("audrey")
    step = IDLE_SECONDS - 60
    elapsed = 0.0
    while elapsed + step < ABSOLUTE_SECONDS:
        console.clock.advance(step)
        elapsed += step
        assert (await browser.get("/console/")).status_code == 200
    console.clock.advance(ABSOLUTE_SECONDS - elapsed + 1)
    assert (await browser.get("/console/")).status_code == 303


async def test_sign_out_ends_the_session_for_good(console: Console) -> None:
    browser = await console.signed_in("audrey")
    stolen = browser.client.cookies[COOKIE]
    out = await browser.post("/console/logout", {"csrf": browser.csrf})
    assert out.status_code == 303
    assert out.headers["location"] == "/console/login?notice=signed_out"
    assert "Max-Age=0" in out.headers["set-cookie"] or "expires=" in out.headers["set-cookie"]
    replay = console.browser()
    replay.client.cookies.set(COOKIE, stolen, domain="bastion.test", path="/console")
    assert (await replay.get("/console/")).status_code == 303


async def test_the_session_cookie_is_locked_down(console: Console) -> None:
    browser = console.browser()
    response = await browser.open_link(await console.link("audrey"))
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "path=/console" in cookie
    assert "secure" not in cookie  # http public URL; https makes it Secure (next test)
    value = browser.client.cookies[COOKIE]
    with console.harness.services.store.read() as conn:
        rows = conn.exec_driver_sql("SELECT id_hash FROM console_sessions").all()
    assert rows
    assert all(value not in row[0] for row in rows)


async def test_cookies_are_secure_behind_https(
    tmp_path: Path, upstream_env: dict[str, str], database_url: str
) -> None:
    async with (
        running(
            CONSOLE_CONFIG,
            tmp_path,
            env=upstream_env,
            database_url=database_url,
            public_url="https://bastion.test",
        ) as harness,
        httpx.AsyncClient(transport=harness.transport, base_url=BASE_URL) as client,
    ):
        form = await client.get("/console/login")
    assert form.status_code == 200
    cookie = form.headers["set-cookie"].lower()
    assert "secure" in cookie
    assert "httponly" in cookie
    assert "samesite=strict" in cookie


async def test_code_guessing_from_one_address_is_limited(console: Console) -> None:
    console.guard.attempts = SignInLimits(SignInAttempts(per_minute=6, burst=3))
    browser = console.browser()
    guesses = [f"/console/login#code={'A' * 42}{n}" for n in range(3)]
    for guess in guesses:
        assert (await browser.open_link(guess)).status_code == 400  # unknown code
    path = await console.link("audrey")  # a real link: still over the limit for now
    refused = await browser.open_link(path)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "10"
    assert "too many sign-in attempts from this address" in refused.text
    assert COOKIE not in browser.client.cookies
    console.guard.attempts = SignInLimits(SignInAttempts(per_minute=6, burst=3))  # time passed
    assert (await browser.open_link(path)).status_code == 303  # the link was not spent

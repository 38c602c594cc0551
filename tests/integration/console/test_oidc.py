"""Signing in to the console with the configured identity provider (authorization code flow,
PKCE S256, state and nonce), on SQLite and PostgreSQL.

The provider is ``tests/oidc_provider.py``, a real uvicorn server on loopback: Bastion fetches
its JWKS and redeems codes at its token endpoint over HTTP. The browser side is in-process
(httpx through the ASGI app). Every bad answer ends on a console error page with nothing signed
in and no code, token or secret shown or logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import httpx2
import orjson
import pytest
import sqlalchemy as sa

from bastion.console import oidc
from bastion.console.attempts import SignInAttempts, SignInLimits
from bastion.console.guard import COOKIE
from bastion.console.oidc import FLOW_COOKIE, FLOW_SECONDS, challenge
from bastion.store import events as event_rows
from bastion.store.tables import console_login_codes
from bastion.testing import BASE_URL, running
from tests.oidc_provider import Provider

from .conftest import CONSOLE_CONFIG, Browser, Clock, Console

pytestmark = pytest.mark.anyio
CALLBACK = BASE_URL + "/console/login/oidc/callback"
SECRET = "lab-console-secret-" + "s" * 20


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    served = Provider(("corp", "lab", "plain"))
    yield served
    served.close()


@pytest.fixture
async def console(
    tmp_path: Path,
    upstream_env: dict[str, str],
    upstream_transport: httpx2.ASGITransport,
    database_url: str,
    clock: Clock,
    provider: Provider,
) -> AsyncIterator[Console]:
    """The console config with three issuers: ``corp`` (console, vouches for lab and acme),
    ``lab`` (console, a confidential client, lab only) and ``plain`` (token exchange only)."""
    provider.reset()
    config = (
        CONSOLE_CONFIG
        + "federation:\n  issuers:\n"
        + provider.issuer_yaml("corp", "[lab, acme]")
        + provider.issuer_yaml(
            "lab",
            "[lab]",
            extra="        client_secret_env: LAB_CONSOLE_SECRET\n        scopes: [profile]\n",
        )
        + provider.issuer_yaml("plain", "[lab]", console=False)
    )
    async with running(
        config,
        tmp_path,
        upstream=upstream_transport,
        env=upstream_env,
        database_url=database_url,
        clock=clock,
    ) as harness:
        console = Console(harness, clock)
        yield console
        await console.close()


async def to_provider(browser: Browser, issuer: str = "corp") -> str:
    """Click "Sign in with <issuer>" and let the provider approve: the callback URL it sends
    the browser back to (relative to Bastion)."""
    start = await browser.get(f"/console/login/oidc/{issuer}")
    assert start.status_code == 303, start.text
    async with httpx.AsyncClient(timeout=10) as idp:
        answer = await idp.get(start.headers["location"])
    assert answer.status_code == 303, answer.text
    back = answer.headers["location"]
    assert back.startswith(CALLBACK + "?"), back
    return back.removeprefix(BASE_URL)


async def sign_in(browser: Browser, issuer: str = "corp") -> httpx.Response:
    return await browser.get(await to_provider(browser, issuer))


async def events_named(console: Console, name: str) -> list[dict[str, object]]:
    await console.settle()
    with console.harness.services.store.read() as conn:
        rows = event_rows.last(conn, 50)
    return [orjson.loads(row.body) for row in rows if row.name == name]


async def signed_in_events(console: Console) -> list[dict[str, object]]:
    return await events_named(console, "console.signed_in")


def bastion_log(caplog: pytest.LogCaptureFixture) -> str:
    """What Bastion itself logged (the test's own HTTP client logs its request URLs)."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("bastion"))


async def assert_nothing_signed_in(console: Console, browser: Browser) -> None:
    assert COOKIE not in browser.client.cookies
    overview = await browser.get("/console/")
    assert overview.status_code == 303
    assert overview.headers["location"].startswith("/console/login")
    assert await signed_in_events(console) == []


# -- the happy path ------------------------------------------------------------------------------


async def test_the_provider_signs_an_internal_user_in(console: Console, provider: Provider) -> None:
    browser = console.browser()
    start = await browser.get("/console/login/oidc/corp")
    assert start.status_code == 303
    to = urlsplit(start.headers["location"])
    assert f"{to.scheme}://{to.netloc}{to.path}" == provider["corp"].issuer + "/authorize"
    query = {k: v[0] for k, v in parse_qs(to.query).items()}
    assert query["response_type"] == "code"
    assert query["client_id"] == "bastion-console"
    assert query["redirect_uri"] == CALLBACK
    assert query["scope"] == "openid"
    assert query["code_challenge_method"] == "S256"
    assert len(query["state"]) == 43
    assert len(query["nonce"]) == 43
    assert len({query["state"], query["nonce"], query["code_challenge"]}) == 3
    cookie = next(c for c in start.headers.get_list("set-cookie") if c.startswith(FLOW_COOKIE))
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Path=/console/login/oidc" in cookie
    assert f"Max-Age={FLOW_SECONDS}" in cookie

    async with httpx.AsyncClient(timeout=10) as idp:
        back = (await idp.get(start.headers["location"])).headers["location"]
    landed = await browser.get(back.removeprefix(BASE_URL))
    assert landed.status_code == 200, landed.text
    # a page that moves on by itself: a redirect would not carry the SameSite=Strict cookie
    assert '<meta http-equiv="refresh" content="0; url=/console/">' in landed.text
    assert COOKIE in browser.client.cookies
    assert FLOW_COOKIE not in browser.client.cookies  # the flow is over
    overview = await browser.get("/console/")
    assert overview.status_code == 200
    assert "audrey" in overview.text

    form = provider["corp"].last_token_form
    assert form["grant_type"] == "authorization_code"
    assert form["redirect_uri"] == CALLBACK
    assert challenge(form["code_verifier"]) == query["code_challenge"]
    assert "client_secret" not in form  # a public client: PKCE only
    (event,) = await signed_in_events(console)
    assert event["actor"] == "audrey"
    assert event["detail"] == {"method": "oidc"}


async def test_the_login_page_offers_each_console_provider(console: Console) -> None:
    page = await console.browser().get("/console/login")
    assert page.status_code == 200
    assert 'href="/console/login/oidc/corp">Sign in with corp</a>' in page.text
    assert 'href="/console/login/oidc/lab">Sign in with lab</a>' in page.text
    assert "/console/login/oidc/plain" not in page.text  # no console section
    assert "<script>" not in page.text


async def test_a_confidential_client_sends_its_secret(
    console: Console,
    provider: Provider,
    monkeypatch: pytest.MonkeyPatch,
    upstream_env: dict[str, str],
) -> None:
    provider["lab"].client_secret = SECRET
    monkeypatch.setitem(upstream_env, "LAB_CONSOLE_SECRET", SECRET)
    browser = console.browser()
    start = await browser.get("/console/login/oidc/lab")
    assert "scope=openid+profile" in start.headers["location"]
    landed = await sign_in(browser, "lab")
    assert landed.status_code == 200, landed.text
    assert (await browser.get("/console/")).status_code == 200


async def test_a_missing_or_wrong_client_secret_signs_nobody_in(
    console: Console,
    provider: Provider,
    monkeypatch: pytest.MonkeyPatch,
    upstream_env: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider["lab"].client_secret = SECRET
    upstream_env.pop("LAB_CONSOLE_SECRET", None)  # what Bastion was given
    browser = console.browser()
    unset = await sign_in(browser, "lab")
    assert unset.status_code == 503
    assert "LAB_CONSOLE_SECRET" in unset.text
    assert "is not set" in unset.text
    monkeypatch.setitem(upstream_env, "LAB_CONSOLE_SECRET", "not-the-secret-" + "x" * 20)
    with caplog.at_level(logging.DEBUG):
        wrong = await sign_in(browser, "lab")
    assert wrong.status_code == 403
    assert "refused the sign-in code (invalid_client)" in wrong.text
    assert "not-the-secret" not in wrong.text + bastion_log(caplog)
    await assert_nothing_signed_in(console, browser)


# -- the TOTP rule -------------------------------------------------------------------------------


async def test_a_totp_user_still_enters_a_code_after_a_password_only_sign_in(
    console: Console,
) -> None:
    console.enroll_totp("audrey")
    browser = console.browser()
    landed = await sign_in(browser)
    assert landed.status_code == 200
    assert 'url=/console/mfa"' in landed.text
    assert (await browser.get("/console/")).headers["location"] == "/console/mfa"
    await browser.load_csrf("/console/mfa")
    done = await browser.post(
        "/console/mfa", {"code": console.totp("audrey"), "csrf": browser.csrf}
    )
    assert done.status_code == 303
    assert (await browser.get("/console/")).status_code == 200
    (event,) = await signed_in_events(console)
    assert event["detail"] == {"method": "oidc", "mfa": True}


async def test_the_providers_mfa_stands_in_for_totp(console: Console, provider: Provider) -> None:
    console.enroll_totp("audrey")
    provider["corp"].amr = ["pwd", "mfa"]
    browser = console.browser()
    landed = await sign_in(browser)
    assert 'url=/console/"' in landed.text
    assert (await browser.get("/console/")).status_code == 200
    (event,) = await signed_in_events(console)
    assert event["detail"] == {"method": "oidc", "mfa": "idp"}


# -- refusals: who ---------------------------------------------------------------------------


async def test_a_vendor_gets_no_console(console: Console, provider: Provider) -> None:
    provider["corp"].user = "victor"  # corp vouches for acme: Cedar is what refuses
    browser = console.browser()
    refused = await sign_in(browser)
    assert refused.status_code == 403
    assert "victor may not use the console" in refused.text
    assert "vendor_control_plane" in refused.text
    await assert_nothing_signed_in(console, browser)
    # a valid identity refused by Cedar is on record for detection (D13), like the admin API's
    (denied,) = await events_named(console, "admin.denied")
    assert denied["actor"] == "victor"
    assert denied["target"] == "GET /console/login/oidc/callback"
    assert "vendor_control_plane" in str(denied["reason"])


async def test_an_issuer_only_vouches_for_its_orgs(
    console: Console,
    provider: Provider,
    monkeypatch: pytest.MonkeyPatch,
    upstream_env: dict[str, str],
) -> None:
    provider["lab"].client_secret = SECRET
    monkeypatch.setitem(upstream_env, "LAB_CONSOLE_SECRET", SECRET)
    provider["lab"].user = "victor"
    browser = console.browser()
    refused = await sign_in(browser, "lab")
    assert refused.status_code == 403
    assert "may not vouch for principals of org &#39;acme&#39;" in refused.text
    await assert_nothing_signed_in(console, browser)


@pytest.mark.parametrize(
    ("user", "words"),
    [
        ("mallory", "&#39;mallory&#39; is not an enabled Bastion principal"),
        ("robot", "robot may not use the console"),  # a service
        ("<b>x</b>", "&#39;&lt;b&gt;x&lt;/b&gt;&#39; is not an enabled"),
    ],
)
async def test_unknown_principals_and_services_are_refused(
    console: Console, provider: Provider, user: str, words: str
) -> None:
    provider["corp"].user = user
    browser = console.browser()
    refused = await sign_in(browser)
    assert refused.status_code == 403
    assert words in refused.text
    assert "<b>x</b>" not in refused.text
    await assert_nothing_signed_in(console, browser)
    recorded = [event["actor"] for event in await events_named(console, "admin.denied")]
    assert recorded == (["robot"] if user == "robot" else [])  # only principals are recorded


async def test_a_locked_principal_is_not_signed_in(console: Console) -> None:
    console.harness.services.locks.lock("principal", "audrey", author="test", reason="theft")
    await console.harness.reload()
    browser = console.browser()
    refused = await sign_in(browser)
    assert refused.status_code == 303
    assert refused.headers["location"] == "/console/login?notice=locked"
    await assert_nothing_signed_in(console, browser)
    (denied,) = await events_named(console, "admin.denied")
    assert denied["actor"] == "audrey"


# -- refusals: the flow --------------------------------------------------------------------------


async def test_the_provider_saying_no_signs_nobody_in(console: Console, provider: Provider) -> None:
    provider["corp"].authorize_error = "access_denied"
    browser = console.browser()
    refused = await sign_in(browser)
    assert refused.status_code == 403
    assert "the identity provider did not sign you in (access_denied)" in refused.text
    assert provider["corp"].token_calls == 0
    odd = await browser.get("/console/login/oidc/callback?error=%3Cscript%3Ealert(1)%3C/script%3E")
    assert odd.status_code == 403
    assert "(an unknown error)" in odd.text
    assert "alert(1)" not in odd.text
    await assert_nothing_signed_in(console, browser)


async def test_a_state_works_once(console: Console) -> None:
    browser = console.browser()
    back = await to_provider(browser)
    flow = browser.client.cookies[FLOW_COOKIE]
    assert (await browser.get(back)).status_code == 200
    again = console.browser()  # the same answer and cookie, replayed
    again.client.cookies.set(FLOW_COOKIE, flow, path="/console/login/oidc")
    replayed = await again.get(back)
    assert replayed.status_code == 400
    assert "expired or was already used" in replayed.text
    assert COOKIE not in again.client.cookies


async def test_a_state_expires_after_ten_minutes(console: Console) -> None:
    assert FLOW_SECONDS <= 600
    browser = console.browser()
    back = await to_provider(browser)
    console.clock.advance(FLOW_SECONDS + 1)
    late = await browser.get(back)
    assert late.status_code == 400
    assert "expired or was already used" in late.text
    await assert_nothing_signed_in(console, browser)


async def test_an_answer_for_another_browser_is_refused(console: Console) -> None:
    victim, attacker = console.browser(), console.browser()
    await victim.get("/console/login/oidc/corp")  # the victim's flow cookie
    planted = await to_provider(attacker)  # the attacker's own sign-in, sent to the victim
    refused = await victim.get(planted)
    assert refused.status_code == 403
    assert "belongs to another sign-in" in refused.text
    await assert_nothing_signed_in(console, victim)


@pytest.mark.parametrize(
    ("query", "cookie", "words"),
    [
        ("code=abc", True, "has no state"),
        ("code=abc&state=" + "A" * 43, False, "was not started in this browser"),
        ("code=abc&state=short", True, "belongs to another sign-in"),
        ("state=" + "A" * 43, False, "was not started in this browser"),
    ],
)
async def test_malformed_answers_are_refused(
    console: Console, query: str, cookie: bool, words: str
) -> None:
    browser = console.browser()
    if cookie:
        await browser.get("/console/login/oidc/corp")
    refused = await browser.get(f"/console/login/oidc/callback?{query}")
    assert refused.status_code in (400, 403)
    assert words in refused.text
    await assert_nothing_signed_in(console, browser)


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("", "has no code"),
        ("with%20space", "code is malformed"),
        ("x" * 2001, "code is malformed"),
        ("forged-code", "refused the sign-in code (invalid_grant)"),
    ],
)
async def test_bad_codes_are_refused(
    console: Console, caplog: pytest.LogCaptureFixture, code: str, words: str
) -> None:
    browser = console.browser()
    back = await to_provider(browser)
    real = parse_qs(urlsplit(back).query)["code"][0]
    with caplog.at_level(logging.DEBUG):
        refused = await browser.get(back.replace(f"code={real}", f"code={code}"))
    assert refused.status_code in (400, 403)
    assert words in refused.text
    assert "forged-code" not in bastion_log(caplog)
    await assert_nothing_signed_in(console, browser)


async def test_a_slow_token_endpoint_is_a_clear_refusal(
    console: Console,
    provider: Provider,
    monkeypatch: pytest.MonkeyPatch,
    upstream_env: dict[str, str],
) -> None:
    default = oidc.TOKEN_TIMEOUT
    monkeypatch.setattr(oidc, "TOKEN_TIMEOUT", 1.0)
    provider["corp"].token_delay = 8.0
    browser = console.browser()
    started = time.monotonic()
    slow = await sign_in(browser)
    assert time.monotonic() - started < 7.0  # given up at the timeout, not held for the answer
    assert slow.status_code == 503
    assert "token endpoint did not answer in time" in slow.text
    monkeypatch.setattr(oidc, "TOKEN_TIMEOUT", default)
    provider["corp"].token_delay = 0.0
    provider["corp"].token_status = 500
    broken = await sign_in(browser)
    assert broken.status_code == 403
    assert "refused the sign-in code" in broken.text
    provider["corp"].token_status = 200
    provider["corp"].token_padding = 200_000  # read up to 64 KiB, then refused
    huge = await sign_in(browser)
    assert huge.status_code == 503
    assert "answer was too large" in huge.text
    await assert_nothing_signed_in(console, browser)


@pytest.mark.parametrize(
    ("claims", "stranger", "words"),
    [
        ({}, True, "signature does not verify"),
        ({"exp": int(time.time()) - 600}, False, "has expired"),
        ({"iat": int(time.time()) - 3600}, False, "is too old"),
        ({"aud": "someone-else"}, False, "aud does not include this service"),
        ({"nonce": "a" * 43}, False, "nonce does not match"),
        ({"iss": "https://evil.example"}, False, "not a configured federation issuer"),
    ],
)
async def test_bad_id_tokens_are_refused(
    console: Console,
    provider: Provider,
    caplog: pytest.LogCaptureFixture,
    claims: dict[str, object],
    stranger: bool,
    words: str,
) -> None:
    provider["corp"].claims = claims
    provider["corp"].sign_with_stranger = stranger
    browser = console.browser()
    with caplog.at_level(logging.DEBUG):
        refused = await sign_in(browser)
    assert refused.status_code == 403
    assert "the identity provider&#39;s id token was refused" in refused.text
    assert words in refused.text
    logged = bastion_log(caplog)
    assert "console sign-in corp: id token refused" in logged
    assert "eyJ" not in refused.text + logged  # no token, in the page or the log
    assert "Traceback" not in refused.text + caplog.text
    await assert_nothing_signed_in(console, browser)


@pytest.mark.parametrize(
    ("issuer", "status"),
    [("nope", 404), ("plain", 404), ("BAD%20NAME", 404), ("x" * 80, 404)],
)
async def test_unknown_providers_are_refused(console: Console, issuer: str, status: int) -> None:
    browser = console.browser()
    response = await browser.get(f"/console/login/oidc/{issuer}")
    assert response.status_code == status
    assert FLOW_COOKIE not in browser.client.cookies
    assert "BAD NAME" not in response.text


async def test_starts_from_one_address_are_limited_and_store_nothing_over_it(
    console: Console,
) -> None:
    console.guard.attempts = SignInLimits(SignInAttempts(per_minute=6, burst=2))
    with console.harness.services.store.read() as conn:
        before = conn.execute(sa.select(sa.func.count()).select_from(console_login_codes)).scalar()
    browser = console.browser()
    for _ in range(2):
        assert (await browser.get("/console/login/oidc/corp")).status_code == 303
    refused = await browser.get("/console/login/oidc/corp")
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "10"
    assert "too many sign-in attempts from this address: try again in 10 s" in refused.text
    assert "<h1>Too many requests</h1>" in refused.text
    with console.harness.services.store.read() as conn:
        after = conn.execute(sa.select(sa.func.count()).select_from(console_login_codes)).scalar()
    assert after == before + 2  # the two states; the refused start kept none

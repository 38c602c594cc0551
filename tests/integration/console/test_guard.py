"""The console's guard: who gets which page, CSRF on every POST, escaping, bad input, headers.

The route lists come from the mounted console itself, so every page a later change adds is
covered by the anonymous, vendor and CSRF tests without editing them."""

from __future__ import annotations

import orjson
import pytest

from bastion.audit.events import RequestDecided
from bastion.console.guard import COOKIE, CSP, MAX_BODY, MAX_FIELD
from bastion.store import events as event_rows

from .conftest import Console

pytestmark = pytest.mark.anyio

HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
}
PUBLIC = {  # reachable without a full session
    "/console/login",
    "/console/mfa",
    "/console/login/oidc/x",  # sign-in with an identity provider (test_oidc.py)
    "/console/login/oidc/callback",
}


def _assert_headers(response_headers: dict[str, str], where: str) -> None:
    for name, value in HEADERS.items():
        assert response_headers.get(name) == value, (where, name)


async def test_anonymous_visitors_are_sent_to_sign_in_from_every_page(console: Console) -> None:
    browser = console.browser()
    pages = [p for p in console.get_routes() if p not in PUBLIC]
    assert "/console/" in pages
    assert "/console/overview/stream" in pages
    for path in pages:
        response = await browser.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/console/login"), path
    before = await console.audit_names()
    for path in console.post_routes():
        response = await browser.post(path, {"csrf": "x", "code": "x", "reason": "x"})
        assert response.status_code in (303, 403), path
        if response.status_code == 303:
            assert response.headers["location"].startswith("/console/login"), path
    assert await console.audit_names() == before


async def test_a_vendor_principal_is_refused_every_page(console: Console) -> None:
    # A vendor cannot get a link (test_sign_in); a session made for one anyway gets nothing.
    session_id = console.guard.sessions.start("victor", method="link", mfa_pending=False)
    browser = console.browser()
    browser.client.cookies.set(COOKIE, session_id, domain="bastion.test", path="/console")
    await console.settle()
    with console.harness.services.store.read() as conn:
        start = event_rows.size(conn)
    refused = []
    for path in [p for p in console.get_routes() if p not in PUBLIC]:
        response = await browser.get(path)
        assert response.status_code == 403, path
        assert "vendor_control_plane" in response.text, path
        assert "victor" not in response.text.split("<main>")[0], path  # no nav for a vendor
        refused.append(f"GET {path}")
    for path in console.post_routes():
        if path in ("/console/login", "/console/mfa"):
            continue
        response = await browser.post(path, {"reason": "x"})
        assert response.status_code == 403, path
        if path != "/console/logout":  # signing out is the CSRF check's to refuse, not Cedar's
            refused.append(f"POST {path}")
    # Nothing changed, and every refusal is on record once (detector D13 reads them).
    await console.settle()
    with console.harness.services.store.read() as conn:
        rows = event_rows.after(conn, start - 1, limit=1000)
    bodies = [orjson.loads(row.body) for row in rows]
    bodies = [body for body in bodies if not body.get("actor", "").startswith("bastion:")]
    assert [body["target"] for body in bodies] == refused
    assert {body["name"] for body in bodies} == {"admin.denied"}
    assert {body["actor"] for body in bodies} == {"victor"}
    assert "vendor_control_plane" in bodies[0]["reason"]


async def test_a_user_without_a_role_gets_a_403_page_for_what_they_may_not_read(
    console: Console,
) -> None:
    browser = await console.signed_in_plain("alice")
    response = await browser.get("/console/audit")
    assert response.status_code == 403
    assert "may not open this page (audit_read)" in response.text
    assert "Sign out" in response.text  # still signed in: the nav is there


async def test_every_post_refuses_a_missing_or_wrong_csrf_token(console: Console) -> None:
    browser = await console.signed_in("root")
    routes = console.post_routes()
    assert {"/console/logout", "/console/login", "/console/mfa"} <= set(routes)
    before = await console.audit_names()
    wrong = browser.csrf[:-1] + ("1" if browser.csrf.endswith("0") else "0")  # one digit off
    for path in routes:
        for data, headers in (
            ({"reason": "x"}, {}),
            ({"reason": "x", "csrf": ""}, {}),
            ({"reason": "x", "csrf": wrong}, {}),
            ({"reason": "x"}, {"x-csrf-token": "wrong"}),
        ):
            response = await browser.post(path, data, headers=headers)
            assert response.status_code == 403, (path, data, headers)
            assert "token" in response.text, path
            _assert_headers(dict(response.headers), path)
    assert await console.audit_names() == before
    assert (await browser.get("/console/")).status_code == 200  # still signed in


async def test_the_csrf_header_works_for_fetch(console: Console) -> None:
    browser = await console.signed_in("root")
    out = await browser.post("/console/logout", headers={"x-csrf-token": browser.csrf})
    assert out.status_code == 303
    assert (await browser.get("/console/")).status_code == 303


async def test_a_locked_principal_is_signed_out(console: Console) -> None:
    browser = await console.signed_in("audrey")
    services = console.harness.services
    services.locks.lock("principal", "audrey", author="test", reason="suspected theft")
    await console.harness.reload()
    response = await browser.get("/console/")
    assert response.status_code == 303
    assert response.headers["location"] == "/console/login?notice=locked"
    services.locks.unlock("principal", "audrey", author="test", reason="cleared")
    await console.harness.reload()
    assert (await browser.get("/console/")).status_code == 303  # the session stays ended


async def test_markup_in_data_and_input_is_escaped(console: Console) -> None:
    evil = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
    services = console.harness.services
    event = RequestDecided(
        time=console.clock(),
        principal="alice",
        org="lab",
        model="demo-chat",
        compartment="general",
        route="POST /v1/chat/completions",
        allowed=False,
        reasons=(evil,),
        policies=(),
        epoch=1,
        source_ip="127.0.0.1",
        family=None,
        jkt=None,
        status=403,
        outcome="denied",
    )
    with services.store.begin() as conn:
        services.audit.append(conn, [event])
    browser = await console.signed_in("audrey")
    page = await browser.get("/console/")
    assert page.status_code == 200
    assert "<img src=x" not in page.text
    assert "<script>alert" not in page.text
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page.text  # the reasons list
    assert "\\u003cimg" in page.text  # the initial JSON for the script
    field = await browser.post(
        "/console/logout", {"csrf": browser.csrf, "<b>x</b>": "y" * (MAX_FIELD + 1)}
    )
    assert field.status_code == 400
    assert "<b>x</b>" not in field.text
    assert "&lt;b&gt;x&lt;/b&gt;" in field.text
    notice = await console.browser().get("/console/login?notice=<script>alert(3)</script>")
    assert "alert(3)" not in notice.text


async def test_bad_input_gets_a_clear_error(console: Console) -> None:
    browser = console.browser()
    form = await browser.get("/console/login")
    token = form.text.split('name="csrf" value="')[1].split('"')[0]
    cases = {
        "": "enter the login code",
        "not-a-code": "that is not a login code",
        "A" * 43: "unknown, already used or expired",
        "x" * 500: "that is not a login code",
    }
    for code, message in cases.items():
        response = await browser.post("/console/login", {"code": code, "csrf": token})
        assert response.status_code == 400, code
        assert message in response.text, code
    too_long = await browser.post("/console/login", {"code": "x" * (MAX_FIELD + 1), "csrf": token})
    assert too_long.status_code == 400
    assert "longer than" in too_long.text
    huge = await browser.post("/console/login", {"code": "x", "csrf": token, "p": "y" * MAX_BODY})
    assert huge.status_code == 413
    multipart = await browser.post("/console/login", files={"code": ("a", b"x")})
    assert multipart.status_code == 400
    assert "x-www-form-urlencoded" in multipart.text
    not_utf8 = await browser.post(
        "/console/login",
        content=b"code=%ff%fe&csrf=" + token.encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert not_utf8.status_code == 400
    assert "not valid UTF-8" in not_utf8.text
    no_cookie = console.browser()
    refused = await no_cookie.post("/console/login", {"code": "x", "csrf": token})
    assert refused.status_code == 403
    assert "sign-in form token" in refused.text


async def test_a_bad_cookie_is_treated_as_no_session(console: Console) -> None:
    for value in ("garbage", "A" * 43, "x" * 4000, "%00%ff", '"quoted"'):
        browser = console.browser()
        browser.client.cookies.set(COOKIE, value, domain="bastion.test", path="/console")
        response = await browser.get("/console/")
        assert response.status_code == 303, value
        assert response.headers["location"].startswith("/console/login"), value


async def test_every_response_carries_the_security_headers(console: Console) -> None:
    browser = await console.signed_in("audrey")
    for path in ("/console/", "/console/login", "/console/nope", "/console/static/console.js"):
        response = await browser.get(path)
        _assert_headers(dict(response.headers), path)
    assert (await browser.get("/console/nope")).status_code == 404
    assert "there is no console page here" in (await browser.get("/console/nope")).text
    wrong_method = await browser.client.put("/console/")
    assert wrong_method.status_code == 405
    _assert_headers(dict(wrong_method.headers), "PUT")
    anonymous = await console.browser().get("/console/")
    _assert_headers(dict(anonymous.headers), "redirect")


async def test_pages_use_no_inline_script(console: Console) -> None:
    browser = await console.signed_in("audrey")
    for path in ("/console/", "/console/login", "/console/nope"):
        text = (await browser.get(path)).text
        for tag in text.split("<script")[1:]:
            head = tag.split(">", 1)[0]
            assert 'src="/console/static/' in head or 'type="application/json"' in head, path
        assert " on" + "click=" not in text

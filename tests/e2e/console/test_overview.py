"""The console in a real browser against a real ``bastion serve``: sign in with the CLI's
one-time link, watch a live SDK call arrive on the overview without reloading."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.conftest import Deployment

from .conftest import SdkCall, SignIn, login_link

pytestmark = pytest.mark.e2e


def test_sign_in_with_the_cli_link(
    chromium: Browser,
    console_deployment: Deployment,
    sign_in: SignIn,
    shoot: Callable[[Page, str], Path],
) -> None:
    context = chromium.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    try:
        page.goto(console_deployment.url + "/console/")
        expect(page).to_have_url(re.compile(r"/console/login$"))
        expect(page.get_by_role("heading", name="Sign in to the console")).to_be_visible()
        shoot(page, "console-login")
        link = login_link(console_deployment, "audrey")
        page.goto(link)
        expect(page).to_have_url(console_deployment.url + "/console/")
        assert "#code=" not in page.url
        expect(page.locator(".principal")).to_have_text("audrey")
        expect(page.locator("nav a")).to_have_text(["Overview", "Incidents", "Access", "Audit"])
        # the link worked once: a second browser gets the sign-in page and an error
        other = chromium.new_context().new_page()
        other.goto(link)
        expect(other.locator(".error")).to_contain_text("already used or expired")
        other.context.close()
        page.get_by_role("button", name="Sign out").click()
        expect(page).to_have_url(re.compile(r"/console/login\?notice=signed_out$"))
        page.goto(console_deployment.url + "/console/")
        expect(page).to_have_url(re.compile(r"/console/login$"))
    finally:
        context.close()


def _count(page: Page, stat: str) -> int:
    return int(page.locator(f'[data-stat="{stat}"]').inner_text())


def test_a_live_request_appears_on_the_overview(
    page: Page, sdk_call: SdkCall, shoot: Callable[[Page, str], Path]
) -> None:
    expect(page.locator("#live")).to_have_text("live")
    allowed, denied = _count(page, "allowed"), _count(page, "denied")
    page.evaluate("window.__notReloaded = true")
    reply = sdk_call("alice", "demo-chat")
    assert "example upstream" in str(reply)
    with pytest.raises(Exception, match=r"not_granted|403"):
        sdk_call("alice", "cyber-frontier")
    expect(page.locator('[data-stat="allowed"]')).to_have_text(str(allowed + 1))
    expect(page.locator('[data-stat="denied"]')).to_have_text(str(denied + 1))
    expect(page.locator("#reasons")).to_contain_text("not_granted")
    expect(page.locator("#chart rect.ok").first).to_be_visible()
    assert page.evaluate("window.__notReloaded") is True  # updated live, not by a reload
    sdk_call("bob", "demo-chat")
    expect(page.locator('[data-stat="allowed"]')).to_have_text(str(allowed + 2))
    expect(page.locator('[data-stat="checkpoint"]')).not_to_have_text("none")
    page.wait_for_timeout(1000)  # let the change highlight fade before the screenshot
    shoot(page, "console-overview")


def test_no_console_errors_under_the_csp(page: Page) -> None:
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.reload()
    expect(page.locator("#live")).to_have_text("live")
    assert problems == []

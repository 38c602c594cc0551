"""Console end-to-end fixtures: a real ``bastion serve`` (with the stand-in upstream) on
loopback, Debian's Chromium driven by Playwright's sync API, and sign-in through the CLI's
one-time link — exactly what a user does.

For the page tests that come later:

- ``console_deployment`` (session): the running Bastion; ``console_deployment.cli(...)`` runs
  ``bastion ARGS`` against it; principals ``root`` (admin), ``audrey`` (auditor), ``alice``,
  ``bob`` (no role), ``victor`` (vendor) and ``dave`` (no role; locked by the Incidents test)
  have device profiles named after them; loopback is a trusted proxy (``X-Forwarded-For``).
- ``sign_in(page, principal)``: signs ``page`` in through ``bastion console login``.
- ``page`` (function): a fresh browser context signed in as ``audrey``; ``admin_page`` as ``root``.
- ``sdk_call(principal, model)``: one chat completion with the official ``openai`` SDK through
  ``bastion.client``; returns the completion or raises the SDK's error.
- ``shoot(page, name)``: a screenshot into ``docs/img/<name>.png``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

import bastion.client
from bastion.client.profile import load_profile
from tests.conftest import CONFIG
from tests.e2e.conftest import ROOT, Deployment, deployed

CONSOLE_CONFIG = CONFIG.replace(
    "  audrey: {kind: user, org: lab, roles: [auditor]}\n",
    "  audrey: {kind: user, org: lab, roles: [auditor]}\n"
    "  root: {kind: user, org: lab, roles: [admin]}\n"
    # dave: the Incidents test replays his token and locks him (no other test uses him)
    "  dave: {kind: user, org: lab}\n",
)
PRINCIPALS = ("root", "audrey", "alice", "bob", "victor", "dave")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
IMG = ROOT / "docs" / "img"
TIMEOUT_MS = 15_000
expect.set_options(timeout=TIMEOUT_MS)  # expect() keeps its own 5 s default otherwise

SignIn = Callable[[Page, str], None]
SdkCall = Callable[[str, str], object]


@pytest.fixture(scope="package")
def console_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """``bastion serve`` and the stand-in upstream, each a real process on loopback."""
    extra = {
        "BASTION_CHECKPOINT_SECONDS": "1",
        # loopback is a trusted proxy hop, so tests can present other source networks in
        # X-Forwarded-For (the Incidents test replays a token "from elsewhere")
        "BASTION_TRUSTED_PROXIES": "127.0.0.1/32",
    }
    with deployed(tmp_path_factory.mktemp("console"), CONSOLE_CONFIG, extra) as deployment:
        for principal in PRINCIPALS:
            deployment.login(principal, principal)
        yield deployment


@pytest.fixture(scope="package")
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless; never a downloaded browser."""
    executable = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(executable).exists():
        pytest.fail("chromium is not installed: run `make browser`")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def login_link(deployment: Deployment, principal: str) -> str:
    """What a user runs: ``bastion console login --profile NAME``; the link is the last line."""
    result = deployment.cli("console", "login", "--profile", principal)
    link = result.stdout.strip().splitlines()[-1].strip()
    assert link.startswith(deployment.url + "/console/login#code="), result.stdout
    return link


@pytest.fixture(scope="package")
def sign_in(console_deployment: Deployment) -> SignIn:
    def go(page: Page, principal: str) -> None:
        page.goto(login_link(console_deployment, principal))
        page.wait_for_url(console_deployment.url + "/console/**", timeout=TIMEOUT_MS)
        page.wait_for_load_state("domcontentloaded")

    return go


def _page(chromium: Browser, sign_in: SignIn, principal: str) -> Iterator[Page]:
    context = chromium.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        sign_in(page, principal)
        yield page
    finally:
        context.close()


@pytest.fixture
def page(chromium: Browser, sign_in: SignIn) -> Iterator[Page]:
    """A new browser context signed in as audrey (auditor)."""
    yield from _page(chromium, sign_in, "audrey")


@pytest.fixture
def admin_page(chromium: Browser, sign_in: SignIn) -> Iterator[Page]:
    """A new browser context signed in as root (admin)."""
    yield from _page(chromium, sign_in, "root")


@pytest.fixture(scope="package")
def sdk_call(console_deployment: Deployment) -> Iterator[SdkCall]:
    """One chat completion as ``principal`` with the official OpenAI SDK via bastion.client."""
    clients: dict[str, openai.OpenAI] = {}

    def call(principal: str, model: str = "demo-chat") -> object:
        if principal not in clients:
            profile = load_profile(principal, env=console_deployment.env)
            clients[principal] = openai.OpenAI(
                base_url=console_deployment.url + "/v1",
                api_key="unused",
                http_client=bastion.client.http_client(profile, timeout=15),
                max_retries=0,
            )
        return clients[principal].chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hello from the console test"}]
        )

    yield call
    for client in clients.values():
        client.close()


@pytest.fixture(scope="package")
def shoot() -> Callable[[Page, str], Path]:
    def take(page: Page, name: str) -> Path:
        IMG.mkdir(parents=True, exist_ok=True)
        path = IMG / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take

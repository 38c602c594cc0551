"""Sign-in with the identity provider in a real browser: a real ``bastion serve`` with a
federation issuer that has a ``console`` section, the stand-in provider (tests/oidc_provider.py)
under uvicorn, and Debian's Chromium.

The provider is addressed as ``localhost`` and Bastion as ``127.0.0.1``: two different *sites*,
so the browser's way back from the provider is a cross-site navigation, as in production. That
is what the ``SameSite=Lax`` flow cookie and the signed-in page's own refresh (which lets the
``SameSite=Strict`` session cookie be sent) are for; this test fails without either.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.conftest import BASTION, Deployment, free_port, stop, wait_ready
from tests.oidc_provider import Provider

from .conftest import CONSOLE_CONFIG, TIMEOUT_MS

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    served = Provider(("corp",), host="localhost")
    yield served
    served.close()


@pytest.fixture(scope="module")
def oidc_deployment(
    tmp_path_factory: pytest.TempPathFactory, provider: Provider
) -> Iterator[Deployment]:
    """``bastion serve`` with the provider configured (no upstream: only the console is used)."""
    workdir = tmp_path_factory.mktemp("console-oidc")
    config = CONSOLE_CONFIG + "federation:\n  issuers:\n" + provider.issuer_yaml("corp", "[lab]")
    (workdir / "bastion.yaml").write_text(config, encoding="utf-8")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "EXAMPLE_UPSTREAM_KEY": "unused-" + "k" * 20}
    log = workdir / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [*BASTION, "serve", "--host", "127.0.0.1", "--port", str(port), "--public-url", url],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(url + "/readyz", server, log)
        yield Deployment(url, workdir, env, server, log)
    finally:
        stop(server)


def test_sign_in_with_the_identity_provider(
    chromium: Browser,
    oidc_deployment: Deployment,
    provider: Provider,
    shoot: Callable[[Page, str], Path],
) -> None:
    provider.reset()
    provider["corp"].approve_page = True  # the way back starts on the provider's site
    context = chromium.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        page.goto(oidc_deployment.url + "/console/")
        button = page.get_by_role("link", name="Sign in with corp")
        expect(button).to_be_visible()
        shoot(page, "console-login-oidc")
        button.click()
        page.locator("#approve").click()
        expect(page).to_have_url(oidc_deployment.url + "/console/")
        expect(page.locator(".principal")).to_have_text("audrey")
        assert provider["corp"].token_calls == 1
        cookies = {c["name"]: c for c in context.cookies()}
        assert cookies["bastion_console"]["sameSite"] == "Strict"
        assert cookies["bastion_console"]["httpOnly"]
        assert "bastion_console_oidc" not in cookies  # the flow cookie is gone
    finally:
        context.close()
    log = oidc_deployment.log.read_text(errors="replace")
    assert "Traceback" not in log
    assert "eyJ" not in log  # no id token in Bastion's log

"""Console fixtures: Bastion in-process on a settable clock (SQLite and PostgreSQL), DPoP
clients for the CLI's side, and cookie-holding "browsers" for the console's side.

For page helpers: ``console.browser()`` is an anonymous browser; ``await console.signed_in(who)``
is one signed in through the one-time link (and TOTP when ``who`` has a factor, see
``console.enroll_totp``); ``browser.csrf`` is the session's token scraped from the page;
``console.post_routes()`` lists every POST route of the console (the CSRF test covers them all).
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import httpx2
import orjson
import pyotp
import pytest
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route

from bastion.console.guard import ConsoleGuard
from bastion.store import events as event_rows
from bastion.testing import BASE_URL, Harness, running
from tests.conftest import CONFIG

CONSOLE_CONFIG = CONFIG.replace(
    "  audrey: {kind: user, org: lab, roles: [auditor]}\n",
    "  audrey: {kind: user, org: lab, roles: [auditor]}\n"
    "  root: {kind: user, org: lab, roles: [admin]}\n"
    "  robot: {kind: service, org: lab}\n",
)
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Clock:
    """The server's time; tests move it forward."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Browser:
    """A cookie-holding client on the console, following no redirects."""

    def __init__(self, harness: Harness) -> None:
        self.client = httpx.AsyncClient(
            transport=harness.transport, base_url=BASE_URL, timeout=30, follow_redirects=False
        )
        self.csrf = ""

    async def get(self, path: str, **kwargs: object) -> httpx.Response:
        return await self.client.get(path, **kwargs)  # type: ignore[arg-type]

    async def post(
        self, path: str, data: dict[str, str] | None = None, **kwargs: object
    ) -> httpx.Response:
        return await self.client.post(path, data=data or {}, **kwargs)  # type: ignore[arg-type]

    async def open_link(self, path: str) -> httpx.Response:
        """What ``console.js`` does with the link: load the form, post the fragment's code."""
        form = await self.get("/console/login")
        assert form.status_code == 200, form.text
        token = _CSRF.search(form.text)
        assert token is not None
        code = path.split("#code=", 1)[1]
        return await self.post("/console/login", {"code": code, "csrf": token.group(1)})

    async def load_csrf(self, path: str = "/console/") -> str:
        page = await self.get(path)
        match = _CSRF.search(page.text)
        assert match is not None, page.text[:500]
        self.csrf = match.group(1)
        return self.csrf

    async def aclose(self) -> None:
        await self.client.aclose()


class Console:
    def __init__(self, harness: Harness, clock: Clock) -> None:
        self.harness = harness
        self.clock = clock
        self.secrets: dict[str, str] = {}
        self._clients: list[httpx.AsyncClient] = []
        self._browsers: list[Browser] = []

    def _mounted(self) -> Starlette:
        for route in self.harness.app.control.routes:
            if isinstance(route, Mount) and route.path == "/console":
                inner = route.app.app  # type: ignore[attr-defined]  (inside SecurityHeaders)
                assert isinstance(inner, Starlette)
                return inner
        raise AssertionError("the console is not mounted")

    @property
    def guard(self) -> ConsoleGuard:
        guard = self._mounted().state.guard
        assert isinstance(guard, ConsoleGuard)
        return guard

    def post_routes(self) -> list[str]:
        """Every cookie-authenticated POST route of the console (path parameters as 'x')."""
        paths = []
        for route in self.guard_routes():
            posts = isinstance(route, Route) and "POST" in (route.methods or ())
            if posts and route.path != "/login-links":  # type: ignore[attr-defined]
                # (/login-links is the DPoP-authenticated API for the CLI: no cookie)
                paths.append("/console" + re.sub(r"\{[^}]+\}", "x", route.path))  # type: ignore[attr-defined]
        return sorted(set(paths))

    def get_routes(self) -> list[str]:
        """Every GET page of the console (path parameters as 'x'), static files excepted."""
        paths = []
        for route in self.guard_routes():
            if isinstance(route, Route) and "GET" in (route.methods or ()):
                paths.append("/console" + re.sub(r"\{[^}]+\}", "x", route.path))
        return sorted(set(paths))

    def guard_routes(self) -> list[BaseRoute]:
        return list(self._mounted().routes)

    async def dpop(self, principal: str) -> httpx.AsyncClient:
        client = self.harness.client(await self.harness.enroll(principal))
        self._clients.append(client)
        return client

    async def link(self, principal: str) -> str:
        """A one-time sign-in path, asked for as the CLI does (device key, DPoP)."""
        client = await self.dpop(principal)
        response = await client.post("/console/login-links")
        assert response.status_code == 200, response.text
        path = response.json()["path"]
        assert isinstance(path, str)
        return path

    def enroll_totp(self, principal: str) -> None:
        enrollment = self.harness.services.mfa.enroll(principal, author="test")
        self.secrets[principal] = enrollment.secret

    def totp(self, principal: str) -> str:
        return pyotp.TOTP(self.secrets[principal]).at(self.clock())

    def browser(self) -> Browser:
        browser = Browser(self.harness)
        self._browsers.append(browser)
        return browser

    async def signed_in(self, principal: str) -> Browser:
        browser = self.browser()
        response = await browser.open_link(await self.link(principal))
        assert response.status_code == 303, response.text
        if principal in self.secrets:
            assert response.headers["location"] == "/console/mfa"
            await browser.load_csrf("/console/mfa")
            done = await browser.post(
                "/console/mfa", {"code": self.totp(principal), "csrf": browser.csrf}
            )
            assert done.status_code == 303, done.text
        assert response.headers["location"] in ("/console/", "/console/mfa")
        await browser.load_csrf("/console/")
        return browser

    async def signed_in_plain(self, principal: str) -> Browser:
        """Signed in, without loading the overview (for principals it refuses)."""
        browser = self.browser()
        response = await browser.open_link(await self.link(principal))
        assert response.status_code == 303, response.text
        return browser

    async def audit_names(self) -> list[str]:
        """The names of every audit event so far (queued ones written first), but those of
        Bastion's own background work (actor ``bastion:*``, e.g. the review sweep)."""
        await self.settle()
        with self.harness.services.store.read() as conn:
            rows = event_rows.after(conn, -1, limit=100_000)
        return [
            row.name
            for row in rows
            if not str(orjson.loads(row.body).get("actor", "")).startswith("bastion:")
        ]

    async def settle(self) -> None:
        """Write every queued audit event (the gateway records requests asynchronously)."""
        await self.harness.services.recorder.flush()

    async def close(self) -> None:
        for client in self._clients:
            await client.aclose()
        for browser in self._browsers:
            await browser.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def console(
    tmp_path: Path,
    upstream_env: dict[str, str],
    upstream_transport: httpx2.ASGITransport,
    database_url: str,
    clock: Clock,
) -> AsyncIterator[Console]:
    """Bastion in-process with the console config (root: admin, audrey: auditor, robot: a
    service, victor: a vendor), on SQLite and PostgreSQL."""
    async with running(
        CONSOLE_CONFIG,
        tmp_path,
        upstream=upstream_transport,
        env=upstream_env,
        database_url=database_url,
        clock=clock,
    ) as harness:
        console = Console(harness, clock)
        yield console
        await console.close()

"""Helpers for Bastion's tests and for users' own tests of their Bastion configuration.

``Harness`` runs a real Bastion app in-process (real store, real Cedar, real token service) with
its lifespan started, enrolls device keys, and hands out ``httpx`` clients that authenticate with
DPoP exactly as ``bastion.client`` does — through ``httpx.ASGITransport``, no sockets.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import httpx2

from bastion.app import BastionApp, Role, create_app
from bastion.client.auth import DPoPAuth
from bastion.client.profile import Profile
from bastion.client.sdk import SDKDPoPAuth
from bastion.identity.keys import generate_private_jwk, public_jwk
from bastion.settings import Settings

BASE_URL = "http://bastion.test"


@dataclass
class Harness:
    """A running in-process Bastion. Build with :func:`running`."""

    app: BastionApp
    settings: Settings
    transport: httpx.ASGITransport
    profiles: dict[str, Profile] = field(default_factory=dict)
    clock: Callable[[], float] = time.time  # the app's clock, which the clients share

    @property
    def services(self) -> Any:
        return self.app.services

    async def enroll(self, principal: str, alg: str = "EdDSA") -> Profile:
        """Create a device key for ``principal``, enroll it as an admin would (then apply the
        change to the snapshot at once, as the poller would shortly), and return a profile."""
        private = generate_private_jwk(alg)
        self.services.principals.enroll(principal, public_jwk(private), author="test")
        await self.reload()
        profile = Profile(server=BASE_URL, client_id=principal, private_jwk=private)
        self.profiles[principal] = profile
        return profile

    async def reload(self) -> None:
        await self.services.sync.reload()

    def client(
        self,
        profile: Profile | None = None,
        *,
        mfa: Callable[[], str] | None = None,
        **kwargs: Any,
    ) -> httpx.AsyncClient:
        """An ``httpx`` client on the app; with a profile, it authenticates with DPoP (and
        steps up with codes from ``mfa`` when a model asks for a recent MFA login)."""
        auth = DPoPAuth(profile, clock=self.clock, mfa=mfa) if profile is not None else None
        return httpx.AsyncClient(
            transport=self.transport, base_url=BASE_URL, auth=auth, timeout=30, **kwargs
        )

    def sdk_client(
        self, profile: Profile, *, mfa: Callable[[], str] | None = None
    ) -> httpx2.AsyncClient:
        """An ``httpx2`` client (what the official SDKs take) on the app, authenticating as
        ``profile`` exactly as ``bastion.client.async_http_client`` does."""
        return httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=self.app),
            base_url=BASE_URL,
            auth=SDKDPoPAuth(profile, clock=self.clock, mfa=mfa),
            timeout=30,
        )


@contextlib.asynccontextmanager
async def running(
    config_text: str,
    tmp: Path,
    *,
    upstream: httpx2.AsyncBaseTransport | None = None,
    database_url: str = "",
    env: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.time,
    role: Role = "embedded",
    **settings: Any,
) -> AsyncIterator[Harness]:
    """Write the config under ``tmp``, start Bastion in-process, and stop it on exit. ``clock``
    is the server's time (token service and gateway) and its clients'; tests move it forward;
    ``role`` is a cluster role (``create_app``)."""
    config_file = tmp / "bastion.yaml"
    config_file.write_text(config_text, encoding="utf-8")
    base = Settings(
        state_dir=tmp / ".bastion",
        config_file=config_file,
        database_url=database_url,
        public_url=BASE_URL,
    )
    app = create_app(
        replace(base, **settings), upstream_transport=upstream, env=env, clock=clock, role=role
    )
    control = app.control
    async with control.router.lifespan_context(control):
        harness = Harness(app, app.services.settings, httpx.ASGITransport(app=app), clock=clock)
        yield harness

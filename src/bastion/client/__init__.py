"""Bastion's client helper: HTTP clients that authenticate with the device key of a profile.

With the official SDKs (which use ``httpx2``)::

    from openai import OpenAI
    import bastion.client

    client = OpenAI(base_url="https://bastion.example/v1", api_key="unused",
                    http_client=bastion.client.http_client())

and the same ``http_client=`` for ``Anthropic(base_url="https://bastion.example", ...)``;
:func:`async_http_client` for ``AsyncOpenAI`` / ``AsyncAnthropic``. For code that uses ``httpx``
directly there are :func:`httpx_client` and :func:`async_httpx_client`. ``profile`` is a profile
name (see ``bastion login``) or a :class:`Profile`; ``mfa`` is an optional callable returning the
current TOTP code, asked when a model needs a recent MFA login (``bastion login --mfa``);
``id_token`` (and ``actor_token``) are optional callables returning id tokens for token exchange
(docs/federation.md); other keyword arguments go to the client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import httpx2

from .auth import DPoPAuth
from .profile import Profile, load_profile, profile_path, save_profile
from .sdk import SDKDPoPAuth

__all__ = [
    "DPoPAuth",
    "MfaProvider",
    "Profile",
    "SDKDPoPAuth",
    "TokenProvider",
    "async_http_client",
    "async_httpx_client",
    "http_client",
    "httpx_client",
    "load_profile",
    "profile_path",
    "save_profile",
]


MfaProvider = Callable[[], str]
"""Returns the current TOTP code, e.g. ``lambda: input("MFA code: ")``: asked when a model needs
a recent MFA login (step-up, RFC 9470) and the client logs in again with it."""

TokenProvider = Callable[[], str]
"""Returns a fresh OpenID Connect id token from your identity provider: with ``id_token=`` the
client gets Bastion tokens by token exchange (RFC 8693, see docs/federation.md) instead of
``client_credentials``; ``actor_token=`` adds the acting vendor user's id token (delegation)."""


def _profile(profile: str | Profile) -> Profile:
    return profile if isinstance(profile, Profile) else load_profile(profile)


def _auth_options(
    mfa: MfaProvider | None, id_token: TokenProvider | None, actor_token: TokenProvider | None
) -> dict[str, Any]:
    return {"mfa": mfa, "id_token": id_token, "actor_token": actor_token}


def http_client(
    profile: str | Profile = "default",
    *,
    mfa: MfaProvider | None = None,
    id_token: TokenProvider | None = None,
    actor_token: TokenProvider | None = None,
    **kwargs: Any,
) -> httpx2.Client:
    """An ``httpx2.Client`` for ``OpenAI(http_client=...)`` / ``Anthropic(http_client=...)``."""
    chosen = _profile(profile)
    kwargs.setdefault("base_url", chosen.server)
    auth = SDKDPoPAuth(chosen, **_auth_options(mfa, id_token, actor_token))
    return httpx2.Client(auth=auth, **kwargs)


def async_http_client(
    profile: str | Profile = "default",
    *,
    mfa: MfaProvider | None = None,
    id_token: TokenProvider | None = None,
    actor_token: TokenProvider | None = None,
    **kwargs: Any,
) -> httpx2.AsyncClient:
    """An ``httpx2.AsyncClient`` for ``AsyncOpenAI`` / ``AsyncAnthropic``."""
    chosen = _profile(profile)
    kwargs.setdefault("base_url", chosen.server)
    auth = SDKDPoPAuth(chosen, **_auth_options(mfa, id_token, actor_token))
    return httpx2.AsyncClient(auth=auth, **kwargs)


def httpx_client(
    profile: str | Profile = "default",
    *,
    mfa: MfaProvider | None = None,
    id_token: TokenProvider | None = None,
    actor_token: TokenProvider | None = None,
    **kwargs: Any,
) -> httpx.Client:
    """An ``httpx.Client`` sending DPoP-bound requests as ``profile``."""
    chosen = _profile(profile)
    kwargs.setdefault("base_url", chosen.server)
    return httpx.Client(
        auth=DPoPAuth(chosen, **_auth_options(mfa, id_token, actor_token)), **kwargs
    )


def async_httpx_client(
    profile: str | Profile = "default",
    *,
    mfa: MfaProvider | None = None,
    id_token: TokenProvider | None = None,
    actor_token: TokenProvider | None = None,
    **kwargs: Any,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` sending DPoP-bound requests as ``profile``."""
    chosen = _profile(profile)
    kwargs.setdefault("base_url", chosen.server)
    auth = DPoPAuth(chosen, **_auth_options(mfa, id_token, actor_token))
    return httpx.AsyncClient(auth=auth, **kwargs)

"""Bastion's client helper: HTTP clients that authenticate with the device key of a profile.

With the official SDKs (which use ``httpx2``)::

    from openai import OpenAI
    import bastion.client

    client = OpenAI(base_url="https://bastion.example/v1", api_key="unused",
                    http_client=bastion.client.sdk_http_client())

With ``httpx`` directly, :func:`http_client` and :func:`async_http_client`. ``profile`` is a
profile name (see ``bastion login``) or a :class:`Profile`; other keyword arguments go to the
client's constructor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from .auth import DPoPAuth
from .profile import Profile, load_profile, profile_path, save_profile

if TYPE_CHECKING:
    import httpx2

__all__ = [
    "DPoPAuth",
    "Profile",
    "async_http_client",
    "async_sdk_http_client",
    "http_client",
    "load_profile",
    "profile_path",
    "save_profile",
    "sdk_http_client",
]


def _profile(profile: str | Profile) -> Profile:
    return profile if isinstance(profile, Profile) else load_profile(profile)


def http_client(profile: str | Profile = "default", **kwargs: Any) -> httpx.Client:
    """An ``httpx.Client`` sending DPoP-bound requests as ``profile``."""
    chosen = _profile(profile)
    kwargs.setdefault("base_url", chosen.server)
    return httpx.Client(auth=DPoPAuth(chosen), **kwargs)


def async_http_client(profile: str | Profile = "default", **kwargs: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` sending DPoP-bound requests as ``profile``."""
    chosen = _profile(profile)
    kwargs.setdefault("base_url", chosen.server)
    return httpx.AsyncClient(auth=DPoPAuth(chosen), **kwargs)


def sdk_http_client(profile: str | Profile = "default", **kwargs: Any) -> httpx2.Client:
    """An ``httpx2.Client`` for ``OpenAI(http_client=...)`` / ``Anthropic(http_client=...)``."""
    import httpx2

    from .sdk import SDKDPoPAuth

    chosen = _profile(profile)
    kwargs.setdefault("base_url", chosen.server)
    return httpx2.Client(auth=SDKDPoPAuth(chosen), **kwargs)


def async_sdk_http_client(profile: str | Profile = "default", **kwargs: Any) -> httpx2.AsyncClient:
    """An ``httpx2.AsyncClient`` for ``AsyncOpenAI`` / ``AsyncAnthropic``."""
    import httpx2

    from .sdk import SDKDPoPAuth

    chosen = _profile(profile)
    kwargs.setdefault("base_url", chosen.server)
    return httpx2.AsyncClient(auth=SDKDPoPAuth(chosen), **kwargs)

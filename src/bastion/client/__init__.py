"""Bastion's client helper: HTTP clients that authenticate with the device key of a profile.

With the official SDKs (which use ``httpx2``)::

    from openai import OpenAI
    import bastion.client

    client = OpenAI(base_url="https://bastion.example/v1", api_key="unused",
                    http_client=bastion.client.http_client())

and the same ``http_client=`` for ``Anthropic(base_url="https://bastion.example", ...)``;
:func:`async_http_client` for ``AsyncOpenAI`` / ``AsyncAnthropic``. For code that uses ``httpx``
directly there are :func:`httpx_client` and :func:`async_httpx_client`. ``profile`` is a profile
name (see ``bastion login``) or a :class:`Profile`; other keyword arguments go to the client.
"""

from __future__ import annotations

from typing import Any

import httpx
import httpx2

from .auth import DPoPAuth
from .profile import Profile, load_profile, profile_path, save_profile
from .sdk import SDKDPoPAuth

__all__ = [
    "DPoPAuth",
    "Profile",
    "SDKDPoPAuth",
    "async_http_client",
    "async_httpx_client",
    "http_client",
    "httpx_client",
    "load_profile",
    "profile_path",
    "save_profile",
]


def _profile(profile: str | Profile) -> Profile:
    return profile if isinstance(profile, Profile) else load_profile(profile)


def http_client(profile: str | Profile = "default", **kwargs: Any) -> httpx2.Client:
    """An ``httpx2.Client`` for ``OpenAI(http_client=...)`` / ``Anthropic(http_client=...)``."""
    chosen = _profile(profile)
    kwargs.setdefault("base_url", chosen.server)
    return httpx2.Client(auth=SDKDPoPAuth(chosen), **kwargs)


def async_http_client(profile: str | Profile = "default", **kwargs: Any) -> httpx2.AsyncClient:
    """An ``httpx2.AsyncClient`` for ``AsyncOpenAI`` / ``AsyncAnthropic``."""
    chosen = _profile(profile)
    kwargs.setdefault("base_url", chosen.server)
    return httpx2.AsyncClient(auth=SDKDPoPAuth(chosen), **kwargs)


def httpx_client(profile: str | Profile = "default", **kwargs: Any) -> httpx.Client:
    """An ``httpx.Client`` sending DPoP-bound requests as ``profile``."""
    chosen = _profile(profile)
    kwargs.setdefault("base_url", chosen.server)
    return httpx.Client(auth=DPoPAuth(chosen), **kwargs)


def async_httpx_client(profile: str | Profile = "default", **kwargs: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` sending DPoP-bound requests as ``profile``."""
    chosen = _profile(profile)
    kwargs.setdefault("base_url", chosen.server)
    return httpx.AsyncClient(auth=DPoPAuth(chosen), **kwargs)

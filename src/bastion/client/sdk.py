"""The DPoP flow bound to ``httpx2``, the HTTP library of the official SDKs (openai 3, anthropic 2).

Those SDKs accept only ``httpx2`` clients (anthropic checks the type), so an ``httpx`` client
would be refused; this module gives them the same flow as :class:`~.auth.DPoPAuth`.
"""

from __future__ import annotations

import httpx2

from .auth import DPoPFlow


class SDKDPoPAuth(DPoPFlow[httpx2.Request, httpx2.Response], httpx2.Auth):
    """``httpx2.Auth`` for a Bastion profile: ``httpx2.Client(auth=SDKDPoPAuth(profile))``."""

    def _new_request(
        self, url: str, form: dict[str, str], headers: dict[str, str]
    ) -> httpx2.Request:
        return httpx2.Request("POST", url, data=form, headers=headers)

"""Bastion's signed assertion on every forwarded request (threat T10: reaching the model directly).

A stolen upstream key, or a network path around the gateway, would let someone call the model
server without passing a single Bastion control. So every request Bastion forwards carries
``Bastion-Assertion: <JWT>``, and ``bastion guard`` (``bastion.guard``) beside the model server
refuses anything without a valid one. The assertion is a compact JWS signed with the issuer key
(Ed25519, the key whose JWKS Bastion already publishes), header ``typ: bastion-upstream+jwt``, and
is bound to the one request it travels with:

- ``iss`` Bastion's URL, ``aud`` the upstream (``assertion_audience`` or its ``base_url``);
- ``iat``, ``exp`` = ``iat`` + 60 s, a random ``jti`` (the guard accepts each once);
- ``htm`` the method and ``htu`` the path (and query) exactly as sent upstream;
- ``bsh`` base64url SHA-256 of the exact body bytes sent (after any rewrite by the gateway);
- ``sub`` the principal and ``txn`` the audit event id, so upstream logs join Bastion's audit log.

Signing costs about 45 µs (38 of them the Ed25519 signature itself), measured with ``timeit``
on a 2 KB body; the project's own ``identity.jws`` (``cryptography`` + ``orjson``) is used
rather than joserfc, which took about 68 µs for the same work.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable

from bastion.identity.jws import b64url_encode
from bastion.identity.keys import IssuerKey
from bastion.policy.snapshot import ModelRoute

HEADER = "bastion-assertion"
TYP = "bastion-upstream+jwt"
TTL = 60


def body_hash(body: bytes) -> str:
    """The ``bsh`` claim: base64url (no padding) of the SHA-256 of the body bytes."""
    return b64url_encode(hashlib.sha256(body).digest())


def audience_of(route: ModelRoute) -> str:
    """The upstream's ``aud``: its configured ``assertion_audience``, else its base URL."""
    return route.audience or route.base_url


class UpstreamAssertions:
    """Signs one short-lived assertion per forwarded request; built once in ``create_app``."""

    def __init__(
        self,
        key: IssuerKey,
        issuer: str,
        clock: Callable[[], float] = time.time,
        ttl: int = TTL,
    ) -> None:
        self._key = key
        self._issuer = issuer
        self._clock = clock
        self._ttl = ttl

    def sign(
        self,
        route: ModelRoute,
        method: str,
        target: str,
        body: bytes,
        *,
        subject: str | None = None,
        event_id: str | None = None,
    ) -> str:
        """The assertion for ``method target`` with exactly ``body`` to ``route``'s upstream;
        ``target`` is the request path (and ``?query``) as it goes on the wire."""
        now = int(self._clock())
        claims: dict[str, object] = {
            "iss": self._issuer,
            "aud": audience_of(route),
            "iat": now,
            "exp": now + self._ttl,
            "jti": secrets.token_urlsafe(16),
            "htm": method,
            "htu": target,
            "bsh": body_hash(body),
        }
        if subject is not None:
            claims["sub"] = subject
        if event_id is not None:
            claims["txn"] = event_id
        return self._key.sign_jwt({"typ": TYP}, claims)

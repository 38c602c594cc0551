"""Checking Bastion's assertion on a request that reached the model server (threat T10).

An assertion (``gateway/assertion.py``) is accepted only if every check passes, in this order;
the first that fails is the refusal's ``code``:

1. ``missing_assertion``: no ``Bastion-Assertion`` header;
2. ``malformed_assertion``: not one compact JWS of at most 8 KiB with a ``kid``, or its
   payload is not a JSON object;
3. ``unsupported_alg``: ``alg`` is not ``EdDSA`` (``none``, HMAC, RSA ... are never tried), or
   the header has ``crit`` extensions;
4. ``wrong_type``: ``typ`` is not ``bastion-upstream+jwt`` (an access token is not an assertion);
5. ``unknown_key``: no key with that ``kid`` in Bastion's JWKS, even after reloading it;
6. ``bad_signature``: the signature does not verify with that key;
7. ``invalid_claims``: a claim is missing or of the wrong type, or it lives over 5 minutes;
8. ``wrong_issuer``, ``wrong_audience``: ``iss`` is not Bastion, ``aud`` is not this upstream;
9. ``expired``, ``not_yet_valid``: outside ``iat`` .. ``exp`` with 30 s of clock skew;
10. ``method_mismatch``, ``path_mismatch``, ``body_mismatch``: ``htm``, ``htu`` or ``bsh`` do
    not match the method, path (and query) and exact body bytes of this request;
11. ``replayed``: its ``jti`` was already accepted (checked last, so that only a request that
    passes everything else uses the assertion up).

Signature checks use the project's own JWS code (``identity.jws``): one algorithm, never taken
from the token's say-so. Messages name the failed check, never the token or the body.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bastion.errors import AssertionRefused
from bastion.gateway.assertion import TYP, body_hash
from bastion.identity import jws
from bastion.identity.replay import MemoryReplayCache, ReplayCache

from .keys import MAX_KID, GuardKeys

MAX_ASSERTION = 8 * 1024
MAX_LIFETIME = 300
CLOCK_SKEW = 30
_STRING_CLAIMS = ("iss", "htm", "htu", "bsh", "jti")


class Refusal(StrEnum):
    """Why the guard refused a request: the ``code`` of its 401 answer."""

    MISSING = "missing_assertion"
    MALFORMED = "malformed_assertion"
    UNSUPPORTED_ALG = "unsupported_alg"
    WRONG_TYPE = "wrong_type"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    INVALID_CLAIMS = "invalid_claims"
    WRONG_ISSUER = "wrong_issuer"
    WRONG_AUDIENCE = "wrong_audience"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    METHOD_MISMATCH = "method_mismatch"
    PATH_MISMATCH = "path_mismatch"
    BODY_MISMATCH = "body_mismatch"
    REPLAYED = "replayed"


def refuse(refusal: Refusal, message: str) -> AssertionRefused:
    return AssertionRefused(str(refusal), message)


@dataclass(frozen=True, slots=True)
class VerifiedAssertion:
    """What an accepted assertion says: who Bastion let through and its audit event."""

    issuer: str
    audience: str
    subject: str | None
    event_id: str | None
    jti: str
    expires: int


class AssertionVerifier:
    """Verifies assertions for one upstream: Bastion at ``issuer``, this upstream named by any
    of ``audiences``. ``replay`` remembers accepted ``jti`` values (in memory by default)."""

    def __init__(
        self,
        keys: GuardKeys,
        *,
        issuer: str,
        audiences: Collection[str],
        replay: ReplayCache | None = None,
        clock: Callable[[], float] = time.time,
        clock_skew: int = CLOCK_SKEW,
    ) -> None:
        if not issuer:
            raise ValueError("the guard needs Bastion's issuer URL")
        if not audiences or not all(audiences):
            raise ValueError("the guard needs at least one audience")
        self._keys = keys
        self._issuer = issuer
        self._audiences = frozenset(audiences)
        self._replay = replay if replay is not None else MemoryReplayCache(max_entries=1_000_000)
        self._clock = clock
        self._skew = clock_skew

    async def verify(
        self, token: str | None, method: str, target: str, body: bytes
    ) -> VerifiedAssertion:
        """Check ``token`` against the request ``method target`` with ``body``; raise
        :class:`AssertionRefused` naming the first check that fails."""
        if token is None:
            raise refuse(Refusal.MISSING, "this upstream only accepts requests sent by Bastion")
        parts = _parse(token)
        key = await self._keys.get(parts.header["kid"])
        if key is None:
            raise refuse(Refusal.UNKNOWN_KEY, "the assertion's key is not one of Bastion's keys")
        if not jws.verify(key, "EdDSA", parts.signing_input, parts.signature):
            raise refuse(Refusal.BAD_SIGNATURE, "the assertion's signature does not verify")
        try:
            claims = jws.json_object(parts.payload)
        except ValueError:
            raise refuse(
                Refusal.MALFORMED, "the assertion's payload is not a JSON object"
            ) from None
        now = self._clock()
        self._check_claims(claims, now)
        _check_binding(claims, method, target, body)
        ttl = max(claims["exp"] + self._skew - now, 1.0)
        if not self._replay.add(f"{claims['iss']} {claims['jti']}", ttl, now):
            raise refuse(Refusal.REPLAYED, "this assertion was already used")
        subject, event_id = claims.get("sub"), claims.get("txn")
        return VerifiedAssertion(
            issuer=claims["iss"],
            audience=claims["aud"],
            subject=subject if isinstance(subject, str) else None,
            event_id=event_id if isinstance(event_id, str) else None,
            jti=claims["jti"],
            expires=claims["exp"],
        )

    def _check_claims(self, claims: dict[str, Any], now: float) -> None:
        for name in _STRING_CLAIMS:
            value = claims.get(name)
            if not isinstance(value, str) or not value or len(value) > MAX_ASSERTION:
                raise refuse(
                    Refusal.INVALID_CLAIMS, f"the assertion's {name} is missing or invalid"
                )
        for name in ("iat", "exp"):
            value = claims.get(name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise refuse(Refusal.INVALID_CLAIMS, f"the assertion's {name} is not an integer")
        if not 0 < claims["exp"] - claims["iat"] <= MAX_LIFETIME:
            raise refuse(Refusal.INVALID_CLAIMS, "the assertion's lifetime is not 1-300 seconds")
        if claims["iss"] != self._issuer:
            raise refuse(Refusal.WRONG_ISSUER, "the assertion was not issued by this Bastion")
        aud = claims.get("aud")
        if not isinstance(aud, str) or aud not in self._audiences:
            raise refuse(Refusal.WRONG_AUDIENCE, "the assertion is for another upstream")
        if claims["exp"] <= now - self._skew:
            raise refuse(Refusal.EXPIRED, "the assertion has expired")
        if claims["iat"] > now + self._skew:
            raise refuse(Refusal.NOT_YET_VALID, "the assertion was issued in the future")


def _parse(token: str) -> jws.Compact:
    if len(token) > MAX_ASSERTION:
        raise refuse(Refusal.MALFORMED, f"the assertion is larger than {MAX_ASSERTION} bytes")
    try:
        parts = jws.parse(token)
    except ValueError:
        raise refuse(Refusal.MALFORMED, "the assertion is not a compact JWS") from None
    header = parts.header
    if header.get("alg") != "EdDSA" or "crit" in header:
        raise refuse(Refusal.UNSUPPORTED_ALG, "the assertion must be signed with EdDSA")
    if header.get("typ") != TYP:
        raise refuse(Refusal.WRONG_TYPE, f"the assertion's typ must be {TYP}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID:
        raise refuse(Refusal.MALFORMED, "the assertion's header has no kid")
    return parts


def _check_binding(claims: dict[str, Any], method: str, target: str, body: bytes) -> None:
    if claims["htm"] != method:
        raise refuse(Refusal.METHOD_MISMATCH, "the assertion was issued for another method")
    if claims["htu"] != target:
        raise refuse(Refusal.PATH_MISMATCH, "the assertion was issued for another path")
    if not hmac.compare_digest(claims["bsh"].encode(), body_hash(body).encode()):
        raise refuse(Refusal.BODY_MISMATCH, "the request body is not the one Bastion sent")

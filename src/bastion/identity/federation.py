"""Verifying OpenID Connect id tokens from the configured external issuers (``federation`` in
bastion.yaml), for token exchange at ``/oauth/token`` (RFC 8693).

The id token's ``iss`` picks the issuer configuration; nothing else in the token is trusted until
its signature verifies with a key from that issuer's JWKS, with an algorithm from the issuer's
allow-list (never the token's say-so). Then ``aud``, ``exp``, ``iat`` (and the issuer's maximum
token age), ``nbf`` and, when the client sent one, ``nonce`` are checked. The JWKS is cached and
fetched again at most every ``min_refetch`` seconds when a token names an unknown key (rotation).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from bastion.config.federation import ExternalIssuer
from bastion.errors import InvalidGrant, Unavailable
from bastion.tls import client_context

from . import jws

log = logging.getLogger("bastion.identity")
MAX_ID_TOKEN = 16 * 1024
MAX_JWKS_BYTES = 256 * 1024
CLOCK_SKEW = 30


@dataclass(frozen=True, slots=True)
class ExternalIdentity:
    """Who a verified id token says the user is, mapped to a Bastion principal name."""

    issuer: str  # the issuer's name in bastion.yaml
    principal: str
    subject: str  # the id token's ``sub``
    mfa_at: int | None  # when the user passed MFA at the provider, if the token says so
    amr: tuple[str, ...]
    acr: str | None


class JWKSCache:
    """Each issuer's key set: read from a file (reloaded when it changes) or fetched over HTTP."""

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        ttl: float = 300.0,
        min_refetch: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transport = transport
        self._ttl = ttl
        self._min_refetch = min_refetch
        self._clock = clock
        self._cache: dict[str, tuple[float, KeySet]] = {}

    async def keys(self, issuer: ExternalIssuer, *, stale: bool = False) -> KeySet:
        """The key set; ``stale`` asks for a fresh copy (a token named an unknown key)."""
        source = issuer.jwks_uri or f"file:{issuer.jwks_file}"
        now = self._clock()
        cached = self._cache.get(source)
        if cached is not None:
            age = now - cached[0]
            if age < (self._min_refetch if stale else self._ttl):
                return cached[1]
        try:
            raw = await self._load(issuer)
            keys = KeySet.import_key_set(_key_set(raw))
        except Unavailable:
            if cached is not None:  # keep serving the last good keys through an outage
                return cached[1]
            raise
        except (ValueError, TypeError, JoseError) as exc:
            log.warning("issuer JWKS at %s is unusable: %s", source, type(exc).__name__)
            if cached is not None:
                return cached[1]
            raise Unavailable("the identity provider's signing keys are unusable") from None
        self._cache[source] = (now, keys)
        return keys

    async def _load(self, issuer: ExternalIssuer) -> bytes:
        if issuer.jwks_file is not None:
            path = Path(issuer.jwks_file)
            try:
                data = await anyio.to_thread.run_sync(path.read_bytes)
            except OSError:
                raise Unavailable("the identity provider's key file cannot be read") from None
            return data[: MAX_JWKS_BYTES + 1]
        assert issuer.jwks_uri is not None
        try:
            async with httpx.AsyncClient(
                transport=self._transport, timeout=5.0, verify=client_context()
            ) as client:
                response = await client.get(issuer.jwks_uri, headers={"accept": "application/json"})
        except httpx.HTTPError:
            log.warning("could not fetch the JWKS of %s", issuer.issuer)
            raise Unavailable("the identity provider's keys cannot be fetched") from None
        if response.status_code != 200:
            log.warning("JWKS of %s answered %d", issuer.issuer, response.status_code)
            raise Unavailable("the identity provider's keys cannot be fetched")
        return response.content[: MAX_JWKS_BYTES + 1]


def _key_set(raw: bytes) -> Any:
    if len(raw) > MAX_JWKS_BYTES:
        raise ValueError("JWKS too large")
    document = json.loads(raw)
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS")
    # Public keys only: a JWKS that carries private material is a provider mistake; drop them.
    public = [
        key
        for key in document["keys"]
        if isinstance(key, dict) and not ({"d", "p", "q", "k"} & key.keys())
    ]
    return {"keys": public}


def _issuer_of(token: str, issuers: Mapping[str, ExternalIssuer]) -> tuple[str, ExternalIssuer]:
    """The configured issuer the unverified ``iss`` names (only used to pick the keys)."""
    try:
        parts = jws.parse(token)
        payload = jws.json_object(parts.payload)
    except (jws.MalformedJWS, jws.MalformedHeader, ValueError):
        raise InvalidGrant("the id token is not a signed JWT") from None
    iss = payload.get("iss")
    for name, issuer in issuers.items():
        if iss == issuer.issuer:
            return name, issuer
    raise InvalidGrant("the id token's issuer is not a configured federation issuer")


class FederationVerifier:
    def __init__(self, jwks: JWKSCache) -> None:
        self._jwks = jwks

    async def verify(
        self,
        token: str,
        issuers: Mapping[str, ExternalIssuer],
        *,
        nonce: str | None,
        now: float,
    ) -> ExternalIdentity:
        """The identity a valid id token asserts; ``InvalidGrant`` saying what is wrong."""
        if len(token) > MAX_ID_TOKEN:
            raise InvalidGrant("the id token is too large")
        name, issuer = _issuer_of(token, issuers)
        claims = await self._verified_claims(token, issuer)
        _check_claims(claims, issuer, nonce, now)
        principal = claims.get(issuer.principal_claim)
        if not isinstance(principal, str) or not principal:
            raise InvalidGrant(f"the id token has no {issuer.principal_claim!r} claim")
        amr = claims.get("amr", [])
        if not isinstance(amr, list) or not all(isinstance(v, str) for v in amr):
            raise InvalidGrant("the id token's amr claim is not a list of strings")
        acr = claims.get("acr")
        auth_time = claims.get("auth_time", claims["iat"])
        if not isinstance(auth_time, int) or isinstance(auth_time, bool):
            raise InvalidGrant("the id token's auth_time is not an integer")
        mfa = bool(set(amr) & set(issuer.mfa_amr))
        return ExternalIdentity(
            issuer=name,
            principal=principal[:200],
            subject=str(claims["sub"])[:200],
            mfa_at=auth_time if mfa else None,
            amr=tuple(v[:40] for v in amr[:10]),
            acr=acr[:200] if isinstance(acr, str) else None,
        )

    async def _verified_claims(self, token: str, issuer: ExternalIssuer) -> dict[str, Any]:
        for stale in (False, True):
            keys = await self._jwks.keys(issuer, stale=stale)
            try:
                decoded = jwt.decode(token, keys, algorithms=list(issuer.algorithms))
            except JoseError as exc:
                if stale or not _unknown_key(exc):
                    raise InvalidGrant(
                        "the id token's signature does not verify with the issuer's keys "
                        "(or its algorithm is not allowed)"
                    ) from None
                continue
            except (ValueError, TypeError):
                raise InvalidGrant("the id token is malformed") from None
            return dict(decoded.claims)
        raise InvalidGrant("the id token is signed with an unknown key")  # pragma: no cover


def _unknown_key(exc: JoseError) -> bool:
    return isinstance(exc, InvalidKeyIdError)


def _check_claims(
    claims: Mapping[str, Any], issuer: ExternalIssuer, nonce: str | None, now: float
) -> None:
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if issuer.audience not in audiences:
        raise InvalidGrant("the id token's aud does not include this service")
    azp = claims.get("azp")
    if len(audiences) > 1 and azp is not None and azp != issuer.audience:
        raise InvalidGrant("the id token's azp is another client")
    for name in ("exp", "iat"):
        value = claims.get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidGrant(f"the id token's {name} is missing or not an integer")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise InvalidGrant("the id token has no sub")
    if claims["exp"] <= now - CLOCK_SKEW:
        raise InvalidGrant("the id token has expired")
    if claims["iat"] > now + CLOCK_SKEW:
        raise InvalidGrant("the id token was issued in the future")
    if now - claims["iat"] > issuer.max_token_age_seconds:
        raise InvalidGrant("the id token is too old; sign in at the identity provider again")
    nbf = claims.get("nbf")
    if nbf is not None and (not isinstance(nbf, int) or nbf > now + CLOCK_SKEW):
        raise InvalidGrant("the id token is not valid yet")
    if nonce is not None and claims.get("nonce") != nonce:
        raise InvalidGrant("the id token's nonce does not match")

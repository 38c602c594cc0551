"""RFC 9068 access tokens: short-lived (at most 15 minutes), Ed25519-signed, DPoP-bound.

Bastion is both the issuer and the only verifier of these tokens, so verification is strict: one
algorithm (EdDSA, never taken from the token's say-so), one issuer, one audience, and a ``cnf.jkt``
binding is mandatory (a stolen token is useless without the device key, RFC 9449). A verified
token's claims are cached by the token string, so a client that reuses its token for many
requests pays the signature check once; expiry is still checked on every call.
"""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bastion.errors import InvalidToken

from . import jws
from .keys import IssuerKey

MAX_TTL = 900
MAX_TOKEN_SIZE = 8 * 1024
TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})
_STRING_CLAIMS = ("sub", "client_id", "jti", "org", "fam")


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """What a verified access token says; ``aud`` is the audience it was verified for."""

    sub: str
    client_id: str
    org: str
    jkt: str
    family: str
    jti: str
    iat: int
    exp: int
    iss: str
    aud: str
    # Delegation (RFC 8693 ``act``): the acting principals, innermost (the one holding the device
    # key and making the calls) first; empty when the subject acts for itself.
    act: tuple[str, ...] = ()
    # Authentication context: when MFA last happened (``auth_time``), ``amr`` and ``acr``.
    auth_time: int | None = None
    amr: tuple[str, ...] = ()
    acr: str | None = None


MAX_ACT_DEPTH = 4


def _act_claim(actors: tuple[str, ...]) -> dict[str, Any] | None:
    """``("victor",)`` -> ``{"sub": "victor"}``; earlier actors nest as ``act`` (RFC 8693 §4.1)."""
    claim: dict[str, Any] | None = None
    for actor in reversed(actors):
        claim = {"sub": actor} if claim is None else {"sub": actor, "act": claim}
    return claim


def _actors(payload: dict[str, Any]) -> tuple[str, ...]:
    actors: list[str] = []
    act = payload.get("act")
    while act is not None:
        sub = act.get("sub") if isinstance(act, dict) else None
        if not isinstance(sub, str) or not sub or len(actors) >= MAX_ACT_DEPTH:
            raise InvalidToken("access token act claim is malformed")
        actors.append(sub)
        act = act.get("act")
    return tuple(actors)


class AccessTokenCodec:
    """Issues and verifies Bastion's access tokens for one issuer and one audience."""

    def __init__(
        self,
        issuer_key: IssuerKey,
        issuer: str,
        audience: str,
        clock_skew: int = 5,
        cache_size: int = 65536,
    ) -> None:
        self._issuer_key = issuer_key
        self._verify_keys: dict[str, Ed25519PublicKey] = {issuer_key.kid: issuer_key.verify_key}
        self._issuer = issuer
        self._audience = audience
        self._clock_skew = clock_skew
        # Exceptions are not cached, so only tokens that verified occupy the cache.
        self._verified = functools.lru_cache(maxsize=cache_size)(self._verify_signed)

    def issue(
        self,
        *,
        sub: str,
        client_id: str,
        org: str,
        jkt: str,
        family: str,
        ttl: int,
        now: float,
        act: tuple[str, ...] = (),
        auth_time: int | None = None,
        amr: tuple[str, ...] = (),
        acr: str | None = None,
    ) -> tuple[str, AccessClaims]:
        """A signed token and its claims. ``ttl`` above 15 minutes is refused (threat T1)."""
        if not 0 < ttl <= MAX_TTL:
            raise ValueError(f"access token ttl must be between 1 and {MAX_TTL} seconds")
        iat = int(now)
        claims = AccessClaims(
            sub=sub,
            client_id=client_id,
            org=org,
            jkt=jkt,
            family=family,
            jti=secrets.token_urlsafe(16),
            iat=iat,
            exp=iat + ttl,
            iss=self._issuer,
            aud=self._audience,
            act=act,
            auth_time=auth_time,
            amr=amr,
            acr=acr,
        )
        payload: dict[str, Any] = {
            "iss": claims.iss,
            "sub": claims.sub,
            "aud": claims.aud,
            "client_id": claims.client_id,
            "iat": claims.iat,
            "exp": claims.exp,
            "jti": claims.jti,
            "cnf": {"jkt": claims.jkt},
            "org": claims.org,
            "fam": claims.family,
        }
        if act:
            payload["act"] = _act_claim(act)
        if auth_time is not None:
            payload["auth_time"] = auth_time
        if amr:
            payload["amr"] = list(amr)
        if acr is not None:
            payload["acr"] = acr
        return self._issuer_key.sign_jwt({"typ": "at+jwt"}, payload), claims

    def verify(self, token: str, now: float) -> AccessClaims:
        """The claims of a valid token; ``InvalidToken`` saying what is wrong otherwise."""
        if len(token) > MAX_TOKEN_SIZE:
            raise InvalidToken("access token is too large")
        claims = self._verified(token)
        if claims.exp <= now - self._clock_skew:
            raise InvalidToken("access token has expired")
        if claims.iat > now + self._clock_skew:
            raise InvalidToken("access token iat is in the future")
        return claims

    def _verify_signed(self, token: str) -> AccessClaims:
        """Every check that does not depend on the time (cached per token by ``verify``)."""
        try:
            parts = jws.parse(token)
        except jws.MalformedHeader:
            raise InvalidToken("access token header is not a JSON object") from None
        except jws.MalformedJWS:
            raise InvalidToken("access token is not a JWS (three base64url parts)") from None
        header = parts.header
        if header.get("alg") != "EdDSA":
            raise InvalidToken("access token alg must be EdDSA")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in TOKEN_TYPES:
            raise InvalidToken("access token typ must be at+jwt")
        kid = header.get("kid")
        key = self._verify_keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidToken("access token kid is unknown")
        if not jws.verify(key, "EdDSA", parts.signing_input, parts.signature):
            raise InvalidToken("access token signature is invalid")
        try:
            payload = jws.json_object(parts.payload)
        except ValueError:
            raise InvalidToken("access token payload is not a JSON object") from None
        return self._claims(payload)

    def _claims(self, payload: dict[str, Any]) -> AccessClaims:
        if payload.get("iss") != self._issuer:
            raise InvalidToken("access token iss is not this issuer")
        aud = payload.get("aud")
        if not (aud == self._audience or (isinstance(aud, list) and self._audience in aud)):
            raise InvalidToken("access token aud does not include this audience")
        for name in ("iat", "exp"):
            value = payload.get(name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidToken(f"access token {name} is missing or not an integer")
        for name in _STRING_CLAIMS:
            if not isinstance(payload.get(name), str) or not payload[name]:
                raise InvalidToken(f"access token {name} is missing")
        cnf = payload.get("cnf")
        jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
        if not isinstance(jkt, str) or not jkt:
            raise InvalidToken("access token has no cnf.jkt: only DPoP-bound tokens are accepted")
        auth_time = payload.get("auth_time")
        if auth_time is not None and (
            not isinstance(auth_time, int) or isinstance(auth_time, bool)
        ):
            raise InvalidToken("access token auth_time is not an integer")
        amr = payload.get("amr", [])
        if not isinstance(amr, list) or not all(isinstance(value, str) for value in amr):
            raise InvalidToken("access token amr is not a list of strings")
        acr = payload.get("acr")
        if acr is not None and not isinstance(acr, str):
            raise InvalidToken("access token acr is not a string")
        return AccessClaims(
            sub=payload["sub"],
            client_id=payload["client_id"],
            org=payload["org"],
            jkt=jkt,
            family=payload["fam"],
            jti=payload["jti"],
            iat=payload["iat"],
            exp=payload["exp"],
            iss=self._issuer,
            aud=self._audience,
            act=_actors(payload),
            auth_time=auth_time,
            amr=tuple(amr),
            acr=acr,
        )

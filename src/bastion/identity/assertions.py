"""RFC 7523 ``private_key_jwt`` client assertions: how devices and services prove who they are.

A client signs a short JWT with its enrolled device key (``kid`` = the key's thumbprint) naming
itself (``iss`` = ``sub`` = client_id) and the token endpoint (``aud``). There is no shared
secret to steal from a contractor's environment: the key never leaves the device. Each assertion
works once (its ``jti`` goes into a replay cache until it expires) and lives at most a few
minutes, so an intercepted one is worth little.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bastion.errors import InvalidClient

from . import jws
from .keys import SigningKey, jwk_alg, load_public_key, thumbprint
from .replay import ReplayCache

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_SIZE = 8192
MAX_JTI_LENGTH = 256

#: ``lookup(client_id, kid)`` returns the enrolled public JWK, or None.
KeyLookup = Callable[[str, str], Mapping[str, Any] | None]


@dataclass(frozen=True, slots=True)
class ClientAssertion:
    """A verified assertion: who the client is and which of its keys signed."""

    client_id: str
    jkt: str
    jti: str


def make_client_assertion(
    private_jwk: Mapping[str, Any] | SigningKey,
    *,
    client_id: str,
    audience: str,
    now: float | None = None,
    ttl: int = 60,
) -> str:
    """A signed assertion for ``client_id`` at the token endpoint ``audience``."""
    key = private_jwk if isinstance(private_jwk, SigningKey) else SigningKey(private_jwk)
    iat = int(time.time() if now is None else now)
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": iat,
        "exp": iat + ttl,
        "jti": secrets.token_urlsafe(16),
    }
    return key.sign({"typ": "JWT", "kid": key.kid}, claims)


def verify_client_assertion(
    assertion: str,
    *,
    audiences: set[str],
    lookup: KeyLookup,
    replay: ReplayCache,
    now: float,
    max_lifetime: int = 300,
    clock_skew: int = 5,
) -> ClientAssertion:
    """Check an assertion (RFC 7523 §3); ``InvalidClient`` naming the failed check.

    The ``jti`` is recorded last, so a rejected assertion never uses up a replay-cache entry.
    """
    if len(assertion) > MAX_ASSERTION_SIZE:
        raise InvalidClient("client assertion is too large")
    try:
        parts = jws.parse(assertion)
    except jws.MalformedHeader:
        raise InvalidClient("client assertion header is not a JSON object") from None
    except jws.MalformedJWS:
        raise InvalidClient("client assertion is not a well-formed JWS") from None
    alg, kid = _check_header(parts.header)
    try:
        claims = jws.json_object(parts.payload)
    except ValueError:
        raise InvalidClient("client assertion payload is not a JSON object") from None
    client_id = claims.get("iss")
    if not isinstance(client_id, str) or not client_id or claims.get("sub") != client_id:
        raise InvalidClient("client assertion iss and sub must both be the client_id")
    jwk = lookup(client_id, kid)
    if jwk is None:
        raise InvalidClient("client assertion key is not enrolled for this client")
    try:
        key, key_alg, jkt = load_public_key(jwk), jwk_alg(jwk), thumbprint(jwk)
    except ValueError:
        raise InvalidClient("the enrolled key for this client is unusable") from None
    if key_alg != alg:
        raise InvalidClient("client assertion alg does not match the enrolled key")
    if not jws.verify(key, alg, parts.signing_input, parts.signature):
        raise InvalidClient("client assertion signature is invalid")
    exp, jti = _check_claims(claims, audiences, now, max_lifetime, clock_skew)
    if not replay.add(f"{client_id}:{jti}", exp - now + clock_skew, now):
        raise InvalidClient("client assertion jti was already used")
    return ClientAssertion(client_id=client_id, jkt=jkt, jti=jti)


def _check_header(header: dict[str, Any]) -> tuple[str, str]:
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise InvalidClient("client assertion header has no alg")
    if alg not in jws.ALGORITHMS:
        if alg.lower() == "none" or alg.upper().startswith("HS"):
            raise InvalidClient("client assertion alg must be asymmetric (none and HMAC refused)")
        allowed = ", ".join(sorted(jws.ALGORITHMS))
        raise InvalidClient(f"client assertion alg must be one of {allowed}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidClient("client assertion header has no kid")
    return alg, kid


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InvalidClient(f"client assertion {name} is not a number")
    return float(value)


def _check_claims(
    claims: dict[str, Any], audiences: set[str], now: float, max_lifetime: int, skew: int
) -> tuple[float, str]:
    aud = claims.get("aud")
    named = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if not any(isinstance(a, str) and a in audiences for a in named):
        raise InvalidClient("client assertion aud is not this token endpoint")
    exp = _number(claims, "exp")
    if exp is None:
        raise InvalidClient("client assertion has no exp")
    if exp <= now - skew:
        raise InvalidClient("client assertion has expired")
    if exp > now + max_lifetime + skew:
        raise InvalidClient(f"client assertion exp is more than {max_lifetime} s ahead")
    nbf, iat = _number(claims, "nbf"), _number(claims, "iat")
    if nbf is not None and nbf > now + skew:
        raise InvalidClient("client assertion is not valid yet (nbf)")
    if iat is not None and iat > now + skew:
        raise InvalidClient("client assertion iat is in the future")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise InvalidClient("client assertion has no jti")
    if len(jti) > MAX_JTI_LENGTH:
        raise InvalidClient("client assertion jti is too long")
    return exp, jti

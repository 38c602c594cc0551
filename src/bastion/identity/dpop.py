"""DPoP (RFC 9449): proving possession of the device key on every request.

:class:`DPoPVerifier` runs every check of RFC 9449 §4.3 in order, each failure with its own
message, and records the proof's ``jti`` in a replay cache only after everything else passed, so
a garbage or forged proof can never fill (or poison) the cache. Server-provided nonces (§8) are
not used: freshness comes from ``iat`` within ``max_age`` plus single use of ``jti``.

In cluster mode the replay cache is shared (Redis, :mod:`bastion.identity.replay_redis`): a
network call, so servers use :meth:`DPoPVerifier.verify_async`, which awaits it; with the
in-memory cache it behaves exactly like :meth:`DPoPVerifier.verify`.

The gateway verifies a proof on every request, so the verifier is written for speed:
strict base64url and orjson parsing, ``cryptography`` verification, and the public key object
cached per JWK (keyed by the thumbprint's required members, from which the thumbprint follows).
Clients sign proofs with :class:`DPoPSigner`.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from bastion.errors import InvalidDPoPProof, ReplayCacheUnavailable

from . import jws
from .jws import PublicKey
from .keys import PRIVATE_MEMBERS, SigningKey, jwk_alg, load_public_key, thumbprint
from .replay import ReplayCache, SharedReplayCache

PROOF_TYPE = "dpop+jwt"
MAX_PROOF_SIZE = 4096
MAX_JTI_LENGTH = 256
_DEFAULT_PORTS: Mapping[str, int] = {"http": 80, "https": 443}


def normalize_htu(url: str) -> str:
    """The URL as ``htu`` compares it (RFC 9449 §4.3, RFC 3986 §6.2.2 and §6.2.3).

    Scheme and host lowercased, the default port dropped, query, fragment and userinfo removed,
    the path kept as is (an empty path becomes ``/``). ``ValueError`` if it is not absolute.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname
    if not scheme or not host:
        raise ValueError("not an absolute URL")
    port = parts.port
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{port}"
    return f"{scheme}://{host}{parts.path or '/'}"


def access_token_hash(access_token: str) -> str:
    """The ``ath`` claim: base64url(SHA-256(token)) (RFC 9449 §4.2)."""
    return jws.b64url_encode(hashlib.sha256(access_token.encode()).digest())


@dataclass(frozen=True, slots=True)
class DPoPProof:
    """A verified proof: the thumbprint of its key (``jkt``) and the claims that were checked."""

    jkt: str
    jti: str
    iat: float
    htm: str
    htu: str
    public_jwk: dict[str, str]
    # Cluster mode, shared cache unreachable: single use proven in this process only (see
    # DPoPVerifier.verify_async); the gateway refuses such proofs for strict compartments.
    replay_local: bool = False


def check_binding(proof: DPoPProof, expected_jkt: str) -> None:
    """Refuse a proof signed by another key than the one the token is bound to (``cnf.jkt``)."""
    if not hmac.compare_digest(proof.jkt.encode(), expected_jkt.encode()):
        raise InvalidDPoPProof("DPoP proof key does not match the token's cnf.jkt")


@dataclass(frozen=True, slots=True)
class _Key:
    key: PublicKey
    alg: str
    jkt: str
    public_jwk: dict[str, str]


def _load_key(kty: str, crv: str, x: str, y: str | None) -> _Key:
    jwk = {"kty": kty, "crv": crv, "x": x}
    if y is not None:
        jwk["y"] = y
    return _Key(load_public_key(jwk), jwk_alg(jwk), thumbprint(jwk), jwk)


class DPoPVerifier:
    """Verifies DPoP proofs; one instance per process, sharing its replay cache and key cache."""

    def __init__(
        self,
        replay: ReplayCache,
        max_age: int = 60,
        clock_skew: int = 5,
        algs: frozenset[str] = frozenset({"EdDSA", "ES256"}),
        key_cache_size: int = 4096,
        shared: SharedReplayCache | None = None,
    ) -> None:
        if not algs or not algs <= jws.ALGORITHMS:
            raise ValueError(f"DPoP algs must be a non-empty subset of {sorted(jws.ALGORITHMS)}")
        self._replay = replay
        self._shared = shared  # cluster mode: the one replay cache of every gateway
        self._max_age = max_age
        self._clock_skew = clock_skew
        self._algs = algs
        self._algs_text = ", ".join(sorted(algs))
        self._keys = functools.lru_cache(maxsize=key_cache_size)(_load_key)
        # A gateway sees few distinct URLs; normalizing each once saves a urlsplit per side.
        self._normalize = functools.lru_cache(maxsize=1024)(normalize_htu)

    def verify(
        self,
        proof: str | Sequence[str] | None,
        *,
        method: str,
        url: str,
        access_token: str | None,
        now: float,
    ) -> DPoPProof:
        """Check a proof for a request to ``method url`` (with ``access_token`` if one is sent).

        ``proof`` is the raw ``DPoP`` header: a string, or the list of every value received so
        that two headers are refused. Raises ``InvalidDPoPProof`` naming the failed check.
        Only for the in-memory cache: with a shared one, use :meth:`verify_async`.
        """
        if self._shared is not None:  # a local check would let a proof through once per gateway
            raise RuntimeError("this verifier shares its replay cache: call verify_async")
        verified = self._check(proof, method, url, access_token, now)
        # Last, so that only a proof that passed every other check is remembered.
        if not self._replay.add(self._replay_key(verified), self._replay_ttl, now):
            raise InvalidDPoPProof("DPoP proof replayed")
        return verified

    async def verify_async(
        self,
        proof: str | Sequence[str] | None,
        *,
        method: str,
        url: str,
        access_token: str | None,
        now: float,
        local_fallback: bool = False,
    ) -> DPoPProof:
        """:meth:`verify`, awaiting the shared replay cache when there is one (cluster mode).
        When that cache cannot answer: ``ReplayCacheUnavailable`` (503, fail closed), or with
        ``local_fallback`` this process's own cache, the result marked ``replay_local`` (the
        gateway decides per compartment; a proof could then be used once per gateway)."""
        if self._shared is None:
            return self.verify(proof, method=method, url=url, access_token=access_token, now=now)
        verified = self._check(proof, method, url, access_token, now)
        key = self._replay_key(verified)
        try:
            fresh = await self._shared.add(key, self._replay_ttl, now)
        except ReplayCacheUnavailable:
            if not local_fallback:
                raise
            if not self._replay.add(key, self._replay_ttl, now):
                raise InvalidDPoPProof("DPoP proof replayed") from None
            return replace(verified, replay_local=True)
        if not fresh:
            raise InvalidDPoPProof("DPoP proof replayed")
        return verified

    @property
    def _replay_ttl(self) -> float:
        return self._max_age + self._clock_skew

    @staticmethod
    def _replay_key(verified: DPoPProof) -> str:
        return f"{verified.jkt}:{verified.jti}"

    def _check(
        self,
        proof: str | Sequence[str] | None,
        method: str,
        url: str,
        access_token: str | None,
        now: float,
    ) -> DPoPProof:
        """Every check but single use."""
        value = _single_header(proof)
        if len(value) > MAX_PROOF_SIZE:
            raise InvalidDPoPProof("DPoP proof is too large")
        try:
            parts = jws.parse(value)
        except jws.MalformedHeader:
            raise InvalidDPoPProof("DPoP proof header is not a JSON object") from None
        except jws.MalformedJWS:
            raise InvalidDPoPProof("DPoP proof is not a well-formed JWS") from None
        alg, key = self._check_header(parts.header)
        if not jws.verify(key.key, alg, parts.signing_input, parts.signature):
            raise InvalidDPoPProof("DPoP proof signature is invalid")
        try:
            claims = jws.json_object(parts.payload)
        except ValueError:
            raise InvalidDPoPProof("DPoP proof payload is not a JSON object") from None
        return self._check_claims(claims, key, method, url, access_token, now)

    def _check_header(self, header: dict[str, Any]) -> tuple[str, _Key]:
        if header.get("typ") != PROOF_TYPE:
            raise InvalidDPoPProof(f"DPoP proof typ must be {PROOF_TYPE}")
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise InvalidDPoPProof("DPoP proof header has no alg")
        if alg not in self._algs:
            if alg.lower() == "none" or alg.upper().startswith("HS"):
                raise InvalidDPoPProof("DPoP proof alg must be asymmetric (none and HMAC refused)")
            raise InvalidDPoPProof(f"DPoP proof alg must be one of {self._algs_text}")
        jwk = header.get("jwk")
        if not isinstance(jwk, dict):
            raise InvalidDPoPProof("DPoP proof header has no jwk")
        if not PRIVATE_MEMBERS.isdisjoint(jwk):
            raise InvalidDPoPProof("DPoP proof jwk contains private key material")
        key = self._key(jwk)
        if key.alg != alg:
            raise InvalidDPoPProof("DPoP proof jwk does not match its alg")
        return alg, key

    def _key(self, jwk: dict[str, Any]) -> _Key:
        kty, crv, x = jwk.get("kty"), jwk.get("crv"), jwk.get("x")
        y = jwk.get("y") if kty == "EC" else None
        members_ok = isinstance(kty, str) and isinstance(crv, str) and isinstance(x, str)
        if members_ok and (kty != "EC" or isinstance(y, str)):
            try:
                return self._keys(kty, crv, x, y)
            except ValueError:
                pass
        raise InvalidDPoPProof("DPoP proof jwk is not a valid Ed25519 or P-256 public key")

    def _check_claims(
        self,
        claims: dict[str, Any],
        key: _Key,
        method: str,
        url: str,
        access_token: str | None,
        now: float,
    ) -> DPoPProof:
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise InvalidDPoPProof("DPoP proof has no jti")
        if len(jti) > MAX_JTI_LENGTH:
            raise InvalidDPoPProof("DPoP proof jti is too long")
        htm = claims.get("htm")
        if not isinstance(htm, str):
            raise InvalidDPoPProof("DPoP proof has no htm")
        if htm != method:
            raise InvalidDPoPProof("DPoP proof htm does not match the request method")
        htu = self._check_htu(claims.get("htu"), url)
        iat = claims.get("iat")
        if not isinstance(iat, int | float) or isinstance(iat, bool):
            raise InvalidDPoPProof("DPoP proof has no iat")
        if iat > now + self._clock_skew:
            raise InvalidDPoPProof("DPoP proof iat is in the future")
        if iat < now - self._max_age:
            raise InvalidDPoPProof(f"DPoP proof is too old (iat over {self._max_age} s ago)")
        if access_token is not None:
            ath = claims.get("ath")
            if not isinstance(ath, str):
                raise InvalidDPoPProof("DPoP proof has no ath")
            if not hmac.compare_digest(ath.encode(), access_token_hash(access_token).encode()):
                raise InvalidDPoPProof("DPoP proof ath does not match the access token")
        return DPoPProof(key.jkt, jti, iat, htm, htu, dict(key.public_jwk))

    def _check_htu(self, htu: object, url: str) -> str:
        if not isinstance(htu, str):
            raise InvalidDPoPProof("DPoP proof has no htu")
        try:
            normalized = self._normalize(htu)
        except ValueError:
            raise InvalidDPoPProof("DPoP proof htu is not a valid URL") from None
        try:
            expected = self._normalize(url)
        except ValueError:
            expected = None
        if normalized != expected:
            raise InvalidDPoPProof("DPoP proof htu does not match the request URL")
        return normalized


def _single_header(proof: str | Sequence[str] | None) -> str:
    if proof is None or len(proof) == 0:
        raise InvalidDPoPProof("missing DPoP proof header")
    if not isinstance(proof, str):
        if len(proof) > 1:
            raise InvalidDPoPProof("more than one DPoP header")
        proof = proof[0]
    value = proof.strip(" \t")
    if not value:
        raise InvalidDPoPProof("missing DPoP proof header")
    if "," in value:  # two headers folded into one by an intermediary
        raise InvalidDPoPProof("more than one DPoP proof in the DPoP header")
    return value


class DPoPSigner:
    """Signs DPoP proofs with one device key (loaded once), for clients."""

    def __init__(self, key: Mapping[str, Any] | SigningKey) -> None:
        self._key = key if isinstance(key, SigningKey) else SigningKey(key)

    @property
    def jkt(self) -> str:
        return self._key.kid

    def proof(
        self,
        *,
        method: str,
        url: str,
        access_token: str | None = None,
        now: float | None = None,
    ) -> str:
        """A fresh proof for ``method url`` (query and fragment dropped), with ``ath`` if a token
        is given."""
        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16),
            "htm": method,
            "htu": normalize_htu(url),
            "iat": int(time.time() if now is None else now),
        }
        if access_token is not None:
            claims["ath"] = access_token_hash(access_token)
        return self._key.sign({"typ": PROOF_TYPE, "jwk": self._key.public_jwk}, claims)


def sign_proof(
    private_jwk: Mapping[str, Any] | SigningKey,
    *,
    method: str,
    url: str,
    access_token: str | None = None,
    now: float | None = None,
) -> str:
    """One DPoP proof; clients that sign many should keep a :class:`DPoPSigner`."""
    return DPoPSigner(private_jwk).proof(method=method, url=url, access_token=access_token, now=now)

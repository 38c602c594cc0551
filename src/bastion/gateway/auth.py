"""Authenticating a gateway request: a DPoP-bound access token plus a fresh DPoP proof.

Order of checks: exactly one ``Authorization`` header with the ``DPoP`` scheme (``Bearer`` is
refused: every Bastion token is sender-constrained), the access token (RFC 9068, cached after its
first signature check), the DPoP proof (RFC 9449 §4.3, replay cache last), and the binding of the
proof key to the token's ``cnf.jkt``. Failures raise ``AuthenticationError`` subclasses, and
``ReplayCacheUnavailable`` (503) when a shared replay cache cannot answer (cluster mode).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from bastion.detect.risk import RiskBoard
from bastion.errors import AuthenticationError, InvalidDPoPProof, InvalidToken
from bastion.identity.access_tokens import AccessClaims, AccessTokenCodec
from bastion.identity.dpop import DPoPProof, DPoPVerifier, check_binding
from bastion.policy.authorize import Caller
from bastion.policy.snapshot import Snapshot

MAX_AUTHORIZATION = 8192


def request_url(
    public_url: str, scheme: str, host: str | None, server: tuple[str, int] | None, path: str
) -> str:
    """The URL the client addressed, for ``htu``: the configured public URL if any."""
    if public_url:
        return public_url + path
    if host:
        return f"{scheme}://{host}{path}"
    if server:
        return f"{scheme}://{server[0]}:{server[1]}{path}"
    return f"{scheme}://localhost{path}"


def caller_of(snapshot: Snapshot, claims: AccessClaims, source: str = "") -> Caller:
    """Who a verified token speaks for, as the current snapshot knows them: the principal must
    still exist and the token's device key must still be enrolled. ``source`` is the request's
    resolved source address (for network locks)."""
    facts = snapshot.principals.get(claims.sub)
    if facts is None:
        raise AuthenticationError("the token's principal no longer exists")
    if len(claims.act) > 1:
        raise AuthenticationError("delegation chains longer than one actor are not accepted")
    actor = claims.act[0] if claims.act else ""
    actor_facts = snapshot.principals.get(actor) if actor else None
    if actor and actor_facts is None:
        raise AuthenticationError("the token's actor no longer exists")
    # The device key belongs to whoever makes the calls: the actor of a delegated token.
    if snapshot.device_key(actor or claims.sub, claims.jkt) is None:
        raise AuthenticationError("the token's device key is no longer enrolled")
    return Caller(
        principal=claims.sub,
        org=facts.org,
        jkt=claims.jkt,
        family=claims.family,
        actor=actor,
        actor_org=actor_facts.org if actor_facts else "",
        mfa_at=claims.auth_time,  # set only when the token's login passed MFA
        source=source,
    )


def with_risk(caller: Caller, risk: RiskBoard | None, now: float) -> Caller:
    """The caller with its current risk score (the larger of its own, its org's and, for a
    delegated token, its actor's) for ``context.risk``."""
    if risk is None:
        return caller
    score = risk.risk(caller.principal, caller.org, now)
    if caller.actor:
        score = max(score, risk.risk(caller.actor, caller.actor_org, now))
    return replace(caller, risk=score) if score else caller


class Authenticator:
    def __init__(self, codec: AccessTokenCodec, verifier: DPoPVerifier) -> None:
        self._codec = codec
        self._verifier = verifier

    async def authenticate(
        self,
        *,
        authorization: Sequence[bytes],
        dpop: Sequence[bytes],
        method: str,
        url: str,
        now: float,
    ) -> AccessClaims:
        """The verified token's claims; with a shared replay cache down, fails closed (503)."""
        claims, _ = await self.authenticate_proof(
            authorization=authorization, dpop=dpop, method=method, url=url, now=now
        )
        return claims

    async def authenticate_proof(
        self,
        *,
        authorization: Sequence[bytes],
        dpop: Sequence[bytes],
        method: str,
        url: str,
        now: float,
        local_fallback: bool = False,
    ) -> tuple[AccessClaims, DPoPProof]:
        """The claims and the proof; ``local_fallback``: see ``DPoPVerifier.verify_async``."""
        if not authorization:
            raise InvalidToken("missing Authorization header: send 'Authorization: DPoP <token>'")
        if len(authorization) > 1:
            raise InvalidToken("more than one Authorization header")
        raw = authorization[0]
        if len(raw) > MAX_AUTHORIZATION:
            raise InvalidToken("Authorization header too large")
        scheme, _, token = raw.decode("latin-1").partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer":
            raise InvalidToken(
                "Bearer tokens are not accepted: Bastion tokens are DPoP-bound; "
                "send 'Authorization: DPoP <token>' with a DPoP proof"
            )
        if scheme.lower() != "dpop" or not token:
            raise InvalidToken(
                "unsupported Authorization scheme: send 'Authorization: DPoP <token>'"
            )
        claims = self._codec.verify(token, now)
        if not dpop:
            raise InvalidDPoPProof("missing DPoP proof header")
        proof = await self._verifier.verify_async(  # awaits the shared replay cache (cluster)
            [value.decode("latin-1") for value in dpop],
            method=method,
            url=url,
            access_token=token,
            now=now,
            local_fallback=local_fallback,
        )
        check_binding(proof, claims.jkt)
        return claims, proof

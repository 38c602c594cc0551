"""Revocation signals in: ``POST /caep/events`` receives CAEP / RISC Security Event Tokens pushed
(RFC 8935) by the organisation's identity provider (``response.caep.transmitter``) and turns
them into locks.

A SET is accepted only if: it is ``application/secevent+jwt`` of at most 64 KiB; its header says
``typ: secevent+jwt``; its ``iss`` is the transmitter's; its signature verifies with a key from
the transmitter's JWKS and an allowed algorithm; its ``aud`` holds the configured audience; its
``iat`` is at most ``max_token_age_seconds`` old (and not in the future); its ``jti`` was never
seen (bounded replay cache); and its subject is a known principal of one of the transmitter's
orgs. Then, for each event:

- CAEP ``session-revoked``: the principal is locked for ``session_revoked_lock_seconds`` (1 hour
  by default), reason ``CAEP session-revoked from <issuer>``;
- RISC ``account-disabled``, ``account-purged``, ``credential-compromise``: the principal is
  locked without expiry.

Subjects (RFC 9493 ``sub_id``, or the event's ``subject`` member as older CAEP / RISC drafts
send it) map to principals thus: ``opaque`` → ``id``; ``email`` → the local part; ``iss_sub`` →
``sub`` when ``iss`` is the transmitter; ``complex`` → its ``user`` member. The answer is ``202``,
or ``400`` with the RFC 8935 error JSON ``{"err", "description"}``; every accepted event and every
refusal is an audit event (``caep.received`` / ``caep.refused``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import BadSignatureError, InvalidKeyIdError, JoseError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bastion.audit.events import AdminAction
from bastion.audit.log import AuditLog
from bastion.config.caep import CaepTransmitter
from bastion.errors import SetRefused, Unavailable
from bastion.policy.holder import SnapshotHolder
from bastion.policy.snapshot import Snapshot
from bastion.respond.locks import LockService
from bastion.store import Store

from . import jws
from .caep import (
    ACCOUNT_DISABLED,
    ACCOUNT_PURGED,
    CREDENTIAL_COMPROMISE,
    SESSION_REVOKED,
    SET_CONTENT_TYPE,
    SET_TYP,
)
from .federation import JWKSCache
from .replay import MemoryReplayCache

log = logging.getLogger("bastion.caep")
MAX_SET_BYTES = 64 * 1024
CLOCK_SKEW = 30
MAX_JTI = 200
#: The events that lock the principal, and whether the lock expires (session-revoked only).
HANDLED = {
    SESSION_REVOKED: "CAEP session-revoked",
    ACCOUNT_DISABLED: "RISC account-disabled",
    ACCOUNT_PURGED: "RISC account-purged",
    CREDENTIAL_COMPROMISE: "RISC credential-compromise",
}


@dataclass(frozen=True, slots=True)
class VerifiedSet:
    jti: str
    principal: str
    events: tuple[str, ...]  # the handled event type URIs, in the SET's order


def _refuse(err: str, description: str) -> SetRefused:
    return SetRefused(err, description)


class SetVerifier:
    """Checks a SET against the transmitter's configuration; :class:`SetRefused` says why not."""

    def __init__(self, jwks: JWKSCache, replay: MemoryReplayCache) -> None:
        self._jwks = jwks
        self._replay = replay

    async def verify(
        self, token: str, transmitter: CaepTransmitter, snapshot: Snapshot, now: float
    ) -> VerifiedSet:
        header = self._header(token, transmitter)
        claims = await self._verified_claims(token, transmitter, header)
        _check_claims(claims, transmitter, now)
        events = _events(claims)
        principal = _principal(claims, events, transmitter, snapshot)
        jti = claims["jti"]
        if not self._replay.add(f"{transmitter.issuer} {jti}", _replay_ttl(transmitter), now):
            raise _refuse("invalid_request", "this SET's jti was already received")
        return VerifiedSet(jti=jti, principal=principal, events=tuple(events))

    def _header(self, token: str, transmitter: CaepTransmitter) -> dict[str, Any]:
        try:
            parts = jws.parse(token)
            payload = jws.json_object(parts.payload)
        except ValueError:
            raise _refuse("invalid_request", "the body is not a signed JWT") from None
        typ = parts.header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in (SET_TYP, SET_CONTENT_TYPE):
            raise _refuse("invalid_request", "the SET's typ must be secevent+jwt")
        if payload.get("iss") != transmitter.issuer:
            raise _refuse("invalid_issuer", "the SET's issuer is not the configured transmitter")
        return parts.header

    async def _verified_claims(
        self, token: str, transmitter: CaepTransmitter, header: Mapping[str, Any]
    ) -> dict[str, Any]:
        if header.get("alg") not in transmitter.algorithms:
            raise _refuse("invalid_key", "the SET's signing algorithm is not allowed")
        for stale in (False, True):
            keys = await self._jwks.keys(transmitter, stale=stale)
            try:
                decoded = jwt.decode(token, keys, algorithms=list(transmitter.algorithms))
            except InvalidKeyIdError:
                if stale:
                    raise _refuse("invalid_key", "the SET is signed with an unknown key") from None
                continue
            except BadSignatureError:
                raise _refuse(
                    "authentication_failed", "the SET's signature does not verify"
                ) from None
            except (JoseError, ValueError, TypeError):
                raise _refuse("invalid_key", "the SET cannot be verified with the keys") from None
            return dict(decoded.claims)
        raise _refuse("invalid_key", "the SET is signed with an unknown key")  # pragma: no cover


def _replay_ttl(transmitter: CaepTransmitter) -> float:
    return float(transmitter.max_token_age_seconds + 2 * CLOCK_SKEW)


def _check_claims(claims: Mapping[str, Any], transmitter: CaepTransmitter, now: float) -> None:
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if transmitter.audience not in audiences:
        raise _refuse("invalid_audience", "the SET's aud does not include this receiver")
    iat = claims.get("iat")
    if not isinstance(iat, int) or isinstance(iat, bool):
        raise _refuse("invalid_request", "the SET's iat is missing or not an integer")
    if iat > now + CLOCK_SKEW:
        raise _refuse("invalid_request", "the SET was issued in the future")
    if now - iat > transmitter.max_token_age_seconds:
        raise _refuse("invalid_request", "the SET is too old")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI:
        raise _refuse("invalid_request", "the SET's jti is missing or too long")
    if "exp" in claims:  # RFC 8417 §2.2: a SET must not carry exp (it is not an access token)
        raise _refuse("invalid_request", "a SET must not have an exp claim")


def _events(claims: Mapping[str, Any]) -> list[str]:
    events = claims.get("events")
    if not isinstance(events, dict) or not events:
        raise _refuse("invalid_request", "the SET has no events object")
    if not all(isinstance(payload, dict) for payload in events.values()):
        raise _refuse("invalid_request", "each event's payload must be a JSON object")
    handled = [event for event in events if event in HANDLED]
    if not handled:
        raise _refuse("invalid_request", "the SET carries no event this receiver handles")
    return handled


def _principal(
    claims: Mapping[str, Any],
    events: list[str],
    transmitter: CaepTransmitter,
    snapshot: Snapshot,
) -> str:
    subject = claims.get("sub_id")
    if subject is None:
        subject = claims["events"][events[0]].get("subject")
    name = subject_principal(subject, transmitter.issuer)
    facts = snapshot.principals.get(name) if name else None
    if facts is None or facts.org not in transmitter.orgs:
        raise _refuse("invalid_request", "the SET's subject is not a principal this issuer covers")
    return facts.name


def subject_principal(subject: object, issuer: str) -> str | None:
    """The principal name an RFC 9493 subject identifier names, or None if it names none."""
    if not isinstance(subject, dict):
        return None
    kind = subject.get("format")
    value: object = None
    if kind == "opaque":
        value = subject.get("id")
    elif kind == "email":
        email = subject.get("email")
        value = email.partition("@")[0] if isinstance(email, str) and "@" in email else None
    elif kind == "iss_sub":
        value = subject.get("sub") if subject.get("iss") == issuer else None
    elif kind == "complex":
        return subject_principal(subject.get("user"), issuer)
    if not isinstance(value, str) or not 0 < len(value) <= 128:
        return None
    return value


class CaepReceiverEndpoint:
    """``POST /caep/events``: verify, lock, audit, and make the lock effective at once."""

    def __init__(
        self,
        *,
        verifier: SetVerifier,
        locks: LockService,
        holder: SnapshotHolder,
        store: Store,
        audit: AuditLog,
        on_change: Callable[[], Awaitable[object]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._verifier = verifier
        self._locks = locks
        self._holder = holder
        self._store = store
        self._audit = audit
        self._on_change = on_change
        self._clock = clock

    def routes(self) -> list[Route]:
        return [Route("/caep/events", self.events, methods=["POST"])]

    async def events(self, request: Request) -> Response:
        snapshot = self._holder.current
        if snapshot is None:
            return JSONResponse({"err": "temporarily_unavailable"}, status_code=503)
        transmitter = snapshot.config.response.caep.transmitter
        issuer = transmitter.issuer if transmitter is not None else ""
        try:
            if transmitter is None:
                raise _refuse("invalid_issuer", "this Bastion accepts SETs from no transmitter")
            token = await _read_set(request)
            verified = await self._verifier.verify(token, transmitter, snapshot, self._clock())
            locks = self._apply(verified, transmitter)
        except SetRefused as refusal:
            self._record(
                "caep.refused",
                "set",
                issuer or "unconfigured",
                refusal.message,
                {"err": refusal.code, "issuer": issuer},
            )
            return JSONResponse({"err": refusal.code, "description": refusal.message}, 400)
        except Unavailable as error:  # the transmitter's keys cannot be had: retry later
            log.warning("CAEP event not processed: %s", error.message)
            return JSONResponse({"err": "temporarily_unavailable"}, status_code=503)
        detail = {"jti": verified.jti, "issuer": issuer, "events": list(verified.events)}
        self._record(
            "caep.received", "principal", verified.principal, "", {**detail, "locks": locks}
        )
        await self._on_change()
        return Response(status_code=202)

    def _apply(self, verified: VerifiedSet, transmitter: CaepTransmitter) -> list[str]:
        ids = []
        for event in verified.events:
            session = event == SESSION_REVOKED
            row, _epoch = self._locks.lock(
                "principal",
                verified.principal,
                reason=f"{HANDLED[event]} from {transmitter.issuer}"[:500],
                author=f"caep:{transmitter.issuer}"[:200],
                ttl=transmitter.session_revoked_lock_seconds if session else None,
            )
            ids.append(row.id)
        return ids

    def _record(
        self, action: str, target_type: str, target: str, reason: str, detail: dict[str, Any]
    ) -> None:
        event = AdminAction(
            actor="caep",
            time=self._clock(),
            action=action,
            target_type=target_type,
            target=target[:200],
            reason=reason,
            detail=detail,
        )
        with self._store.begin() as conn:
            self._audit.append(conn, [event])


async def _read_set(request: Request) -> str:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != SET_CONTENT_TYPE:
        raise _refuse("invalid_request", "send the SET as application/secevent+jwt")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_SET_BYTES:
        raise _refuse("invalid_request", "the SET is larger than 64 KiB")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_SET_BYTES:
            raise _refuse("invalid_request", "the SET is larger than 64 KiB")
    try:
        return body.decode("ascii").strip()
    except UnicodeDecodeError:
        raise _refuse("invalid_request", "the body is not a compact JWS") from None

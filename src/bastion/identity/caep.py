"""Revocation signals out: OpenID CAEP Security Event Tokens (RFC 8417), pushed to receivers.

When Bastion revokes (a principal locked, a device key revoked, a token family revoked) the
:class:`CaepEmitter` builds one SET per configured receiver (``response.caep.receivers``), signed
with Bastion's issuer key (the one published at ``/.well-known/jwks.json``, so receivers verify
SETs exactly as they verify access tokens), records it in a bounded outbox and delivers it in
the background by push (RFC 8935: ``POST`` with ``content-type: application/secevent+jwt``,
``202 Accepted`` expected), retrying with backoff. Emitting only signs and enqueues: it never
waits on the network, so it is never on the request path.

SET shape::

    header  {"alg": "EdDSA", "kid": <issuer kid>, "typ": "secevent+jwt"}
    claims  {"iss": <Bastion's public URL>, "aud": <the receiver's audience>, "jti", "iat",
             "txn", "sub_id": {"format": "opaque", "id": <principal>},
             "events": {<event type URI>: {"event_timestamp", "initiating_entity",
                                           "reason_admin": {"en": <reason>}, ...}}}

Subjects use the RFC 9493 ``opaque`` format with the principal's name (``iss_sub`` with
``iss`` = Bastion is available through :func:`subject_id`). A revoked device key is a CAEP
``credential-change`` with ``change_type: revoke`` and ``credential_type: "app"``: CAEP 1.0 has no
value for a bare asymmetric device key; ``app`` (a credential held by a client application) is
the closest, and ``friendly_name`` says which key it was.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from bastion.background import wait_set
from bastion.config.caep import CaepOptions, CaepReceiver
from bastion.store.locks import LockRow
from bastion.tls import client_context

from . import jws
from .keys import IssuerKey, jwk_alg, load_public_key

log = logging.getLogger("bastion.caep")

SET_TYP = "secevent+jwt"
SET_CONTENT_TYPE = "application/secevent+jwt"
_CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
_RISC = "https://schemas.openid.net/secevent/risc/event-type/"
SESSION_REVOKED = _CAEP + "session-revoked"
CREDENTIAL_CHANGE = _CAEP + "credential-change"
ACCOUNT_DISABLED = _RISC + "account-disabled"
ACCOUNT_PURGED = _RISC + "account-purged"
CREDENTIAL_COMPROMISE = _RISC + "credential-compromise"
INITIATING_ENTITIES = ("admin", "user", "policy", "system")
MAX_OUTBOX = 1000
Initiator = Literal["admin", "user", "policy", "system"]


def subject_id(
    principal: str, *, format: Literal["opaque", "iss_sub"] = "opaque", issuer: str = ""
) -> dict[str, str]:
    """The RFC 9493 subject identifier of a Bastion principal."""
    if format == "iss_sub":
        if not issuer:
            raise ValueError("an iss_sub subject needs the issuer")
        return {"format": "iss_sub", "iss": issuer, "sub": principal}
    return {"format": "opaque", "id": principal}


def event_payload(
    *, now: float, initiating_entity: Initiator, reason: str, **extra: str
) -> dict[str, Any]:
    """The CAEP 1.0 common event fields (plus event-specific ones in ``extra``)."""
    if initiating_entity not in INITIATING_ENTITIES:
        raise ValueError(f"initiating_entity must be one of {', '.join(INITIATING_ENTITIES)}")
    return {
        "event_timestamp": int(now),
        "initiating_entity": initiating_entity,
        "reason_admin": {"en": reason[:500]},
        **extra,
    }


def build_set(
    key: IssuerKey,
    *,
    issuer: str,
    audience: str,
    event_type: str,
    subject: Mapping[str, str],
    payload: Mapping[str, Any],
    now: float,
    txn: str,
    jti: str | None = None,
) -> str:
    """A signed SET (compact JWS, ``typ: secevent+jwt``) carrying exactly one event."""
    claims = {
        "iss": issuer,
        "aud": audience,
        "jti": jti or secrets.token_urlsafe(16),
        "iat": int(now),
        "txn": txn,
        "sub_id": dict(subject),
        "events": {event_type: dict(payload)},
    }
    return key.sign_jwt({"typ": SET_TYP}, claims)


def verify_set(token: str, jwks: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a SET signed by a key of ``jwks`` (e.g. Bastion's published JWKS);
    ``ValueError`` if it is not a ``secevent+jwt`` whose signature verifies with the named key."""
    parts = jws.parse(token)
    if parts.header.get("typ") != SET_TYP:
        raise ValueError("not a secevent+jwt")
    keys = jwks.get("keys")
    matching = [k for k in keys if k.get("kid") == parts.header.get("kid")] if keys else []
    if len(matching) != 1:
        raise ValueError("no key with the SET's kid")
    alg = jwk_alg(matching[0])
    if parts.header.get("alg") != alg:
        raise ValueError("the SET's alg does not fit the key")
    if not jws.verify(load_public_key(matching[0]), alg, parts.signing_input, parts.signature):
        raise ValueError("the SET's signature does not verify")
    return parts.header, jws.json_object(parts.payload)


@dataclass(slots=True)
class OutboxEntry:
    """One SET for one receiver and what became of it: pending, delivered or failed."""

    jti: str
    receiver: str
    endpoint: str
    event_type: str
    subject: str
    token: str = field(repr=False)
    created_at: float
    status: str = "pending"
    attempts: int = 0
    next_attempt: float = 0.0
    last_error: str = ""


class CaepEmitter:
    """Builds, records and pushes Bastion's SETs; ``run()`` is the background delivery task."""

    def __init__(
        self,
        key: IssuerKey,
        issuer_url: str,
        options: Callable[[], CaepOptions],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        backoff: float = 0.5,
        timeout: float = 5.0,
    ) -> None:
        self._key = key
        self._issuer_url = issuer_url
        self._options = options
        self._transport = transport
        self._clock = clock
        self._backoff = backoff
        self._timeout = timeout
        self._outbox: deque[OutboxEntry] = deque(maxlen=MAX_OUTBOX)
        self._lock = threading.Lock()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def session_revoked(self, principal: str, *, reason: str, initiator: Initiator) -> int:
        """Tell every receiver the principal's sessions are revoked; returns how many SETs."""
        payload = event_payload(now=self._clock(), initiating_entity=initiator, reason=reason)
        return self._emit(SESSION_REVOKED, principal, payload)

    def on_lock(self, row: LockRow) -> None:
        """LockService's after-commit hook: a principal lock revokes the principal's sessions.

        Locks made because of a SET received from the identity provider (author ``caep:...``)
        are not signalled back, so a transmitter that also receives never loops."""
        if row.target_type != "principal" or row.author.startswith("caep:"):
            return
        initiator: Initiator = "system" if row.author.startswith("bastion") else "admin"
        if row.author.startswith(("detect", "playbook", "respond")):
            initiator = "policy"
        self.session_revoked(row.target, reason=row.reason, initiator=initiator)

    def on_family_revoked(self, principal: str, family: str, reason: str) -> None:
        """TokenService's hook: a token family was revoked (refresh token reuse or theft)."""
        reason = f"token family {family[:40]} revoked: {reason}"
        self.session_revoked(principal, reason=reason, initiator="system")

    def on_key_revoked(self, principal: str, jkt: str, reason: str) -> None:
        """PrincipalService's after-commit hook: a device key was revoked."""
        self.credential_revoked(principal, credential=jkt, reason=reason, initiator="admin")

    def credential_revoked(
        self, principal: str, *, credential: str, reason: str, initiator: Initiator
    ) -> int:
        """A device key of the principal was revoked (``credential-change``, ``revoke``)."""
        payload = event_payload(
            now=self._clock(),
            initiating_entity=initiator,
            reason=reason,
            credential_type="app",
            change_type="revoke",
            friendly_name=f"Bastion device key {credential[:16]}",
        )
        return self._emit(CREDENTIAL_CHANGE, principal, payload)

    def _emit(self, event_type: str, principal: str, payload: Mapping[str, Any]) -> int:
        receivers = self._options().receivers
        if not receivers:
            return 0
        now, txn = self._clock(), secrets.token_urlsafe(12)
        entries = [self._entry(r, event_type, principal, payload, now, txn) for r in receivers]
        with self._lock:
            self._outbox.extend(entries)
        self._notify()
        return len(entries)

    def _entry(
        self,
        receiver: CaepReceiver,
        event_type: str,
        principal: str,
        payload: Mapping[str, Any],
        now: float,
        txn: str,
    ) -> OutboxEntry:
        jti = secrets.token_urlsafe(16)
        token = build_set(
            self._key,
            issuer=self._issuer_url,
            audience=receiver.audience,
            event_type=event_type,
            subject=subject_id(principal),
            payload=payload,
            now=now,
            txn=txn,
            jti=jti,
        )
        return OutboxEntry(
            jti=jti,
            receiver=receiver.name,
            endpoint=receiver.endpoint,
            event_type=event_type,
            subject=principal,
            token=token,
            created_at=now,
        )

    def _notify(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    def outbox(self) -> list[OutboxEntry]:
        """A copy of the outbox, oldest first (bounded: the oldest entries are dropped)."""
        with self._lock:
            return list(self._outbox)

    async def run(self) -> None:
        """Deliver pending SETs until cancelled; woken by each emit, else polls every second."""
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        async with httpx.AsyncClient(
            transport=self._transport, timeout=self._timeout, verify=client_context()
        ) as client:
            while True:
                await self.deliver_due(client)
                await wait_set(self._wake, self._sleep())
                self._wake.clear()

    def _sleep(self) -> float:
        now = self._clock()
        with self._lock:
            due = [e.next_attempt - now for e in self._outbox if e.status == "pending"]
        return min([1.0, *(max(d, 0.01) for d in due)])

    async def deliver_due(self, client: httpx.AsyncClient) -> None:
        """One pass: push every pending SET whose next attempt is due."""
        now = self._clock()
        with self._lock:
            due = [e for e in self._outbox if e.status == "pending" and e.next_attempt <= now]
        for entry in due:
            await self._deliver(client, entry)

    async def _deliver(self, client: httpx.AsyncClient, entry: OutboxEntry) -> None:
        entry.attempts += 1
        headers = {"content-type": SET_CONTENT_TYPE, "accept": "application/json"}
        try:
            response = await client.post(entry.endpoint, content=entry.token, headers=headers)
        except httpx.HTTPError as exc:
            self._retry_or_fail(entry, f"network error: {type(exc).__name__}")
            return
        if response.status_code == 202:
            entry.status, entry.last_error = "delivered", ""
            return
        if response.status_code == 400:  # RFC 8935 §2.3: the receiver refused this SET for good
            entry.status, entry.last_error = "failed", f"refused: {_err_of(response)}"
            log.warning("CAEP receiver %s refused SET %s", entry.receiver, entry.jti)
            return
        self._retry_or_fail(entry, f"HTTP {response.status_code}")

    def _retry_or_fail(self, entry: OutboxEntry, error: str) -> None:
        entry.last_error = error
        if entry.attempts > self._options().retries:
            entry.status = "failed"
            log.warning("CAEP SET %s to %s failed: %s", entry.jti, entry.receiver, error)
            return
        entry.next_attempt = self._clock() + self._backoff * 2 ** (entry.attempts - 1)


def _err_of(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return "no error body"
    err = body.get("err") if isinstance(body, dict) else None
    return err[:40] if isinstance(err, str) else "no error code"

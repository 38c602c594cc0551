"""The token service: Bastion as the OAuth authorization server for its callers.

``client_credentials`` with a ``private_key_jwt`` assertion (RFC 7523) signed by an enrolled
device key, plus a DPoP proof by the same key, yields a DPoP-bound access token (RFC 9068, at most
15 minutes) and a refresh token that starts a *token family*. ``refresh_token`` rotates: each
refresh token works once; presenting a rotated one again revokes the whole family (and locks it,
so its live access tokens stop on the next request).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from enum import Enum

import anyio
import sqlalchemy as sa

from bastion.audit.events import TokenEvent
from bastion.audit.log import AuditLog
from bastion.audit.recorder import AuditRecorder
from bastion.errors import (
    AuthenticationError,
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    OAuthError,
    Unavailable,
    UnsupportedGrantType,
)
from bastion.policy.authorize import network_targets
from bastion.policy.holder import SnapshotHolder
from bastion.policy.snapshot import Snapshot
from bastion.store import Store, state
from bastion.store import locks as lock_rows
from bastion.store import principals as principal_rows
from bastion.store import tokens as token_rows
from bastion.store.locks import LockRow

from . import exchange
from .access_tokens import AccessTokenCodec
from .assertions import verify_client_assertion
from .dpop import DPoPProof, DPoPVerifier
from .federation import FederationVerifier
from .grants import (
    HoneytokenPresented,
    PrincipalRefused,
    RefreshRefused,
    TokenGrant,
    refresh_digest,
)
from .mfa import MfaService, auth_context
from .replay import ReplayCache

log = logging.getLogger("bastion.identity")
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
GRANT_TYPES = ("client_credentials", "refresh_token", exchange.GRANT_TYPE)
MAX_FORM_VALUE = 8192
SERVICE_ACTOR = "bastion:token-service"


class _Refresh(Enum):
    OK = "ok"
    UNKNOWN = "unknown"
    REVOKED = "revoked"
    WRONG_KEY = "wrong_key"
    EXPIRED = "expired"
    REUSED = "reused"


class TokenService:
    def __init__(
        self,
        *,
        store: Store,
        holder: SnapshotHolder,
        codec: AccessTokenCodec,
        dpop: DPoPVerifier,
        assertion_replay: ReplayCache,
        recorder: AuditRecorder,
        audit: AuditLog,
        audiences: set[str],
        access_ttl: int,
        refresh_ttl: int,
        on_change: Callable[[], Awaitable[object]],
        federation: FederationVerifier | None = None,
        mfa: MfaService | None = None,
        clock: Callable[[], float] = time.time,
        on_family_revoked: Callable[[str, str, str], object] | None = None,
    ) -> None:
        self._on_family_revoked = on_family_revoked  # (principal, family, reason): CAEP emitter
        self._store = store
        self._holder = holder
        self._codec = codec
        self._dpop = dpop
        self._assertion_replay = assertion_replay
        self._recorder = recorder
        self._audit = audit
        self._audiences = audiences
        self._access_ttl = min(access_ttl, 900)
        self._refresh_ttl = refresh_ttl
        self._on_change = on_change
        self._federation = federation
        self._mfa = mfa
        self._clock = clock

    def _snapshot(self) -> Snapshot:
        snapshot = self._holder.current
        if snapshot is None:
            raise InvalidRequest("the server is starting; try again shortly")
        return snapshot

    async def token(
        self,
        form: Mapping[str, str],
        dpop: list[str],
        url: str,
        source_ip: str,
        user_agent: str = "",
    ) -> TokenGrant:
        """Run a grant; every refusal is recorded as a ``token.refused`` audit event.
        ``user_agent`` is the caller's, as recorded (see ``detect.signals.client_fingerprint``)."""
        try:
            return await self._grant(form, dpop, url, source_ip, user_agent)
        except (OAuthError, AuthenticationError) as error:
            self._recorder.record(
                TokenEvent(
                    time=self._clock(),
                    actor="anonymous",
                    action="refused",
                    principal=getattr(error, "principal", None),
                    family=getattr(error, "family", None),
                    jkt=getattr(error, "jkt", None) or None,
                    source_ip=source_ip,
                    error=error.code,
                    grant_type=str(form.get("grant_type", ""))[:40],
                    reason=getattr(error, "audit_reason", error.message),
                    client=user_agent,
                )
            )
            raise

    async def _grant(
        self, form: Mapping[str, str], dpop: list[str], url: str, source_ip: str, user_agent: str
    ) -> TokenGrant:
        for value in form.values():
            if len(value) > MAX_FORM_VALUE:
                raise InvalidRequest("a form parameter is too large")
        grant_type = form.get("grant_type")
        if not grant_type:
            raise InvalidRequest("missing grant_type")
        if grant_type not in GRANT_TYPES:
            raise UnsupportedGrantType(f"grant_type must be one of {', '.join(GRANT_TYPES)}")
        now = self._clock()
        proof = await self._dpop.verify_async(
            dpop, method="POST", url=url, access_token=None, now=now
        )
        if grant_type == "client_credentials":
            return await self._client_credentials(form, proof, now, source_ip, user_agent)
        if grant_type == exchange.GRANT_TYPE:
            return await self._token_exchange(form, proof, now, source_ip, user_agent)
        return await self._refresh(form, proof, now, source_ip, user_agent)

    def _check_principal(
        self,
        snapshot: Snapshot,
        principal: str,
        jkt: str,
        now: float,
        family: str = "",
        source: str = "",
    ) -> None:
        if snapshot.config.detection.honeytokens.covers(principal, jkt):
            raise HoneytokenPresented(principal, jkt)
        facts = snapshot.principals.get(principal)
        if facts is None or facts.disabled:
            raise PrincipalRefused(
                principal, f"principal {principal!r} is disabled or does not exist"
            )
        if snapshot.dormant(principal, now):
            raise PrincipalRefused(
                principal, f"principal {principal!r} is dormant; an admin can enable it again"
            )
        if snapshot.device_key(principal, jkt) is None:
            raise PrincipalRefused(principal, "the device key is no longer enrolled")
        targets = [("all", "*"), ("principal", principal), ("org", facts.org), ("key", jkt)]
        if family:
            targets.append(("family", family))
        if snapshot.lock_on(targets, now) is not None:
            raise PrincipalRefused(principal, f"principal {principal!r} is locked")
        if snapshot.has_network_locks and snapshot.lock_on(network_targets(source), now):
            raise PrincipalRefused(principal, "the network this request comes from is locked")

    async def _client_credentials(
        self, form: Mapping[str, str], proof: DPoPProof, now: float, source_ip: str, user_agent: str
    ) -> TokenGrant:
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise InvalidClient(f"client_assertion_type must be {ASSERTION_TYPE}")
        assertion = form.get("client_assertion")
        if not assertion:
            raise InvalidClient("missing client_assertion")
        snapshot = self._snapshot()
        client = verify_client_assertion(
            assertion,
            audiences=self._audiences,
            lookup=lambda client_id, kid: (
                dict(key) if (key := snapshot.device_key(client_id, kid)) is not None else None
            ),
            replay=self._assertion_replay,
            now=now,
        )
        if form.get("client_id") not in (None, client.client_id):
            raise InvalidClient("client_id does not match the client assertion")
        if proof.jkt != client.jkt:
            raise InvalidClient("the DPoP proof must be signed by the client assertion's key")
        self._check_principal(snapshot, client.client_id, client.jkt, now, source=source_ip)
        mfa_at = await self._check_mfa(form, client.client_id, now)
        auth_time, amr, acr = auth_context(mfa_at)
        facts = snapshot.principals[client.client_id]
        family = "fam_" + secrets.token_hex(8)
        refresh = secrets.token_urlsafe(32)
        access, _ = self._codec.issue(
            sub=client.client_id,
            client_id=client.client_id,
            org=facts.org,
            jkt=client.jkt,
            family=family,
            ttl=self._access_ttl,
            now=now,
            auth_time=auth_time,
            amr=amr,
            acr=acr,
        )
        event = TokenEvent(
            time=now,
            actor=client.client_id,
            action="issued",
            principal=client.client_id,
            family=family,
            jkt=client.jkt,
            source_ip=source_ip,
            amr=amr,
            client=user_agent,
        )

        def persist() -> None:
            with self._store.begin() as conn:
                token_rows.add_family(conn, family, client.client_id, client.jkt, now, mfa_at)
                token_rows.add_refresh(
                    conn, refresh_digest(refresh), family, now, now + self._refresh_ttl
                )
                principal_rows.touch(conn, client.client_id, now)  # activity, for dormancy
                self._audit.append(conn, [event])

        try:
            await anyio.to_thread.run_sync(persist)
        except Exception:
            log.exception("could not record a token grant")
            raise Unavailable("the audit log cannot record; no token is issued") from None
        return TokenGrant(access, self._access_ttl, refresh, family)

    async def _check_mfa(self, form: Mapping[str, str], principal: str, now: float) -> float | None:
        """``now`` if the form's ``mfa_code`` is accepted for ``principal``; None without one."""
        code = form.get("mfa_code")
        if code is None:
            return None
        if self._mfa is None:
            raise InvalidRequest("MFA is not enabled on this server")
        await anyio.to_thread.run_sync(self._mfa.verify, principal, code, now)
        return now

    async def _token_exchange(
        self, form: Mapping[str, str], proof: DPoPProof, now: float, source_ip: str, user_agent: str
    ) -> TokenGrant:
        if self._federation is None:
            raise UnsupportedGrantType("token exchange is not enabled on this server")
        snapshot = self._snapshot()
        verified = await exchange.verify_exchange(form, self._federation, snapshot, now)
        holder, subject = verified.holder.principal, verified.subject.principal
        self._check_principal(snapshot, holder, proof.jkt, now, source=source_ip)
        if verified.actor is not None:  # the subject must not be locked or disabled either
            self._check_principal_state(snapshot, subject, now)
        family = "fam_" + secrets.token_hex(8)
        mfa_at = verified.holder.mfa_at
        access, _ = self._codec.issue(
            sub=subject,
            client_id=holder,
            org=snapshot.principals[subject].org,
            jkt=proof.jkt,
            family=family,
            ttl=self._access_ttl,
            now=now,
            act=verified.act,
            auth_time=mfa_at,
            amr=("pop", "mfa") if mfa_at is not None else ("pop",),
            acr=verified.holder.acr,
        )
        event = TokenEvent(
            time=now,
            actor=holder,
            action="exchanged",
            principal=subject,
            family=family,
            jkt=proof.jkt,
            source_ip=source_ip,
            grant_type="token-exchange",
            act=verified.act,
            reason=f"id token from {verified.holder.issuer}",
            client=user_agent,
        )

        def persist() -> None:
            with self._store.begin() as conn:
                token_rows.add_family(conn, family, subject, proof.jkt, now)
                principal_rows.touch(conn, holder, now)  # activity, for dormancy
                self._audit.append(conn, [event])

        try:
            await anyio.to_thread.run_sync(persist)
        except Exception:
            log.exception("could not record a token exchange")
            raise Unavailable("the audit log cannot record; no token is issued") from None
        return TokenGrant(access, self._access_ttl, None, family)

    def _check_principal_state(self, snapshot: Snapshot, principal: str, now: float) -> None:
        if snapshot.config.detection.honeytokens.covers(principal):
            raise HoneytokenPresented(principal, "")
        facts = snapshot.principals.get(principal)
        if facts is None or facts.disabled:
            raise PrincipalRefused(
                principal, f"principal {principal!r} is disabled or does not exist"
            )
        if snapshot.lock_on([("principal", principal), ("org", facts.org)], now) is not None:
            raise PrincipalRefused(principal, f"principal {principal!r} is locked")

    async def _refresh(
        self, form: Mapping[str, str], proof: DPoPProof, now: float, source_ip: str, user_agent: str
    ) -> TokenGrant:
        presented = form.get("refresh_token")
        if not presented:
            raise InvalidRequest("missing refresh_token")
        snapshot = self._snapshot()
        digest = refresh_digest(presented)
        new_refresh = secrets.token_urlsafe(32)
        outcome, family = await anyio.to_thread.run_sync(
            self._rotate,
            digest,
            refresh_digest(new_refresh),
            proof.jkt,
            now,
            source_ip,
            user_agent,
        )
        if outcome is _Refresh.REUSED:
            await self._on_change()
            raise InvalidGrant("refresh token was already used; the token family is revoked")
        if outcome is _Refresh.WRONG_KEY:
            await self._on_change()
            raise InvalidGrant(
                "the refresh token is bound to another device key; the token family is revoked"
            )
        if outcome is not _Refresh.OK or family is None:
            raise RefreshRefused(
                family,
                {
                    _Refresh.UNKNOWN: "unknown refresh token",
                    _Refresh.REVOKED: "the token family is revoked",
                    _Refresh.WRONG_KEY: "the refresh token is bound to another device key",
                    _Refresh.EXPIRED: "the refresh token has expired",
                }.get(outcome, "refresh refused"),
            )
        self._check_principal(
            snapshot, family.principal, family.jkt, now, family.id, source=source_ip
        )
        facts = snapshot.principals[family.principal]
        auth_time, amr, acr = auth_context(family.mfa_at)  # the login's MFA time, not now
        access, _ = self._codec.issue(
            sub=family.principal,
            client_id=family.principal,
            org=facts.org,
            jkt=family.jkt,
            family=family.id,
            ttl=self._access_ttl,
            now=now,
            auth_time=auth_time,
            amr=amr,
            acr=acr,
        )
        return TokenGrant(access, self._access_ttl, new_refresh, family.id)

    def _rotate(
        self,
        digest: str,
        new_digest: str,
        jkt: str,
        now: float,
        source_ip: str,
        user_agent: str = "",
    ) -> tuple[_Refresh, token_rows.FamilyRow | None]:
        """One transaction: find, check and rotate the refresh token; on reuse revoke and lock
        the family. Returns what happened and the family."""
        with self._store.begin() as conn:
            row = token_rows.get_refresh(conn, digest)
            if row is None:
                return _Refresh.UNKNOWN, None
            family = token_rows.get_family(conn, row.family)
            if family is None:
                return _Refresh.UNKNOWN, None
            if family.revoked_at is not None:
                return _Refresh.REVOKED, family
            if family.jkt != jkt:  # a refresh token without its device key: treat as theft
                self._revoke_family(
                    conn, family, now, source_ip, "refresh token used by another key"
                )
                return _Refresh.WRONG_KEY, family
            if row.expires_at <= now:
                return _Refresh.EXPIRED, family
            if not token_rows.rotate_refresh(conn, digest, now):
                self._revoke_family(conn, family, now, source_ip)
                return _Refresh.REUSED, family
            token_rows.add_refresh(conn, new_digest, family.id, now, now + self._refresh_ttl)
            snapshot = self._holder.current  # a dormant principal's refused refresh is no activity
            if snapshot is not None and not snapshot.dormant(family.principal, now):
                principal_rows.touch(conn, family.principal, now)
            event = TokenEvent(
                time=now,
                actor=family.principal,
                action="refreshed",
                principal=family.principal,
                family=family.id,
                jkt=jkt,
                source_ip=source_ip,
                client=user_agent,
            )
            self._audit.append(conn, [event])
            return _Refresh.OK, family

    def _revoke_family(
        self,
        conn: sa.Connection,
        family: token_rows.FamilyRow,
        now: float,
        source_ip: str,
        reason: str = "refresh token reuse",
    ) -> None:
        token_rows.revoke_family(conn, family.id, reason, now)
        lock_rows.insert(
            conn,
            LockRow(
                id="lk_" + secrets.token_hex(8),
                target_type="family",
                target=family.id,
                reason=reason,
                author=SERVICE_ACTOR,
                created_at=now,
                expires_at=None,
                released_at=None,
                released_by=None,
            ),
        )
        event = TokenEvent(
            time=now,
            actor=SERVICE_ACTOR,
            action="family_revoked",
            principal=family.principal,
            family=family.id,
            jkt=family.jkt,
            source_ip=source_ip,
            error=reason,
        )
        self._audit.append(conn, [event])
        state.bump_epoch(conn)
        if self._on_family_revoked is not None:  # only enqueues; the caller's commit follows
            self._on_family_revoked(family.principal, family.id, reason)

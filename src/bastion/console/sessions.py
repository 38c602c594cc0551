"""Console sessions, kept in the database so every gateway process of a cluster sees them.

- The **session id** is 32 random bytes (URL-safe base64) held only in the browser's cookie;
  the table keeps its SHA-256 digest. The **CSRF token** of a session is an HMAC of the
  session id, so it is per session, needs no column, and tells nothing about the id.
- A session ends when it is **idle** for ``IDLE_SECONDS``, at its **absolute** limit
  ``ABSOLUTE_SECONDS`` after sign-in, on sign-out, or when the guard finds its principal locked.
  A session still owing its TOTP code (``mfa_pending``) lasts ``PENDING_SECONDS`` at most and
  opens the TOTP page only; passing it replaces the session id (no fixation).
- A **login code** (the one-time link the CLI prints) lives ``LINK_SECONDS`` and works once.

Sign-in, the TOTP step and sign-out are recorded in the audit log (``console.*`` events).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from bastion.audit.events import AdminAction
from bastion.audit.log import AuditLog
from bastion.store import Store
from bastion.store import console as rows
from bastion.store.console import SessionRow

IDLE_SECONDS = 30 * 60
ABSOLUTE_SECONDS = 12 * 3600
PENDING_SECONDS = 5 * 60
LINK_SECONDS = 120
TOUCH_EVERY = 30.0  # seconds between last-seen writes for one session
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 bytes, URL-safe base64 without padding


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def well_formed(value: str) -> bool:
    """Whether ``value`` looks like a session id or login code (checked before any lookup)."""
    return _TOKEN.fullmatch(value) is not None


def csrf_token(session_id: str) -> str:
    return hmac.new(session_id.encode(), b"bastion-console-csrf", hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    """A live session as the guard sees it; ``csrf`` is the token its forms must carry."""

    row: SessionRow
    csrf: str

    @property
    def principal(self) -> str:
        return self.row.principal

    @property
    def mfa_pending(self) -> bool:
        return self.row.mfa_pending


class SessionService:
    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        clock: Callable[[], float] = time.time,
        *,
        idle: float = IDLE_SECONDS,
        absolute: float = ABSOLUTE_SECONDS,
        link_ttl: float = LINK_SECONDS,
    ) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock
        self.idle = idle
        self.absolute = absolute
        self.link_ttl = link_ttl

    def now(self) -> float:
        return self._clock()

    # -- login links ----------------------------------------------------------------------------

    def issue_code(self, principal: str) -> str:
        """A new one-time login code for ``principal`` (the caller authorized it)."""
        code = secrets.token_urlsafe(32)
        now = self._clock()
        with self._store.begin() as conn:
            rows.purge(conn, now - 86400)
            rows.insert_code(conn, _digest(code), principal, now, now + self.link_ttl)
            self._audit.append(conn, [self._event(principal, "console.link_issued", now)])
        return code

    def redeem(self, code: str) -> str | None:
        """Spend a login code: its principal, or None if it is unknown, used or expired."""
        if not well_formed(code):
            return None
        with self._store.begin() as conn:
            return rows.use_code(conn, _digest(code), self._clock())

    # -- OIDC sign-in state ---------------------------------------------------------------------

    def remember_state(self, state: str, issuer: str, ttl: float) -> None:
        """Keep an OIDC sign-in's ``state`` (its digest) for ``ttl`` seconds and one use. It lives
        in the login-code table under its own digest namespace, the issuer's name in the
        ``principal`` column: no login link can ever equal it, nor it a link."""
        now = self._clock()
        with self._store.begin() as conn:
            rows.purge(conn, now - 86400)
            rows.insert_code(conn, _digest("oidc-state:" + state), issuer, now, now + ttl)

    def spend_state(self, state: str) -> str | None:
        """Spend an OIDC ``state``: the issuer it was made for, or None (unknown, used, expired)."""
        if not well_formed(state):
            return None
        with self._store.begin() as conn:
            return rows.use_code(conn, _digest("oidc-state:" + state), self._clock())

    # -- sessions -------------------------------------------------------------------------------

    def start(
        self, principal: str, *, method: str, mfa_pending: bool, idp_mfa: bool = False
    ) -> str:
        """A new session; returns its id (for the cookie). Audited as ``console.signed_in``
        unless a TOTP code is still owed (then :meth:`complete_mfa` records it). ``idp_mfa``:
        the identity provider vouched for multi-factor sign-in (its ``amr``)."""
        now = self._clock()
        session_id = secrets.token_urlsafe(32)
        limit = now + (PENDING_SECONDS if mfa_pending else self.absolute)
        mfa_at = now if idp_mfa else None
        row = SessionRow(
            _digest(session_id), principal, method, now, now, limit, mfa_pending, mfa_at
        )
        with self._store.begin() as conn:
            rows.insert_session(conn, row)
            if not mfa_pending:
                extra: dict[str, object] = {"mfa": "idp"} if idp_mfa else {}
                event = self._event(principal, "console.signed_in", now, method=method, **extra)
                self._audit.append(conn, [event])
        return session_id

    def complete_mfa(self, session: Session, old_id: str) -> str:
        """The TOTP code was accepted: end the pending session, start a full one (new id)."""
        now = self._clock()
        principal, method = session.principal, session.row.method
        new_id = secrets.token_urlsafe(32)
        row = SessionRow(
            _digest(new_id), principal, method, now, now, now + self.absolute, False, now
        )
        with self._store.begin() as conn:
            rows.end_session(conn, _digest(old_id), "mfa_passed", now)
            rows.insert_session(conn, row)
            event = self._event(principal, "console.signed_in", now, method=method, mfa=True)
            self._audit.append(conn, [event])
        return new_id

    def resolve(self, session_id: str, *, touch: bool = True) -> Session | None:
        """The live session with this id, or None (unknown, ended, idle or past its limit).
        ``touch`` counts the request as activity (the live stream does not)."""
        if not well_formed(session_id):
            return None
        now = self._clock()
        id_hash = _digest(session_id)
        with self._store.read() as conn:
            row = rows.get_session(conn, id_hash)
        if row is None or row.ended_at is not None:
            return None
        if now >= row.expires_at or now - row.last_seen_at >= self.idle:
            reason = "expired" if now >= row.expires_at else "idle"
            with self._store.begin() as conn:
                rows.end_session(conn, id_hash, reason, now)
            return None
        if touch and now - row.last_seen_at >= TOUCH_EVERY:
            with self._store.begin() as conn:
                rows.touch(conn, id_hash, now)
        return Session(row, csrf_token(session_id))

    def end(self, session_id: str, *, reason: str = "signed_out") -> None:
        """Sign out (idempotent)."""
        if not well_formed(session_id):
            return
        now = self._clock()
        with self._store.begin() as conn:
            row = rows.get_session(conn, _digest(session_id))
            if row is not None and rows.end_session(conn, row.id_hash, reason, now):
                event = self._event(row.principal, "console.signed_out", now, reason=reason)
                self._audit.append(conn, [event])

    def end_all(self, principal: str, *, reason: str) -> int:
        """End every session of ``principal`` (a lock, say); returns how many were live."""
        now = self._clock()
        with self._store.begin() as conn:
            count = rows.end_sessions_of(conn, principal, reason, now)
            if count:
                event = self._event(principal, "console.signed_out", now, reason=reason)
                self._audit.append(conn, [event])
        return count

    def _event(self, principal: str, action: str, now: float, **detail: object) -> AdminAction:
        return AdminAction(
            time=now,
            actor=principal,
            action=action,
            target_type="principal",
            target=principal,
            reason=str(detail.pop("reason", "")),
            detail=dict(detail),
        )

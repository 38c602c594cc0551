"""Principals and their device keys: adding, enrolling (one-time code or directly), revoking.

Every change is one transaction: the rows, the audit event and the state-epoch bump together.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

from bastion.audit.events import AdminAction, Event
from bastion.audit.log import AuditLog
from bastion.config import BastionConfig
from bastion.errors import BadRequest, Conflict, InvalidGrant, NotFound
from bastion.store import Store, state
from bastion.store import keys as key_rows
from bastion.store import principals as principal_rows
from bastion.store.keys import DeviceKeyRow
from bastion.store.principals import PrincipalRow

from .keys import jwk_alg, public_jwk, thumbprint

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
KINDS = ("user", "service")
CODE_TTL = 15 * 60
ALLOWED_KEYS = {("OKP", "Ed25519"), ("EC", "P-256")}


def code_digest(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def check_public_jwk(jwk: Mapping[str, Any]) -> dict[str, str]:
    """A device key must be a public Ed25519 or P-256 key; anything else is refused."""
    if not isinstance(jwk, Mapping):
        raise BadRequest("the device key must be a JWK object")
    if "d" in jwk or any(k in jwk for k in ("p", "q", "dp", "dq", "qi", "k")):
        raise BadRequest("the device key JWK contains private key material; send the public key")
    if (jwk.get("kty"), jwk.get("crv")) not in ALLOWED_KEYS:
        raise BadRequest("device keys must be Ed25519 (OKP) or P-256 (EC) public keys")
    try:
        key = public_jwk(dict(jwk))
        thumbprint(key)
        jwk_alg(key)
    except Exception:
        raise BadRequest("the device key JWK is malformed") from None
    return key


class PrincipalService:
    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        clock: Callable[[], float] = time.time,
        on_key_revoked: Callable[[str, str, str], object] | None = None,
    ) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock
        # After commit, with (principal, jkt, reason): e.g. the CAEP emitter (identity/caep.py).
        self._on_key_revoked = on_key_revoked

    def _commit(self, change: Callable[[Any], None], event: Event) -> int:
        with self._store.begin() as conn:
            change(conn)
            self._audit.append(conn, [event])
            return state.bump_epoch(conn)

    def add(
        self,
        config: BastionConfig,
        name: str,
        *,
        kind: str,
        org: str,
        author: str,
        source: str = "cli",
    ) -> None:
        if not NAME.match(name):
            raise BadRequest(
                "principal names are 1-63 characters of a-z, 0-9, '.', '_', '-' "
                "starting with a letter or digit"
            )
        if kind not in KINDS:
            raise BadRequest(f"principal kind must be one of {', '.join(KINDS)}")
        if org not in config.orgs:
            raise BadRequest(f"unknown org {org!r} (declared: {', '.join(sorted(config.orgs))})")
        now = self._clock()
        with self._store.read() as conn:
            if principal_rows.get(conn, name) is not None:
                raise Conflict(f"principal {name!r} already exists")
        row = PrincipalRow(name, kind, org, source, False, now)
        event = AdminAction(
            actor=author,
            time=now,
            action="principal.created",
            target_type="principal",
            target=name,
            detail={"kind": kind, "org": org, "source": source},
        )
        self._commit(lambda conn: principal_rows.insert(conn, row), event)

    def get(self, name: str) -> PrincipalRow:
        with self._store.read() as conn:
            row = principal_rows.get(conn, name)
        if row is None:
            raise NotFound(f"no principal named {name!r}")
        return row

    def all(self) -> list[PrincipalRow]:
        with self._store.read() as conn:
            return principal_rows.list_all(conn)

    def keys(self, name: str) -> list[DeviceKeyRow]:
        self.get(name)
        with self._store.read() as conn:
            return key_rows.for_principal(conn, name)

    def issue_code(self, name: str, *, author: str, ttl: int = CODE_TTL) -> str:
        """A one-time enrollment code for ``name`` (only its digest is stored)."""
        self.get(name)
        code = secrets.token_urlsafe(18)
        now = self._clock()
        event = AdminAction(
            actor=author,
            time=now,
            action="enrollment.code_issued",
            target_type="principal",
            target=name,
            detail={"expires_at": now + ttl},
        )
        self._commit(
            lambda conn: key_rows.add_code(conn, name, code_digest(code), now, now + ttl), event
        )
        return code

    def enroll(self, name: str, jwk: Mapping[str, Any], *, author: str) -> str:
        """Enroll a public key directly (an admin with the key in hand). Returns its thumbprint."""
        self.get(name)
        key = check_public_jwk(jwk)
        return self._insert_key(name, key, author=author, via="admin")

    def enroll_with_code(self, name: str, code: str, jwk: Mapping[str, Any]) -> str:
        """Enroll a key presented with a one-time code; the code is spent either way."""
        key = check_public_jwk(jwk)
        now = self._clock()
        with self._store.begin() as conn:
            redeemed = key_rows.redeem_code(conn, name, code_digest(code), now)
        if not redeemed:
            raise InvalidGrant("invalid, expired or already used enrollment code")
        return self._insert_key(name, key, author=f"principal:{name}", via="code")

    def _insert_key(self, name: str, key: dict[str, str], *, author: str, via: str) -> str:
        jkt = thumbprint(key)
        now = self._clock()
        with self._store.read() as conn:
            if key_rows.get(conn, jkt) is not None:
                raise Conflict("this device key is already enrolled")
        row = DeviceKeyRow(jkt, name, key, jwk_alg(key), now, None)
        event = AdminAction(
            actor=author,
            time=now,
            action="key.enrolled",
            target_type="key",
            target=jkt,
            detail={"principal": name, "via": via, "alg": row.alg},
        )
        self._commit(lambda conn: key_rows.insert(conn, row), event)
        return jkt

    def revoke_key(self, jkt: str, *, author: str, reason: str) -> None:
        now = self._clock()
        with self._store.begin() as conn:
            row = key_rows.get(conn, jkt)
            if row is None or not key_rows.revoke(conn, jkt, now):
                raise NotFound("no active device key with that thumbprint")
            event = AdminAction(
                actor=author,
                time=now,
                action="key.revoked",
                target_type="key",
                target=jkt,
                reason=reason,
                detail={"principal": row.principal},
            )
            self._audit.append(conn, [event])
            state.bump_epoch(conn)
        if self._on_key_revoked is not None:
            self._on_key_revoked(row.principal, jkt, reason)

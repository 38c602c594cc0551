"""MFA: one TOTP factor (RFC 6238, via pyotp) per user, checked at the token endpoint.

- **Enrolment** is an admin act (``bastion mfa enroll NAME``): the secret is shown once, as an
  ``otpauth://`` URI and in base32, for the user's authenticator app. Services get no factor:
  a workload has no person to type a code.
- **At rest** the secret is sealed with AES-256-GCM under ``mfa.key`` in the state directory
  (32 random bytes, hex, mode 0600, made on first use); the principal's name is the associated
  data, so a sealed secret copied into another principal's row does not open.
- **Verification**: 6 digits, 30-second steps, one step of clock drift either way. A step is
  used once: ``last_step`` only grows, so a replayed (or concurrently reused) code is refused.
  After ``MAX_FAILURES`` wrong codes in a row the factor refuses codes for ``THROTTLE_SECONDS``
  after each further failure, so guessing 10^6 codes is not practical.
- The factor is confirmed by its first successful use.

Codes and secrets never reach an audit event, a log line or an error message.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pyotp
import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bastion.audit.events import AdminAction
from bastion.audit.log import AuditLog
from bastion.errors import BadRequest, ConfigError, Conflict, InvalidGrant, NotFound
from bastion.store import Store
from bastion.store import mfa as mfa_rows
from bastion.store import principals as principal_rows
from bastion.store.mfa import FactorRow

from .keys import read_private_file, write_private_file

log = logging.getLogger("bastion.identity")

KEY_FILE = "mfa.key"
STEP_SECONDS = 30
DIGITS = 6
VALID_WINDOW = 1  # steps of clock drift accepted either side of now
MAX_FAILURES = 5
THROTTLE_SECONDS = 300
ISSUER_NAME = "Bastion"
# What access tokens say about how the caller authenticated (RFC 8176 amr values).
ACR_KEY = "urn:bastion:acr:key"
ACR_MFA = "urn:bastion:acr:mfa"
ACR_VALUES = (ACR_KEY, ACR_MFA)
AMR_KEY = ("pop",)
AMR_MFA = ("pop", "otp")
_CODE = re.compile(r"[0-9]{6}", re.ASCII)
_SEALED_PREFIX = "v1."
_NONCE_BYTES = 12


class MfaRefused(InvalidGrant):
    """A refused MFA code, carrying the principal it was for (for the ``token.refused`` event)."""

    def __init__(self, principal: str, message: str) -> None:
        super().__init__(message)
        self.principal = principal


class SecretBox:
    """AES-256-GCM sealing of TOTP secrets, bound to the principal they belong to."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the MFA key must be 32 bytes")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:  # never the key
        return "SecretBox()"

    @classmethod
    def load_or_create(cls, path: Path) -> SecretBox:
        """Read the key at ``path``, creating it (mode 0600) if there is none yet; two processes
        starting together agree on one key (creation never replaces a file)."""
        if not path.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                write_private_file(path, secrets.token_hex(32).encode() + b"\n", exclusive=True)
        try:
            key = bytes.fromhex(read_private_file(path).decode().strip())
        except (ValueError, UnicodeDecodeError):
            raise ConfigError(str(path), ["is not a hex MFA key"]) from None
        if len(key) != 32:
            raise ConfigError(str(path), ["the MFA key must be 32 bytes (64 hex digits)"])
        return cls(key)

    def seal(self, principal: str, secret: str) -> str:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret.encode(), principal.encode())
        return _SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, principal: str, sealed: str) -> str:
        """The secret; ``ValueError`` if it was sealed under another key or for another
        principal, or was altered."""
        if not sealed.startswith(_SEALED_PREFIX):
            raise ValueError("not a sealed MFA secret")
        try:
            raw = base64.urlsafe_b64decode(sealed[len(_SEALED_PREFIX) :].encode())
            plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], principal.encode())
        except (binascii.Error, InvalidTag, ValueError):
            raise ValueError("the sealed MFA secret does not open with this key") from None
        return plain.decode()


@dataclass(frozen=True, slots=True)
class Enrollment:
    """A new factor: the secret and its ``otpauth://`` URI, to be shown once and never stored."""

    principal: str
    secret: str = field(repr=False)
    uri: str = field(repr=False)


def totp(secret: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)


def check_code_format(principal: str, code: str) -> None:
    """Exactly six ASCII digits; anything else is refused before the factor is looked at."""
    if not _CODE.fullmatch(code):
        raise MfaRefused(principal, f"mfa_code must be {DIGITS} digits")


def matching_step(secret: str, code: str, now: float) -> int | None:
    """The latest time step within the window whose code is ``code``, or None."""
    otp = totp(secret)
    current = int(now // STEP_SECONDS)
    found = None
    for step in range(current - VALID_WINDOW, current + VALID_WINDOW + 1):
        if hmac.compare_digest(otp.generate_otp(step).encode(), code.encode()):
            found = step
    return found


class MfaService:
    """Enrols, removes, lists and verifies TOTP factors. ``key_file`` is read on first use."""

    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        key_file: Path,
        *,
        issuer_name: str = ISSUER_NAME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._audit = audit
        self._key_file = key_file
        self._issuer_name = issuer_name
        self._clock = clock

    @cached_property
    def _box(self) -> SecretBox:
        return SecretBox.load_or_create(self._key_file)

    def enroll(self, principal: str, *, author: str) -> Enrollment:
        """A new factor for user ``principal``; ``Conflict`` if one exists (remove it first)."""
        box = self._box
        secret = pyotp.random_base32()
        now = self._clock()
        event = AdminAction(
            actor=author,
            time=now,
            action="mfa.enrolled",
            target_type="principal",
            target=principal,
            detail={"method": "totp"},
        )
        try:
            with self._store.begin() as conn:
                row = principal_rows.get(conn, principal)
                if row is None:
                    raise NotFound(f"no principal named {principal!r}")
                if row.kind != "user":
                    raise BadRequest(
                        f"{principal!r} is a {row.kind}: MFA factors are for users (people with "
                        "an authenticator app); services authenticate with their device key"
                    )
                if mfa_rows.get(conn, principal) is not None:
                    raise Conflict(
                        f"{principal!r} already has an MFA factor; remove it first with "
                        f"`bastion mfa remove {principal}`"
                    )
                mfa_rows.insert(conn, principal, box.seal(principal, secret), now)
                self._audit.append(conn, [event])
        except sa.exc.IntegrityError:  # enrolled concurrently
            raise Conflict(f"{principal!r} already has an MFA factor") from None
        uri = totp(secret).provisioning_uri(name=principal, issuer_name=self._issuer_name)
        return Enrollment(principal, secret, uri)

    def remove(self, principal: str, *, author: str, reason: str = "") -> None:
        now = self._clock()
        event = AdminAction(
            actor=author,
            time=now,
            action="mfa.removed",
            target_type="principal",
            target=principal,
            reason=reason,
        )
        with self._store.begin() as conn:
            if not mfa_rows.delete(conn, principal):
                raise NotFound(f"{principal!r} has no MFA factor")
            self._audit.append(conn, [event])

    def factors(self) -> list[FactorRow]:
        with self._store.read() as conn:
            return mfa_rows.list_all(conn)

    def verify(self, principal: str, code: str, now: float) -> None:
        """Accept ``code`` for ``principal`` at ``now`` or raise :class:`MfaRefused` saying why.

        An accepted code spends its time step; a wrong one counts towards the throttle."""
        check_code_format(principal, code)
        with self._store.begin() as conn:
            problem = self._check(conn, principal, code, now)
        if problem:
            raise MfaRefused(principal, problem)

    def _check(self, conn: sa.Connection, principal: str, code: str, now: float) -> str:
        """The refusal message, or "" once the code's step is recorded as used."""
        row = mfa_rows.get(conn, principal)
        if row is None:
            return (
                f"principal {principal!r} has no MFA factor enrolled; an admin enrols one with "
                f"`bastion mfa enroll {principal}`"
            )
        if row.failures >= MAX_FAILURES and row.failed_at is not None:
            wait = row.failed_at + THROTTLE_SECONDS - now
            if wait > 0:
                return f"too many wrong MFA codes; try again in {int(wait) + 1} s"
        try:
            secret = self._box.open(principal, row.secret)
        except ConfigError as error:  # fail closed; the details are for the operator only
            log.error("cannot check MFA codes: %s", error.message)
            return "MFA codes cannot be checked on this server right now; tell an admin"
        except ValueError:
            log.error("the MFA factor of %s does not open with %s", principal, self._key_file)
            return "the MFA factor cannot be read on this server; an admin must re-enrol it"
        step = matching_step(secret, code, now)
        if step is None:
            mfa_rows.record_failure(conn, principal, now)
            return "the MFA code is wrong or has expired"
        if not mfa_rows.accept_step(conn, principal, step, now):
            return "this MFA code was already used; wait for the next one"
        return ""


def auth_context(mfa_at: float | None) -> tuple[int | None, tuple[str, ...], str]:
    """``auth_time``, ``amr`` and ``acr`` of an access token whose family passed MFA at
    ``mfa_at`` (None: it did not, and the token says only that the device key was proven)."""
    if mfa_at is None:
        return None, AMR_KEY, ACR_KEY
    return int(mfa_at), AMR_MFA, ACR_MFA

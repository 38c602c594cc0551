"""Locks: containment on a target, effective on the next request in every process.

A lock is a row plus an epoch bump in one transaction, with its audit event in the same
transaction; gateways pick the new epoch up (``bastion.sync``) and end open streams it covers.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import time
from collections.abc import Callable

from bastion.audit.events import AdminAction
from bastion.audit.log import AuditLog
from bastion.config import BastionConfig
from bastion.errors import BadRequest, NotFound
from bastion.policy.authorize import NETWORK_PREFIXES  # what the gateway can look up
from bastion.store import Store, state
from bastion.store import keys as key_rows
from bastion.store import locks as lock_rows
from bastion.store import principals as principal_rows
from bastion.store import tokens as token_rows
from bastion.store.locks import LockRow

LOCK_TYPES = (
    "principal",
    "org",
    "key",
    "family",
    "compartment",
    "network",  # a source network (a CIDR of one of the NETWORK_PREFIXES lengths)
    "stepup",  # a principal must log in again with MFA (passes once it has)
    "throttle",  # a principal is held to ``rate`` requests per minute
    "all",
)
MAX_RATE = 10_000.0
_TARGET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
# A device key is named by its thumbprint (RFC 7638, base64url): it may start with '-' or '_'.
_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")
MAX_TTL = 365 * 24 * 3600


def validate_target(target_type: str, target: str) -> str:
    if target_type not in LOCK_TYPES:
        raise BadRequest(f"unknown lock type {target_type!r}: use one of {', '.join(LOCK_TYPES)}")
    if target_type == "all":
        return "*"
    if target_type == "network":
        return _network(target)
    if not (_KEY if target_type == "key" else _TARGET).fullmatch(target):  # "$" would pass "\n"
        raise BadRequest(f"invalid {target_type} name for a lock target")
    return target


def validate_rate(target_type: str, rate: float | None) -> None:
    """A throttle lock needs a rate (requests per minute, finite, above 0); others take none."""
    if (target_type == "throttle") != (rate is not None):
        raise BadRequest("a throttle lock needs a rate (requests per minute); others take none")
    if rate is not None and not 0 < rate <= MAX_RATE:  # NaN fails this too
        raise BadRequest(f"throttle rate must be above 0 and at most {MAX_RATE:g} per minute")


def _network(target: str) -> str:
    """A CIDR (or a bare address, taken as /32 or /128), normalized; host bits must be zero."""
    text = target.strip()
    try:
        if "%" in text:  # a scoped IPv6 address names an interface, not a network
            raise ValueError(text)
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise BadRequest(
            "invalid network for a lock target: use a CIDR such as 203.0.113.0/24"
        ) from None
    if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped:
        raise BadRequest("lock an IPv4-mapped network by its IPv4 form, such as 203.0.113.0/24")
    allowed = NETWORK_PREFIXES[network.version]
    if network.prefixlen not in allowed:
        lengths = ", ".join(f"/{n}" for n in allowed)
        raise BadRequest(f"network locks take IPv{network.version} prefixes {lengths} only")
    if ipaddress.ip_interface(text).ip != network.network_address:
        raise BadRequest(f"the network has host bits set: did you mean {network}?")
    return str(network)


class LockService:
    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        clock: Callable[[], float] = time.time,
        on_lock: Callable[[LockRow], object] | None = None,
    ) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock
        self._on_lock = on_lock  # after commit: e.g. the CAEP emitter (identity/caep.py)

    def lock(
        self,
        target_type: str,
        target: str,
        *,
        reason: str,
        author: str,
        ttl: float | None = None,
        rate: float | None = None,
    ) -> tuple[LockRow, int]:
        """Lock a target; returns the lock and the state epoch that carries it. ``rate``
        (requests per minute) is for throttle locks and required by them."""
        target = validate_target(target_type, target)
        validate_rate(target_type, rate)
        reason = reason.strip()
        if not reason or len(reason) > 500:
            raise BadRequest("a lock needs a reason of 1 to 500 characters")
        if ttl is not None and not 0 < ttl <= MAX_TTL:
            raise BadRequest(f"lock ttl must be between 1 second and {MAX_TTL} seconds")
        now = self._clock()
        row = LockRow(
            id="lk_" + secrets.token_hex(8),
            target_type=target_type,
            target=target,
            reason=reason,
            author=author,
            created_at=now,
            expires_at=now + ttl if ttl else None,
            released_at=None,
            released_by=None,
            rate=rate,
        )
        event = AdminAction(
            actor=author,
            time=now,
            action="lock.created",
            target_type=target_type,
            target=target,
            reason=reason,
            detail={"lock": row.id, "expires_at": row.expires_at}
            | ({"rate": rate} if rate is not None else {}),
        )
        with self._store.begin() as conn:
            lock_rows.insert(conn, row)
            self._audit.append(conn, [event])
            epoch = state.bump_epoch(conn)
        if self._on_lock is not None:
            self._on_lock(row)
        return row, epoch

    def known(self, target_type: str, target: str, config: BastionConfig) -> bool:
        """Whether the target exists (a lock on a typo would contain nobody)."""
        if target_type == "all":
            return True
        if target_type == "org":
            return target in config.orgs
        if target_type == "compartment":
            return target in config.compartments
        if target_type == "network":
            return True  # any network may be locked
        with self._store.read() as conn:
            if target_type in ("principal", "stepup", "throttle"):
                return target in config.principals or principal_rows.get(conn, target) is not None
            if target_type == "key":
                return key_rows.get(conn, target) is not None
            return token_rows.get_family(conn, target) is not None

    def unlock(
        self, target_type: str, target: str, *, author: str, reason: str = ""
    ) -> tuple[list[LockRow], int]:
        target = validate_target(target_type, target)
        now = self._clock()
        with self._store.begin() as conn:
            released = lock_rows.release(conn, target_type, target, author, now)
            if not released:
                raise NotFound(f"no active lock on {target_type} {target}")
            event = AdminAction(
                actor=author,
                time=now,
                action="lock.released",
                target_type=target_type,
                target=target,
                reason=reason,
                detail={"locks": [lock.id for lock in released]},
            )
            self._audit.append(conn, [event])
            epoch = state.bump_epoch(conn)
        return released, epoch

    def release(self, lock_id: str, *, author: str, reason: str) -> tuple[LockRow, int]:
        """Release one lock by id (other locks on the same target stay in force)."""
        now = self._clock()
        with self._store.begin() as conn:
            released = lock_rows.release_one(conn, lock_id, author, now)
            if released is None:
                raise NotFound(f"no active lock {lock_id[:40]!r}")
            event = AdminAction(
                actor=author,
                time=now,
                action="lock.released",
                target_type=released.target_type,
                target=released.target,
                reason=reason,
                detail={"locks": [released.id]},
            )
            self._audit.append(conn, [event])
            epoch = state.bump_epoch(conn)
        return released, epoch

    def active(self) -> list[LockRow]:
        with self._store.read() as conn:
            return lock_rows.active(conn, self._clock())

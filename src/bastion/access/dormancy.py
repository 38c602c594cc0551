"""Dormant accounts: a principal with no token issued or refreshed for ``dormant_after_days`` is
disabled until an admin enables it again.

Dormancy is computed, not stored: the snapshot carries every principal's last activity
(``last_active_at``, or ``created_at`` if it was never active), so the gateway and the token
endpoint decide exactly, to the second, without I/O. This module is the sweep's side of it: it
records one ``principal.disabled`` audit event per principal per dormancy, and it keeps the
snapshot's view of activity fresh where it matters (tokens do not bump the state epoch, so a
snapshot's activity can lag; the sweep reloads it before the lag could make an active principal
look dormant). ``enable`` counts as activity and ends a dormancy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from bastion.audit.events import AdminAction
from bastion.audit.log import AuditLog
from bastion.config.models import BastionConfig
from bastion.errors import BadRequest, NotFound
from bastion.policy.snapshot import Snapshot
from bastion.store import Store, state
from bastion.store import principals as principal_rows
from bastion.store import reviews as sweep_rows
from bastion.store.principals import PrincipalRow

DAY = 86400.0
SWEEP_ACTOR = "bastion:lifecycle"
MAX_REASON = 500


def last_activity(row: PrincipalRow) -> float:
    """When the principal was last active: its last token, or its creation if it never had one."""
    return row.last_active_at if row.last_active_at is not None else row.created_at


def is_dormant(last: float, now: float, after: float | None) -> bool:
    """Idle for ``after`` seconds or more (None: dormancy is off)."""
    return after is not None and now - last >= after


@dataclass(frozen=True, slots=True)
class SweepResult:
    disabled: tuple[str, ...]  # principals that went dormant since the last sweep
    refreshed: bool  # the snapshot's activity was stale and the epoch was bumped


class DormancyService:
    def __init__(
        self, store: Store, audit: AuditLog, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock

    def sweep(
        self, config: BastionConfig, snapshot: Snapshot | None = None, lookahead: float = 0.0
    ) -> SweepResult:
        """Record newly dormant principals; bump the epoch if ``snapshot`` would, within
        ``lookahead`` seconds, call dormant a principal whose stored activity is recent."""
        days = config.lifecycle.dormant_after_days
        if days is None:
            return SweepResult((), False)
        after, now = days * DAY, self._clock()
        with self._store.begin() as conn:
            sweep_rows.take_sweep_lock(conn)
            principals = [
                row for row in principal_rows.list_all(conn) if _org(config, row) in config.orgs
            ]
            dormant = {
                row.name: last_activity(row)
                for row in principals
                if is_dormant(last_activity(row), now, after)
            }
            recorded = sweep_rows.disabled_since(conn, min(dormant.values())) if dormant else {}
            new = sorted(n for n, last in dormant.items() if recorded.get(n, last - 1) < last)
            if new:
                events = [self._disabled(name, dormant[name], days) for name in new]
                self._audit.append(conn, events)
            stale = snapshot is not None and any(
                snapshot.dormant(row.name, now + lookahead)
                and not is_dormant(last_activity(row), now + lookahead, after)
                for row in principals
            )
            if stale:
                state.bump_epoch(conn)
        return SweepResult(tuple(new), stale)

    def _disabled(self, name: str, last: float, days: int) -> AdminAction:
        return AdminAction(
            actor=SWEEP_ACTOR,
            time=self._clock(),
            action="principal.disabled",
            target_type="principal",
            target=name,
            reason="dormant",
            detail={"last_active_at": last, "dormant_after_days": days},
        )

    def enable(self, name: str, *, author: str, reason: str = "") -> PrincipalRow:
        """End a dormancy: the principal counts as active now. Returns the row as it was."""
        reason = reason.strip()
        if len(reason) > MAX_REASON:
            raise BadRequest(f"the reason is limited to {MAX_REASON} characters")
        now = self._clock()
        with self._store.begin() as conn:
            row = principal_rows.get(conn, name)
            if row is None:
                raise NotFound(f"no principal named {name[:64]!r}")
            principal_rows.touch(conn, name, now)
            event = AdminAction(
                actor=author,
                time=now,
                action="principal.enabled",
                target_type="principal",
                target=name,
                reason=reason,
                detail={"last_active_at": last_activity(row)},
            )
            self._audit.append(conn, [event])
            state.bump_epoch(conn)
        return row


def _org(config: BastionConfig, row: PrincipalRow) -> str:
    declared = config.principals.get(row.name)
    return declared.org if declared is not None else row.org

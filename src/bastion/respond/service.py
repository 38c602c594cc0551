"""The response service: findings in, containment out, within the detection engine's step.

For each open finding the detection service stores (new, or seen again), the matching
playbooks' steps are planned (``respond/playbooks.py``), each step's targets resolved
(``respond/actions.py``), and each (action, target) carried out once per finding:

- ``dry-run`` steps only record what they would have done (status ``dry_run``);
- wide steps wait for an admin (``pending_approval``) unless waived for the finding's severity;
- enforced automatic actions are rate-limited (``response.automatic``): beyond the limit they
  are recorded as ``rate_limited``, not taken, and a notification says so;
- everything else acts through a lock (``done``), or records why it could not (``failed``).

Every action is a row in ``response_actions`` and an audit event ``admin.action`` named
``response.<action>`` carrying its cause (playbook, finding, incident); undoing or approving one
is audited too. Findings that lead to anything but a notification join an incident.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

import sqlalchemy as sa

from bastion.audit.events import AdminAction
from bastion.audit.log import AuditLog
from bastion.config.playbooks import Automatic, Playbook, Step
from bastion.detect.findings import Finding, Severity
from bastion.errors import BadRequest, BastionError, NotFound
from bastion.policy.holder import SnapshotHolder
from bastion.policy.snapshot import Snapshot
from bastion.respond.notify import Notifier, finding_payload
from bastion.store import Store
from bastion.store import actions as action_rows
from bastion.store import mfa as mfa_rows
from bastion.store import tokens as token_rows
from bastion.store.actions import ActionRow

from .actions import CONTAINING, DEFAULT_RATE, DEFAULT_TTL, LOCK_OF, Target, targets_of
from .entities import Implicated, implicated
from .locks import LockService
from .playbooks import PlaybookSource, Situation, planned

log = logging.getLogger("bastion.respond")
ACTOR = "bastion:response"


class Incidents(Protocol):
    """What the response service needs of ``respond/incidents.py``."""

    def attach(
        self, conn: sa.Connection, finding: Finding, implicated: Implicated, now: float
    ) -> tuple[Any, bool]: ...

    def contained(self, conn: sa.Connection, incident_id: str, now: float) -> None: ...


class ResponseService:
    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        locks: LockService,
        holder: SnapshotHolder,
        playbooks: PlaybookSource,
        *,
        incidents: Incidents | None = None,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
        access_ttl: float = 900.0,
        on_family_revoked: Callable[[str, str, str], object] | None = None,
    ) -> None:
        self._store = store
        self._audit = audit
        self._locks = locks
        self._holder = holder
        self.playbooks = playbooks
        self._incidents = incidents
        self._notifier = notifier
        self._clock = clock
        self._access_ttl = access_ttl
        self._on_family_revoked = on_family_revoked
        self._recent: deque[float] | None = None  # times of enforced automatic actions

    # -- automatic -------------------------------------------------------------------------------

    def respond(self, findings: Sequence[Finding]) -> list[ActionRow]:
        """Answer stored findings (worker thread; never the hot path). Returns the actions
        recorded; the caller reloads the snapshot if any of them locked something."""
        snapshot = self._holder.current
        if snapshot is None or not snapshot.config.response.automatic.enabled:
            return []
        playbooks = self.playbooks.current(snapshot.config)
        recorded: list[ActionRow] = []
        for finding in findings:
            if finding.status != "open":
                continue
            try:
                recorded += self._answer(finding, playbooks.playbooks, snapshot)
            except Exception:  # one finding's trouble must not stop the others' containment
                log.exception("response to finding %s failed", finding.id)
        return recorded

    def _answer(
        self, finding: Finding, playbooks: Sequence[Playbook], snapshot: Snapshot
    ) -> list[ActionRow]:
        with self._store.read() as conn:
            found = implicated(conn, finding)
            earlier = action_rows.query(conn, finding=finding.id, limit=1000)
        taken = {(row.action, row.target_type, row.target) for row in earlier}
        situation = Situation(_org_kind(snapshot, finding.org), found.compartments)
        plan: list[tuple[Playbook, Step, Target, str]] = []
        for playbook, step in planned(playbooks, finding, situation):
            targets, why = targets_of(step.action, finding, found, situation.org_kind)
            if not targets and (step.action, "", "") not in taken:
                plan.append((playbook, step, Target("", ""), why))
                taken.add((step.action, "", ""))
            for target in targets:
                if (step.action, target.target_type, target.target) not in taken:
                    plan.append((playbook, step, target, ""))
                    taken.add((step.action, target.target_type, target.target))
        if not plan:
            return []
        now = self._clock()
        incident = next((row.incident for row in earlier if row.incident), None)
        if incident is None and any(step.action != "notify" for _, step, _, _ in plan):
            incident = self._attach(finding, found, now)
        rows = [
            self._carry_out(playbook, step, finding, target, skip, incident, snapshot.config)
            for playbook, step, target, skip in plan
            if step.action != "notify"
        ]
        contained = [r for r in rows if r.status == "done" and r.action in CONTAINING]
        if contained and incident is not None and self._incidents is not None:
            with self._store.begin() as conn:
                self._incidents.contained(conn, incident, self._clock())
        notices = [(p, s, t, w) for p, s, t, w in plan if s.action == "notify"]
        for playbook, step, _target, _skip in notices[:1]:
            rows.append(self._notify(playbook, step, finding, [*earlier, *rows], incident))
        return rows

    def _attach(self, finding: Finding, found: Implicated, now: float) -> str | None:
        if self._incidents is None:
            return None
        with self._store.begin() as conn:
            row, _created = self._incidents.attach(conn, finding, found, now)
        return str(row.id)

    def _carry_out(
        self,
        playbook: Playbook,
        step: Step,
        finding: Finding,
        target: Target,
        skip: str,
        incident: str | None,
        config: Any,
    ) -> ActionRow:
        mode = step.mode or playbook.mode
        row = ActionRow(
            id="ra_" + secrets.token_hex(8),
            action=step.action,
            target_type=target.target_type,
            target=target.target,
            mode=mode,
            status="done",
            playbook=playbook.name,
            finding=finding.id,
            incident=incident,
            author=ACTOR,
            reason=f"playbook {playbook.name}: {finding.detection} finding {finding.id}",
            created_at=self._clock(),
            detail=_parameters(step),
        )
        if skip:
            row = replace(row, status="skipped", detail={**row.detail, "why": skip})
        elif step.action == "open_incident":
            row = replace(row, target_type="incident", target=incident or "")
        elif mode == "dry-run":
            row = replace(row, status="dry_run")
        elif step.needs_approval and not _waived(step, finding):
            row = replace(row, status="pending_approval")
        elif not self._admit(config.response.automatic):
            row = replace(row, status="rate_limited")
            self._tell_rate_limited(row, config.response.automatic)
        else:
            row = self._execute(row)
        self._record(row)
        return row

    # -- carrying out ----------------------------------------------------------------------------

    def _execute(self, row: ActionRow) -> ActionRow:
        """Take a containing action now; returns the row as done (with its locks) or failed."""
        ttl = row.detail.get("ttl", DEFAULT_TTL.get(row.action))
        try:
            if row.action == "step_up":
                locks = self._step_up(row, ttl)
            else:
                rate = row.detail.get("rate", DEFAULT_RATE) if row.action == "throttle" else None
                lock, _epoch = self._locks.lock(
                    LOCK_OF[row.action],
                    row.target,
                    reason=row.reason,
                    author=ACTOR,
                    ttl=ttl,
                    rate=rate,
                )
                locks = [lock.id]
                if row.action == "revoke_family":
                    self._signal_family(row)
        except BastionError as exc:
            return replace(row, status="failed", detail={**row.detail, "error": str(exc)[:300]})
        now = self._clock()
        detail = {**row.detail, "locks": locks}
        first = locks[0] if locks else None
        return replace(row, status="done", lock=first, executed_at=now, detail=detail)

    def _step_up(self, row: ActionRow, ttl: float | None) -> list[str]:
        """MFA again if the principal has a factor; else a fresh login with its device key."""
        principal = row.target
        with self._store.read() as conn:
            has_mfa = mfa_rows.get(conn, principal) is not None
            families = token_rows.unexpired_families(
                conn, [principal], self._clock(), self._access_ttl
            )
        if has_mfa:
            lock, _ = self._locks.lock(
                "stepup", principal, reason=row.reason, author=ACTOR, ttl=ttl
            )
            return [lock.id]
        made = []
        for family in families:
            lock, _ = self._locks.lock("family", family.id, reason=row.reason, author=ACTOR)
            made.append(lock.id)
        return made

    def _signal_family(self, row: ActionRow) -> None:
        if self._on_family_revoked is None:
            return
        with self._store.read() as conn:
            family = token_rows.get_family(conn, row.target)
        if family is not None:
            self._on_family_revoked(family.principal, family.id, row.reason)

    def _admit(self, limits: Automatic) -> bool:
        """Whether one more enforced automatic action fits in the window."""
        now = self._clock()
        if self._recent is None:
            with self._store.read() as conn:
                done = action_rows.query(
                    conn, status="done", since=now - limits.window, limit=10_000
                )
            automatic = (r for r in done if r.playbook and r.action in CONTAINING)
            self._recent = deque(
                sorted(r.created_at for r in automatic if "approved_by" not in r.detail)
            )
        while self._recent and self._recent[0] <= now - limits.window:
            self._recent.popleft()
        if len(self._recent) >= limits.max_actions:
            return False
        self._recent.append(now)
        return True

    def _tell_rate_limited(self, row: ActionRow, limits: Automatic) -> None:
        log.warning(
            "automatic action %s on %s %s not taken: over %d actions in %d s",
            row.action,
            row.target_type,
            row.target,
            limits.max_actions,
            limits.window,
        )
        if self._notifier is not None:
            self._notifier.notify(
                "response",
                {
                    "severity": "critical",
                    "detection": "rate_limit",
                    "entity_type": row.target_type,
                    "entity": row.target,
                    "actions": [_brief(row)],
                    "incident": row.incident,
                    "explanation": (
                        f"automatic actions over their limit ({limits.max_actions} per "
                        f"{limits.window} s): {row.action} was not taken; check the detectors"
                    ),
                },
            )

    def _notify(
        self,
        playbook: Playbook,
        step: Step,
        finding: Finding,
        actions: Sequence[ActionRow],
        incident: str | None,
    ) -> ActionRow:
        payload = {
            **finding_payload(finding),
            "finding": finding.id,
            "incident": incident,
            "actions": [_brief(a) for a in actions if a.action != "notify"],
        }
        mode = step.mode or playbook.mode
        row = ActionRow(
            id="ra_" + secrets.token_hex(8),
            action="notify",
            target_type="webhook",
            target="*",
            mode=mode,
            status="dry_run" if mode == "dry-run" else "done",
            playbook=playbook.name,
            finding=finding.id,
            incident=incident,
            author=ACTOR,
            reason=f"playbook {playbook.name}: {finding.detection} finding {finding.id}",
            created_at=self._clock(),
        )
        if row.status == "done" and self._notifier is not None:
            self._notifier.notify("response", payload)
        self._record(row)
        return row

    def _record(self, row: ActionRow, name: str = "", actor: str = "", reason: str = "") -> None:
        """Store the row and its audit event: ``response.<action>`` when taken, or
        ``response.approved|rejected|undone`` with the admin's name and reason."""
        event = AdminAction(
            actor=actor or row.author,
            time=self._clock(),
            action=f"response.{name or row.action}",
            target_type=row.target_type or "none",
            target=row.target,
            reason=reason or row.reason,
            detail={
                "action_id": row.id,
                "status": row.status,
                "mode": row.mode,
                "playbook": row.playbook,
                "finding": row.finding,
                "incident": row.incident,
                "action": row.action,
                **{k: v for k, v in row.detail.items() if k in ("locks", "why", "error")},
            },
        )
        with self._store.begin() as conn:
            if action_rows.get(conn, row.id) is None:
                action_rows.insert(conn, row)
            else:
                action_rows.update(
                    conn,
                    row.id,
                    status=row.status,
                    detail=row.detail,
                    lock=row.lock,
                    executed_at=row.executed_at,
                    undone_at=row.undone_at,
                    undone_by=row.undone_by,
                )
            self._audit.append(conn, [event])

    # -- by an admin -----------------------------------------------------------------------------

    def approve(self, action_id: str, *, by: str, reason: str) -> ActionRow:
        """Carry out an action waiting for approval (not subject to the automatic limit)."""
        row = self._pending(action_id)
        reason = _reason(reason)
        approved = replace(row, detail={**row.detail, "approved_by": by, "approval": reason})
        done = self._execute(approved)
        self._record(done, "approved", actor=by, reason=reason)
        if done.status == "done" and done.incident and self._incidents is not None:
            with self._store.begin() as conn:
                self._incidents.contained(conn, done.incident, self._clock())
        return done

    def reject(self, action_id: str, *, by: str, reason: str) -> ActionRow:
        row = self._pending(action_id)
        rejected = replace(
            row,
            status="rejected",
            detail={**row.detail, "rejected_by": by, "rejection": _reason(reason)},
        )
        self._record(rejected, "rejected", actor=by, reason=rejected.detail["rejection"])
        return rejected

    def undo(self, action_id: str, *, by: str, reason: str) -> ActionRow:
        """Release what an action locked; the action is kept, marked undone, and audited."""
        row = self.action(action_id)
        reason = _reason(reason)
        if row.action not in CONTAINING:
            raise BadRequest(f"{row.action} changes no access, so there is nothing to undo")
        if row.status != "done":
            raise BadRequest(f"only a done action can be undone; this one is {row.status}")
        for lock_id in row.detail.get("locks", []):
            with contextlib.suppress(NotFound):  # expired or released by hand already
                self._locks.release(str(lock_id), author=by, reason=reason)
        undone = replace(
            row,
            status="undone",
            undone_at=self._clock(),
            undone_by=by,
            detail={**row.detail, "undo": reason},
        )
        self._record(undone, "undone", actor=by, reason=reason)
        return undone

    def _pending(self, action_id: str) -> ActionRow:
        row = self.action(action_id)
        if row.status != "pending_approval":
            raise BadRequest(f"action {row.id} is {row.status}, not waiting for approval")
        return row

    # -- reading ---------------------------------------------------------------------------------

    def action(self, action_id: str) -> ActionRow:
        with self._store.read() as conn:
            row = action_rows.get(conn, action_id[:40])
        if row is None:
            raise NotFound(f"no response action {action_id[:40]!r}")
        return row

    def actions(self, **filters: Any) -> list[ActionRow]:
        with self._store.read() as conn:
            return action_rows.query(conn, **filters)

    def playbooks_in_force(self) -> dict[str, Any]:
        """The playbooks the current config runs, and why a newer file is not running (if so)."""
        snapshot = self._holder.require()
        current = self.playbooks.current(snapshot.config)
        return {
            "source": snapshot.config.response.playbooks or "built-in",
            "automatic": snapshot.config.response.automatic.model_dump(),
            "error": self.playbooks.error,
            "playbooks": [p.model_dump(exclude_none=True) for p in current.playbooks],
        }


def _org_kind(snapshot: Snapshot, org: str) -> str:
    found = snapshot.config.orgs.get(org)
    return str(found.kind) if found is not None else ""


def _waived(step: Step, finding: Finding) -> bool:
    waiver = step.approval_waived_at
    return waiver is not None and finding.severity.rank >= Severity(waiver).rank


def _parameters(step: Step) -> dict[str, Any]:
    detail: dict[str, Any] = {}
    if step.ttl is not None:
        detail["ttl"] = step.ttl
    if step.rate is not None:
        detail["rate"] = step.rate
    return detail


def _brief(row: ActionRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "action": row.action,
        "target_type": row.target_type,
        "target": row.target,
        "status": row.status,
        "mode": row.mode,
    }


def _reason(reason: str) -> str:
    reason = reason.strip()
    if not reason or len(reason) > 500:
        raise BadRequest("a reason of 1 to 500 characters is required")
    return reason

"""Tamper detection by the running server: the stored log re-verified against itself, all the time.

``bastion audit verify`` checks the whole log when an operator thinks to run it. The
:class:`IntegrityWatch` does the same work (the shared :class:`~bastion.audit.verify.TreeWalk`)
a window at a time, every ``BASTION_INTEGRITY_INTERVAL`` seconds, so the server notices an edit
of its own audit database by itself (threat T9) and fails closed. Each pass:

1. reads the shared tamper mark (``store/integrity.py``): an acknowledgement since the last pass
   makes it start over from entry 0; a mark set by another process, or before a restart, is
   adopted;
2. re-verifies the next window of old entries with a second recomputed frontier that walks the
   verified prefix cycle after cycle (``recheck_per_pass`` entries a pass), checking the
   checkpoints it crosses; at the end of a cycle its root must equal the root the first
   verification computed for that size, so an entry changed after it was verified — even
   consistently, leaf and tree nodes rewritten too — is caught within one cycle;
3. verifies the entries appended since (up to ``new_per_pass``), extending the verified prefix:
   body → leaf → leaf hash against the ``leaf`` column and the stored level-0 node, the row's
   columns against the event, the root at each checkpoint crossed against its signed root;
4. checks that the log is not shorter than what was verified or than its latest checkpoint.

On the first problem the watch holds the log **tampered**: at once in memory (the recorder then
refuses ``audit: required`` compartments and the checkpointer signs nothing), then in the
database, so every process and every restart see it. The process that sets the mark records one
``audit.tamper_detected`` event; each process logs the problem at CRITICAL (index, event id and
what was wrong; never a body). The state is sticky: only ``bastion audit acknowledge-tamper
--reason ...`` clears it (an audited ``audit.tamper_acknowledged`` action), after which every
watch verifies from entry 0 again — damage that is still there is found again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
import sqlalchemy as sa

from bastion.background import finish_on_cancel
from bastion.errors import BadRequest, Conflict
from bastion.store import Store
from bastion.store import events as rows
from bastion.store import integrity as tamper_rows

from .events import AdminAction, AuditTamperDetected
from .log import AuditLog
from .merkle import EMPTY_ROOT, Frontier
from .verify import LogVerdict, TreeWalk, check_checkpoint

log = logging.getLogger("bastion.audit")

ACTOR = "bastion:integrity"
NEW_PER_PASS = 50_000
# Re-checking old entries is the watch's steady cost (~57,000 entries per second of one core):
# 1,000 a pass at the default 0.25 s interval is ~7% of a core, and a full re-check cycle of a
# 100,000-entry log ~25 s. New entries are verified in the pass after they are appended.
RECHECK_PER_PASS = 1_000
MAX_REASON = 500


@dataclass(frozen=True, slots=True)
class Problem:
    index: int | None  # the first bad entry, when the problem has one
    event_id: str  # that entry's id ("" when it has none, or the row is gone)
    problem: str


class IntegrityWatch:
    """Verifies the stored audit log against itself, incrementally; see the module docstring.

    ``check`` is one blocking pass (the server runs it on a worker thread from ``run``; the CLI
    calls it directly with no per-pass limits). ``tampered`` is what the recorder and the
    checkpointer ask before anything depends on the log being intact."""

    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        clock: Callable[[], float] = time.time,
        *,
        interval: float = 0.25,
        new_per_pass: int | None = NEW_PER_PASS,
        recheck_per_pass: int | None = RECHECK_PER_PASS,
        verify: bool = True,
    ) -> None:
        self._store = store
        # A cluster's gateways only follow the shared mark (False): the worker verifies, once
        # for the deployment, instead of every gateway re-hashing the same log.
        self._verify_log = verify
        self._audit = audit
        self._clock = clock
        self._interval = interval
        self._new_per_pass = new_per_pass
        self._recheck_per_pass = recheck_per_pass
        self._pass_lock = threading.Lock()
        self._tip = Frontier()  # recomputed over the verified prefix
        self._sweep = Frontier()  # the re-check's position within the current cycle
        self._mark: tuple[int, bytes] = (0, EMPTY_ROOT)  # the tip when that cycle began
        self._acks: int | None = None
        self._problem: Problem | None = None
        self._persisted = True
        self._failing = False
        self.checked_at: float | None = None

    @property
    def tampered(self) -> bool:
        return self._problem is not None

    def status(self) -> dict[str, Any]:
        """The state for the admin API and the CLI (stable field names)."""
        problem = self._problem
        return {
            "state": "ok" if problem is None else "tampered",
            "verified_size": self._tip.size,
            "first_bad_index": None if problem is None else problem.index,
            "problem": None if problem is None else problem.problem,
            "checked_at": self.checked_at,
            "verified_by": "this process" if self._verify_log else "the worker",
        }

    # -- a pass ---------------------------------------------------------------------------------

    def check(self) -> dict[str, Any]:
        """One pass (blocking); returns the status after it."""
        with self._pass_lock:
            with self._store.read() as conn:
                self._follow(conn, tamper_rows.read(conn))
                if self._problem is None and self._verify_log:
                    found = self._verify(conn)
                    if found is not None:
                        self._trip(found)
            if not self._persisted:
                self._persist()
            self.checked_at = self._clock()
        return self.status()

    def _follow(self, conn: sa.Connection, shared: tamper_rows.TamperMark) -> None:
        """Take in what other processes (or the operator) did to the shared mark."""
        if self._acks is not None and shared.acks != self._acks:
            self._problem, self._persisted = None, True
            self._tip, self._sweep, self._mark = Frontier(), Frontier(), (0, EMPTY_ROOT)
        self._acks = shared.acks
        if shared.tampered and self._problem is None:
            self._problem = _adopted(conn, shared.index)

    def _verify(self, conn: sa.Connection) -> Problem | None:
        latest = rows.latest_checkpoint(conn)  # before the size: a checkpoint implies its entries
        size = rows.size(conn)
        verdict = LogVerdict()
        if size < self._tip.size:
            verdict.bad(
                size,
                f"the log has {size} entries but {self._tip.size} were verified: entries "
                f"{size}..{self._tip.size - 1} are gone",
            )
        elif latest is not None and latest.size > size:
            verdict.bad(
                size,
                f"the log has {size} entries but checkpoint {latest.size} was signed: "
                f"entries {size}..{latest.size - 1} are gone",
            )
        else:
            verdict = self._recheck(conn)
            if verdict.ok:
                verdict = self._walk(conn, self._tip, _end(self._tip, size, self._new_per_pass))
        return None if verdict.ok else self._problem_of(conn, verdict)

    def _recheck(self, conn: sa.Connection) -> LogVerdict:
        """The next window of the current re-check cycle over the verified prefix."""
        if self._sweep.size >= self._mark[0]:  # the cycle is done (or none began): begin one
            self._sweep, self._mark = Frontier(), (self._tip.size, self._tip.root())
        size, root = self._mark
        end = _end(self._sweep, size, self._recheck_per_pass)
        verdict = self._walk(conn, self._sweep, end)
        if verdict.ok and end == size and self._sweep.root() != root:
            verdict.bad(
                None,
                f"entries before {size} changed after they were verified: the tree recomputed "
                "from them now has another root",
            )
        return verdict

    def _walk(self, conn: sa.Connection, frontier: Frontier, end: int) -> LogVerdict:
        """Verify the stored entries from ``frontier.size`` to ``end`` onto ``frontier`` (in
        place), and the checkpoints signed within that range."""
        verdict = LogVerdict()
        if end <= frontier.size:
            return verdict
        checkpoints = tamper_rows.checkpoints_between(conn, frontier.size, end)
        walk = TreeWalk(self._audit.committer, verdict, frontier, (c.size for c in checkpoints))
        if walk.read(conn, end):
            verdict.size = end
            for row in checkpoints:
                check_checkpoint(row, self._audit, walk.roots, verdict)
        return verdict

    def verify_now(self) -> Problem | None:
        """The first problem a verification from entry 0 finds now, changing nothing (no mark,
        no event): what the watches will find again after an acknowledgement."""
        fresh = IntegrityWatch(self._store, self._audit, new_per_pass=None, recheck_per_pass=None)
        with self._store.read() as conn:
            return fresh._verify(conn)

    def _problem_of(self, conn: sa.Connection, verdict: LogVerdict) -> Problem:
        index = verdict.first_bad_index
        event_id = ""
        if index is not None:
            found = rows.after(conn, index - 1, 1)
            event_id = found[0].id if found and found[0].idx == index else ""
        return Problem(index, event_id, verdict.problems[0])

    # -- tripping and acknowledging -------------------------------------------------------------

    def _trip(self, problem: Problem) -> None:
        """Tampered at once in memory (the gateway and checkpointer see it from now on); the
        database mark and the event follow in ``_persist``."""
        self._problem, self._persisted = problem, False

    def _persist(self) -> None:
        problem = self._problem
        assert problem is not None
        try:
            with self._store.begin() as conn:
                first = tamper_rows.mark(conn, problem.index)
        except sa.exc.SQLAlchemyError:
            log.exception("could not mark the audit log tampered in the database; will retry")
            return
        self._persisted = True
        if not first:  # another process marked it and recorded the event
            return
        event = AuditTamperDetected(
            actor=ACTOR,
            time=self._clock(),
            index=problem.index,
            event_id=problem.event_id,
            problem=problem.problem,
        )
        try:
            with self._store.begin() as conn:
                self._audit.append(conn, [event])
        except Exception:  # a log damaged this badly may take no appends: the mark stands
            log.exception("could not record %s", AuditTamperDetected.name)

    def acknowledge(self, reason: str, actor: str) -> AdminAction:
        """Clear the tamper mark, recorded as ``audit.tamper_acknowledged`` in the same
        transaction; every watch then verifies the log from entry 0 again."""
        reason = reason.strip()
        if not reason or len(reason) > MAX_REASON or not reason.isprintable():
            raise BadRequest(
                f"acknowledging needs a reason of 1 to {MAX_REASON} printable characters"
            )
        with self._store.begin() as conn:
            before = tamper_rows.acknowledge(conn)
            if before is None:
                raise Conflict("the audit log is not marked tampered: nothing to acknowledge")
            event = AdminAction(
                actor=actor,
                time=self._clock(),
                action="audit.tamper_acknowledged",
                target_type="audit_log",
                target=self._audit.origin,
                reason=reason,
                detail={"first_bad_index": before.index},
            )
            self._audit.append(conn, [event])
        return event

    # -- running --------------------------------------------------------------------------------

    async def run(self) -> None:
        """A pass every ``interval`` seconds, on a worker thread, until cancelled; a change of
        state is logged (CRITICAL when the log becomes tampered). A pass that fails (the
        database is down) is logged once and retried; it is not a tamper."""
        while True:
            before = self._problem
            try:
                await self._one_pass()
            except Exception:
                if not self._failing:
                    log.exception("the audit integrity check could not run; retrying")
                self._failing = True
            else:
                self._failing = False
            _log_change(before, self._problem)
            await asyncio.sleep(self._interval)

    async def _one_pass(self) -> None:
        """``check`` on a worker thread. Cancelled (at shutdown), it still waits for the pass in
        flight: the store is closed next, and must not be closed under a pass."""
        await finish_on_cancel(anyio.to_thread.run_sync(self.check))


def _log_change(before: Problem | None, after: Problem | None) -> None:
    if after is not None and after is not before:
        where = "" if after.index is None else f" (first bad index {after.index})"
        log.critical(
            "AUDIT LOG TAMPERED%s: %s; refusing audit-required compartments and checkpoints "
            "until acknowledged",
            where,
            after.problem,
            extra={"event": AuditTamperDetected.name},
        )
    elif after is None and before is not None:
        log.warning("audit log tamper acknowledged; verifying the log again from entry 0")


def _adopted(conn: sa.Connection, index: int | None) -> Problem:
    """The problem behind a mark this process did not set: as its detection event tells it (if
    that event is there and names the same entry), else only that the mark is set."""
    found = rows.last(conn, 1, AuditTamperDetected.name)
    try:
        event = orjson.loads(found[0].body) if found else None
    except orjson.JSONDecodeError:  # that event was edited too
        event = None
    if isinstance(event, dict) and event.get("index") == index:
        problem, event_id = event.get("problem"), event.get("event_id")
        if isinstance(problem, str) and isinstance(event_id, str):
            return Problem(index, event_id, problem)
    return Problem(index, "", "the log is marked tampered (by another process or before a restart)")


def _end(frontier: Frontier, size: int, limit: int | None) -> int:
    """Where a walk from ``frontier`` stops this pass: ``size``, or ``limit`` entries on."""
    return size if limit is None else min(size, frontier.size + limit)

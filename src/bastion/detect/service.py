"""The detection service: runs the engine over the audit log, off the hot path.

It tails the audit log in order (every ``poll`` seconds, or at once when nudged), turns each new
event into an observation, runs the engine on a worker thread, and stores new and grown findings
in one transaction together with a ``finding.raised`` audit event for each new one — so findings
are as verifiable as the requests that caused them. Detector state and the log position are
saved every ``save_every`` seconds and on shutdown; after a restart the engine resumes from the
saved position with its saved state (events after it are observed again, and findings they
repeat merge into the stored ones rather than doubling).

Nothing is dropped silently: events that cannot be parsed, detector errors, late events and
state evictions are counted in :meth:`stats`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence, Sized
from typing import Any

import anyio
import orjson

from bastion.audit.events import FindingRaised
from bastion.audit.log import AuditLog
from bastion.audit.recorder import AuditRecorder
from bastion.background import wait_set
from bastion.config.models import BastionConfig
from bastion.logs import Outage
from bastion.policy.holder import SnapshotHolder
from bastion.respond.notify import Notifier, finding_payload
from bastion.store import Store
from bastion.store import events as event_rows
from bastion.store import findings as finding_rows

from .detector import Context, Detector
from .detectors import default_detectors
from .engine import DetectionEngine
from .findings import Finding
from .observation import Observation
from .risk import RiskBoard

log = logging.getLogger("bastion.detect")
STATE_KEY = "engine"
BATCH = 2000
ACTOR = "bastion:detection"


class DetectionService:
    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        recorder: AuditRecorder,
        holder: SnapshotHolder,
        risk: RiskBoard,
        *,
        detectors: Callable[[BastionConfig], Sequence[Detector]] = default_detectors,
        clock: Callable[[], float] = time.time,
        poll: float = 0.1,
        save_every: float = 30.0,
        notifier: Notifier | None = None,
        responder: Callable[[Sequence[Finding]], Sequence[Any]] | None = None,
        on_response: Callable[[], object] | None = None,
        on_risk: Callable[[RiskBoard], object] | None = None,
    ) -> None:
        self._notifier = notifier
        # Playbooks (respond/service.py): answered in this step, right after the findings are
        # stored, so containment follows detection within the same poll; ``on_response`` then
        # reloads the snapshot so the locks hold on the next request.
        self._responder = responder
        self._on_response = on_response
        # Cluster mode (the worker): hand the changed risk scores to the gateways after each step.
        self._on_risk = on_risk
        self._store = store
        self._audit = audit
        self._recorder = recorder
        self._holder = holder
        self.risk = risk
        self._make_detectors = detectors
        self._clock = clock
        self._poll = poll
        self._save_every = save_every
        self._engine: DetectionEngine | None = None
        self._config: BastionConfig | None = None
        self._epoch = -1
        self._position = -1  # the last audit index processed
        self._saved_at = 0.0
        self._nudged = asyncio.Event()
        self._lock = asyncio.Lock()
        # Held by the worker thread for a whole step: cancelling the task that waits for a step
        # does not stop its thread, so shutdown waits on this before saving and closing.
        self._busy = threading.Lock()
        self.unparsable = 0
        self.failures = 0
        self._outage = Outage(log, "detection step")
        self.rebuild_error = ""

    # -- running ---------------------------------------------------------------------------------

    def nudge(self) -> None:
        """New events are in the log: look now rather than at the next poll."""
        self._nudged.set()

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except Exception as exc:  # the store is down, say: keep the loop, retry later
                self.failures += 1
                self._outage.failed(exc, "retrying at every poll")
            else:
                self._outage.recovered()
            await wait_set(self._nudged, self._poll)
            self._nudged.clear()

    async def step(self) -> int:
        """Process the next batch of audit events; returns how many were processed."""
        async with self._lock:
            return await anyio.to_thread.run_sync(self._step)

    async def catch_up(self) -> None:
        """Process everything recorded so far (tests and the simulator use this)."""
        await self._recorder.flush()
        while await self.step():
            pass

    async def stop(self) -> None:
        """Wait for a step still running on its thread, then save the engine's state."""
        async with self._lock:
            await anyio.to_thread.run_sync(self._save_when_idle)

    # -- the worker-thread side ------------------------------------------------------------------

    def _save_when_idle(self) -> None:
        with self._busy:
            if self._engine is not None:
                self._save()

    def _step(self) -> int:
        with self._busy:
            return self._step_locked()

    def _step_locked(self) -> int:
        engine = self._ready()
        if engine is None:
            return 0
        with self._store.read() as conn:
            rows = event_rows.after(conn, self._position, BATCH)
        if not rows:
            return 0
        changed: dict[str, Finding] = {}
        new: list[Finding] = []
        for row in rows:
            try:
                record = orjson.loads(row.body)
            except orjson.JSONDecodeError:
                self.unparsable += 1
                continue
            for finding in engine.process(Observation.from_record(record, row.idx)):
                if finding.id not in changed and finding.count == 1:
                    new.append(finding)
                changed[finding.id] = finding
        self._persist(list(changed.values()), new, rows[-1].idx)
        if self._notifier is not None:  # stored first; the notifier only queues (never blocks)
            for finding in (changed[f.id] for f in new):
                if finding.status == "open":
                    self._notifier.notify("finding", finding_payload(finding))
        self._respond([f for f in changed.values() if f.status == "open"])
        if self._on_risk is not None:
            self._on_risk(self.risk)
        if self._clock() - self._saved_at >= self._save_every:
            self._save()
        return len(rows)

    def _respond(self, findings: list[Finding]) -> None:
        if self._responder is None or not findings:
            return
        try:
            taken = self._responder(findings)
        except Exception:  # never lose the engine's position over a response failure
            self.failures += 1
            log.exception("automatic response failed")
            return
        if taken and self._on_response is not None:
            self._on_response()

    def _persist(self, changed: list[Finding], new: list[Finding], position: int) -> None:
        if changed:
            events = [_raised(finding) for finding in new]
            with self._store.begin() as conn:
                finding_rows.upsert(conn, changed)
                if events:
                    self._audit.append(conn, events)
        self._position = position

    def _ready(self) -> DetectionEngine | None:
        """The engine for the current config: built on first use (restoring saved state), its
        context refreshed when the config changes, its detectors rebuilt (state carried over)
        when the detection settings change."""
        snapshot = self._holder.current
        if snapshot is None or not snapshot.config.detection.enabled:
            return None
        config = snapshot.config
        if self._engine is None:
            self._engine = self._restore(config)
        elif self._config is not None and config.detection != self._config.detection:
            self._rebuild(self._engine, config)
        if snapshot.epoch != self._epoch or config is not self._config:
            # principals added at runtime (CLI, API) are known to detectors by their org
            orgs = {name: facts.org for name, facts in snapshot.principals.items()}
            self._engine.context = Context(config=config, orgs_of=orgs)
            self._epoch = snapshot.epoch
        self._config = config
        return self._engine

    def _rebuild(self, engine: DetectionEngine, config: BastionConfig) -> None:
        """New detection settings: new detectors, carrying each one's state over. If they
        cannot be built (a rule file broke since startup), the running ones stay, and
        ``stats()`` says why."""
        try:
            detectors = list(self._make_detectors(config))
        except Exception as exc:
            self.rebuild_error = str(exc)[:500]
            log.warning("detection settings not applied; keeping the running detectors")
            return
        state = {d.id: _dump(d) for d in engine.detectors}
        engine.detectors = detectors
        engine.windows_changed()
        _load_all(detectors, state)
        self.rebuild_error = ""

    def _restore(self, config: BastionConfig) -> DetectionEngine:
        detectors = list(self._make_detectors(config))
        engine = DetectionEngine(detectors, _context(config), self.risk)
        now = self._clock()
        with self._store.read() as conn:
            saved = finding_rows.load_state(conn, STATE_KEY)
            recent = finding_rows.query(conn, since=now - 86400, limit=10_000)
        if isinstance(saved, dict):
            self._position = int(saved.get("position", -1))
            _load_all(detectors, saved.get("detectors", {}))
        engine.remember(reversed(recent))
        for finding in recent:  # rebuild risk scores; decay takes care of old ones
            if finding.status == "open":
                points = finding.severity.risk_points * finding.confidence
                engine.risk.add("principal", finding.principal, points, finding.last_seen)
                if engine.context.is_vendor(finding.org):
                    engine.risk.add("org", finding.org, points / 2, finding.last_seen)
        self._saved_at = self._clock()
        return engine

    def _save(self) -> None:
        engine = self._engine
        if engine is None:
            return
        data = {
            "position": self._position,
            "detectors": {detector.id: _dump(detector) for detector in engine.detectors},
        }
        now = self._clock()
        with self._store.begin() as conn:
            finding_rows.save_state(conn, STATE_KEY, data, now)
        self._saved_at = now

    # -- reading ---------------------------------------------------------------------------------

    def findings(self, **filters: Any) -> list[Finding]:
        with self._store.read() as conn:
            return finding_rows.query(conn, **filters)

    def finding(self, finding_id: str) -> Finding | None:
        with self._store.read() as conn:
            return finding_rows.get(conn, finding_id)

    def stats(self) -> dict[str, Any]:
        engine = self._engine
        detectors: dict[str, Any] = {}
        for detector in engine.detectors if engine else ():
            sizes = {}
            evictions = 0
            for name, structure in detector.structures().items():
                sizes[name] = len(structure) if isinstance(structure, Sized) else None
                inner = getattr(structure, "stats", None)
                evictions += getattr(inner, "evictions", 0)
            detectors[detector.id] = {"state": sizes, "evictions": evictions}
        with self._store.read() as conn:
            size = event_rows.size(conn)
        return {
            "enabled": engine is not None,
            "position": self._position,
            "lag": max(size - 1 - self._position, 0),  # audit events not yet observed
            "unparsable": self.unparsable,
            "step_failures": self.failures,
            "rebuild_error": self.rebuild_error,
            "engine": engine.stats.as_dict() if engine else {},
            "detectors": detectors,
            "signals": snapshot.signals.stats() if (snapshot := self._holder.current) else {},
        }


def _context(config: BastionConfig) -> Context:
    return Context(config=config)


def _dump(detector: Detector) -> Any:
    dump = getattr(detector, "dump", None)
    return dump() if dump is not None else {}


def _load_all(detectors: Sequence[Detector], state: Any) -> None:
    if not isinstance(state, dict):
        return
    for detector in detectors:
        load = getattr(detector, "load", None)
        data = state.get(detector.id)
        if load is None or not isinstance(data, dict):
            continue
        try:
            load(data)
        except Exception:  # a state snapshot from an older version: start that detector afresh
            log.warning("could not restore the state of detector %s; starting empty", detector.id)


def _raised(finding: Finding) -> FindingRaised:
    return FindingRaised(
        time=finding.first_seen,
        actor=ACTOR,
        finding=finding.id,
        detection=finding.detection,
        severity=str(finding.severity),
        status=finding.status,
        entity_type=finding.entity_type,
        entity=finding.entity,
        principal=finding.principal,
        org=finding.org,
        explanation=finding.explanation,
        evidence=finding.evidence,
        techniques=finding.techniques,
    )

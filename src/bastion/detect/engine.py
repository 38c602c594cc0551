"""The streaming engine: observations in, findings out, no I/O.

Each observation goes through every detector in pipeline order. A detector that raises is
counted (``errors``) and skipped for that event; the others still run. Drafts become findings,
deduplicated per (detection, entity) while repeats keep coming within the detection's window: the
stored finding gets a higher count and more evidence instead of a twin. Tuning is data, applied
here and not in the detectors: principals and orgs in learning mode get ``learning`` findings,
suppressions (networks, principals, orgs, detections) give ``suppressed`` ones; neither raises a
risk score. Findings feed detectors that correlate findings (D12, via ``on_finding``).

Event time drives everything. Events arrive in audit-log order; one whose time is more than
``lateness`` behind the newest seen is counted as late and still processed with its own time.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bastion.config.detection import Detection

from .detector import Context, Detector
from .findings import Draft, Finding
from .observation import Observation
from .risk import RiskBoard
from .state import LRU

log = logging.getLogger("bastion.detect")
IGNORED_EVENTS = ("finding.",)  # the engine's own events are not observed again


class FindingConsumer(Protocol):
    def on_finding(self, finding: Finding, ctx: Context) -> list[Draft]: ...


@dataclass
class EngineStats:
    processed: int = 0
    late: int = 0
    ignored: int = 0
    findings_new: int = 0
    findings_merged: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    watermark: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "processed": self.processed,
            "late": self.late,
            "ignored": self.ignored,
            "findings_new": self.findings_new,
            "findings_merged": self.findings_merged,
            "errors": dict(self.errors),
            "watermark": self.watermark,
        }


class DetectionEngine:
    def __init__(
        self,
        detectors: Sequence[Detector],
        context: Context,
        risk: RiskBoard,
        *,
        lateness: float = 300.0,
        max_open: int = 100_000,
    ) -> None:
        self.detectors = list(detectors)
        self.context = context
        self.risk = risk
        self.lateness = lateness
        self.stats = EngineStats()
        self._open: LRU[tuple[str, str, str], Finding] = LRU(max_open)
        self._windows = {detector.id: detector.window for detector in self.detectors}

    def windows_changed(self) -> None:
        """The detectors were replaced: refresh their dedup windows."""
        self._windows = {detector.id: detector.window for detector in self.detectors}

    @property
    def tuning(self) -> Detection:
        return self.context.config.detection

    def remember(self, findings: Iterable[Finding]) -> None:
        """Open findings from the store (after a restart), so repeats merge into them."""
        for finding in findings:
            self._open.put(finding.key, finding)

    def process(self, obs: Observation) -> list[Finding]:
        """Run one observation through the pipeline; returns the findings it created or grew."""
        if obs.name.startswith(IGNORED_EVENTS):
            self.stats.ignored += 1
            return []
        stats = self.stats
        stats.processed += 1
        if obs.time < stats.watermark - self.lateness:
            stats.late += 1
        stats.watermark = max(stats.watermark, obs.time)
        changed: list[Finding] = []
        for detector in self.detectors:
            try:
                drafts = detector.observe(obs, self.context)
            except Exception:  # a detector bug must not stop the others
                stats.errors[detector.id] = stats.errors.get(detector.id, 0) + 1
                log.exception("detector %s failed on event %s", detector.id, obs.id)
                continue
            for draft in drafts:
                changed.append(self._accept(draft, obs))
        if changed:
            changed += self._correlate(changed, obs)
        return changed

    def _correlate(self, changed: list[Finding], obs: Observation) -> list[Finding]:
        more: list[Finding] = []
        for detector in self.detectors:
            consumer = getattr(detector, "on_finding", None)
            if consumer is None:
                continue
            for finding in changed:
                if finding.detection == detector.id or finding.status != "open":
                    continue
                try:
                    drafts = consumer(finding, self.context)
                except Exception:
                    self.stats.errors[detector.id] = self.stats.errors.get(detector.id, 0) + 1
                    log.exception("detector %s failed on finding %s", detector.id, finding.id)
                    continue
                more.extend(self._accept(draft, obs) for draft in drafts)
        return more

    def _accept(self, draft: Draft, obs: Observation) -> Finding:
        key = (draft.detection, draft.entity_type, draft.entity)
        window = self._windows.get(draft.detection.split(":")[0], 3600.0)
        held = self._open.get(key)
        if held is not None and obs.time - held.last_seen <= window:
            finding = held.merged(draft, obs.time)
            self.stats.findings_merged += 1
        else:
            finding = Finding.from_draft(draft, obs.time, self._status(draft, obs))
            self.stats.findings_new += 1
        self._open.put(key, finding)
        if finding.status == "open":
            points = finding.severity.risk_points * max(min(draft.confidence, 1.0), 0.1)
            if held is not None and finding.id == held.id:
                points /= 2  # repeats count, but less than a new finding
            self.risk.add("principal", draft.principal, points, obs.time)
            if self.context.is_vendor(draft.org):  # never the lab's own org: one bad actor
                self.risk.add("org", draft.org, points / 2, obs.time)  # must not lock out all
        return finding

    def _status(self, draft: Draft, obs: Observation) -> str:
        tuning = self.tuning
        if draft.principal in tuning.learning.principals or draft.org in tuning.learning.orgs:
            return "learning"
        for rule in tuning.suppressions:
            if rule.detections and draft.detection not in rule.detections:
                continue
            if rule.principals and draft.principal not in rule.principals:
                continue
            if rule.orgs and draft.org not in rule.orgs:
                continue
            if rule.networks and not _in_networks(obs.source_ip, rule.networks):
                continue
            return "suppressed"
        return "open"


def _in_networks(address: str, networks: Sequence[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(network) for network in networks)

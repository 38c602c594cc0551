"""Scoring a run: per scenario, detected or not and how fast; false positives on the benign
population; the table and the JSON.

A finding *belongs* to a scenario when its evidence holds one of the scenario's malicious
decision events, or when it names the scenario — its principal (or entity) is one of the
scenario's principals, it is about one of the scenario's orgs as a whole, or about one of its
attacker networks — and was first seen inside the scenario's window (from its first malicious
call to ``GRACE`` after its last). A scenario is **detected** when an open finding of one of its
expected detections belongs to it. **Time to detect** runs from the first malicious call to
that finding's ``first_seen`` (both event time), in seconds and in the scenario's own calls sent
by then (1: the first call was enough). A finding first seen *before* the window that the
attack merely grew (a dedup merge) counts as detected with no time to detect.

A **false positive** is an open finding that belongs to no scenario: every other call of the run
is benign. The rate is per 1,000 benign principal-days (a principal with at least one benign
call that day). A run **passes** when every scenario is detected and the rate is under
``MAX_FP_RATE``.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from bastion.detect.findings import Finding
from bastion.detect.observation import network_of

from .runner import RunResult, Sent
from .story import GRACE, Scenario

MAX_FP_RATE = 5.0  # per 1,000 benign principal-days
WIDE = 120  # a console at least this wide also shows the technique ids


@dataclass(frozen=True, slots=True)
class ScenarioScore:
    id: str
    title: str
    expected: tuple[str, ...]
    techniques: tuple[str, ...]
    calls: int
    detected: bool
    fired: tuple[str, ...]  # every detection with an open finding naming the scenario
    ttd_seconds: float | None
    ttd_events: int | None
    finding: str  # the first detecting finding's id ("" if none)
    explanation: str


@dataclass(frozen=True, slots=True)
class FalsePositive:
    id: str
    detection: str
    severity: str
    entity: str
    principal: str
    org: str
    at_hours: float  # first seen, hours since the start of the run
    explanation: str


@dataclass(frozen=True, slots=True)
class Report:
    seed: int
    days: int
    scenarios: tuple[ScenarioScore, ...]
    false_positives: tuple[FalsePositive, ...]
    principal_days: int
    fp_rate: float  # per 1,000 benign principal-days
    ttd_median: dict[str, float]  # detection id -> median seconds over the scenarios it detected
    detectors: tuple[str, ...]
    missing: tuple[str, ...]  # expected by a scenario but not in the pipeline
    benign_calls: int
    benign_denied: int
    malicious_calls: int
    events: int
    findings: int
    wall_seconds: float

    @property
    def passed(self) -> bool:
        return all(s.detected for s in self.scenarios) and self.fp_rate < MAX_FP_RATE

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        data["max_fp_rate"] = MAX_FP_RATE
        return data


class Window:
    """What identifies one scenario's activity, for matching findings to it."""

    def __init__(self, scenario: Scenario, sent: list[Sent], start: float) -> None:
        self.scenario = scenario
        self.sent = sorted(sent, key=lambda s: s.at)
        self.begin = start + scenario.start
        self.end = start + scenario.end + GRACE
        self.events = {s.event for s in sent if s.event}
        self.networks = {network_of(address) for address in scenario.networks}

    def names(self, finding: Finding) -> bool:
        scenario = self.scenario
        return (
            finding.principal in scenario.principals
            or finding.entity in scenario.principals
            or (finding.entity_type == "org" and finding.entity in scenario.orgs)
            or (finding.entity_type == "network" and finding.entity in self.networks)
        )

    def holds(self, finding: Finding) -> bool:
        """Cites one of the scenario's malicious events (whenever it came: the victim's next
        use, hours later, can be what shows the attacker's use was impossible travel), or
        names the scenario and was first seen in its window (or grown by it, when merged)."""
        if not self.events.isdisjoint(finding.evidence):
            return True
        inside = self.begin <= finding.first_seen <= self.end
        grown = finding.first_seen < self.begin <= finding.last_seen
        return (inside or grown) and self.names(finding)


def score(result: RunResult) -> Report:
    findings = [f for f in result.findings if f.status == "open"]
    windows = [Window(s, result.sent.get(s.id, []), result.start) for s in result.scenarios]
    scores = tuple(_score(window, findings) for window in windows)
    explained = {f.id for w in windows for f in findings if w.holds(f)}
    false = tuple(_false(f, result.start) for f in findings if f.id not in explained)
    days = result.principal_days
    expected = {d for s in result.scenarios for d in s.expected}
    return Report(
        seed=result.seed,
        days=result.days,
        scenarios=scores,
        false_positives=tuple(sorted(false, key=lambda f: f.at_hours)),
        principal_days=days,
        fp_rate=round(1000 * len(false) / days, 2) if days else 0.0,
        ttd_median=_medians(windows, findings),
        detectors=result.detectors,
        missing=tuple(sorted(expected - set(result.detectors), key=_order)),
        benign_calls=result.benign_calls,
        benign_denied=result.benign_denied,
        malicious_calls=result.malicious_calls,
        events=result.events,
        findings=len(result.findings),
        wall_seconds=result.wall_seconds,
    )


def _order(detection: str) -> tuple[int, str]:
    digits = detection.removeprefix("D")
    return (int(digits), "") if digits.isdigit() else (99, detection)


def _detecting(window: Window, findings: Iterable[Finding], detection: str = "") -> list[Finding]:
    wanted = (detection,) if detection else window.scenario.expected
    matching = [f for f in findings if f.detection in wanted and window.holds(f)]
    return sorted(matching, key=lambda f: f.first_seen)


def _score(window: Window, findings: list[Finding]) -> ScenarioScore:
    scenario = window.scenario
    fired = sorted({f.detection for f in findings if window.holds(f)}, key=_order)
    first = next(iter(_detecting(window, findings)), None)
    seconds, events = _ttd(window, first) if first else (None, None)
    return ScenarioScore(
        id=scenario.id,
        title=scenario.title,
        expected=scenario.expected,
        techniques=scenario.techniques,
        calls=len(window.sent),
        detected=first is not None,
        fired=tuple(fired),
        ttd_seconds=seconds,
        ttd_events=events,
        finding=first.id if first else "",
        explanation=first.explanation if first else "",
    )


def _ttd(window: Window, finding: Finding) -> tuple[float | None, int | None]:
    if finding.first_seen < window.begin:
        return None, None  # an earlier finding the attack grew: no honest time to give
    seconds = round(finding.first_seen - window.begin, 3)
    events = sum(1 for sent in window.sent if sent.at <= finding.first_seen)
    return seconds, max(events, 1)


def _medians(windows: list[Window], findings: list[Finding]) -> dict[str, float]:
    times: dict[str, list[float]] = {}
    for window in windows:
        for detection in window.scenario.expected:
            first = next(iter(_detecting(window, findings, detection)), None)
            seconds = _ttd(window, first)[0] if first else None
            if seconds is not None:
                times.setdefault(detection, []).append(seconds)
    ordered = sorted(times, key=_order)
    return {d: round(statistics.median(times[d]), 3) for d in ordered}


def _false(finding: Finding, start: float) -> FalsePositive:
    return FalsePositive(
        id=finding.id,
        detection=finding.detection,
        severity=str(finding.severity),
        entity=f"{finding.entity_type}:{finding.entity}",
        principal=finding.principal,
        org=finding.org,
        at_hours=round((finding.first_seen - start) / 3600, 2),
        explanation=finding.explanation,
    )


# -- rendering -----------------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def table(report: Report, techniques: bool = True) -> Table:
    """The per-scenario table (``techniques``: with the technique ids column)."""
    grid = Table(title=f"bastion simulate --seed {report.seed} --days {report.days}")
    grid.add_column("scenario", no_wrap=True)
    grid.add_column("expected")
    grid.add_column("detected")
    grid.add_column("TTD s", justify="right")
    grid.add_column("TTD ev", justify="right")
    grid.add_column("fired")
    if techniques:
        grid.add_column("techniques")
    for s in report.scenarios:
        expected = ", ".join(f"{d} (not built)" if d in report.missing else d for d in s.expected)
        row = [
            s.id,
            expected,
            "[green]yes[/]" if s.detected else "[red]NO[/]",
            _seconds(s.ttd_seconds),
            str(s.ttd_events) if s.ttd_events is not None else "-",
            ", ".join(s.fired) or "-",
        ]
        grid.add_row(*row, *([" ".join(s.techniques)] if techniques else []))
    return grid


def render(report: Report, console: Console) -> None:
    console.print(table(report, techniques=console.width >= WIDE))
    detected = sum(s.detected for s in report.scenarios)
    by_detection = Counter(fp.detection for fp in report.false_positives)
    breakdown = ", ".join(f"{d} {n}" for d, n in sorted(by_detection.items())) or "none"
    medians = ", ".join(f"{d} {v:.1f} s" for d, v in report.ttd_median.items()) or "-"
    lines = [
        f"scenarios detected: {detected}/{len(report.scenarios)}",
        f"median time to detect: {medians}",
        f"false positives: {len(report.false_positives)} ({breakdown}) over "
        f"{report.principal_days} benign principal-days = {report.fp_rate:.2f} per 1,000 "
        f"(limit {MAX_FP_RATE:g})",
        f"traffic: {report.benign_calls} benign calls ({report.benign_denied} denied), "
        f"{report.malicious_calls} malicious; {report.events} audit events; "
        f"{report.findings} findings",
        f"detectors in the pipeline: {', '.join(report.detectors)}",
        f"wall clock: {report.wall_seconds:.1f} s",
    ]
    if report.missing:
        lines.append(f"[yellow]expected but not built: {', '.join(report.missing)}[/]")
    lines.append("[green]PASS[/]" if report.passed else "[red]FAIL[/]")
    for line in lines:
        console.print(line)

"""Scoring: what counts as detected, time to detect in seconds and events, false positives per
1,000 benign principal-days, the pass rule, and the rendered table."""

from __future__ import annotations

from dataclasses import replace

from rich.console import Console

from bastion.detect.findings import Finding, Severity
from bastion.simulate.plan import Call
from bastion.simulate.report import MAX_FP_RATE, render, score
from bastion.simulate.runner import RunResult, Sent
from bastion.simulate.story import GRACE, Scenario

T0 = 1_000_000.0  # the run's start, epoch seconds


def scenario(
    sid: str = "probe", start: float = 100.0, expected: tuple[str, ...] = ("D5",)
) -> Scenario:
    calls = tuple(
        Call(start + 2 * i, "mallory", "s", "198.18.9.9", "curl/8", scenario=sid) for i in range(4)
    )
    benign = Call(start + 1, "mallory", "own", "198.18.1.1", "OpenAI/Python 1")
    return Scenario(
        sid,
        "a probe",
        expected,
        ("T1526",),
        ("mallory",),
        ("acme",),
        (*calls, benign),
        ("198.18.9.9",),
    )


def finding(detection: str = "D5", at: float = 104.0, **changes: object) -> Finding:
    base = Finding(
        id=f"fd_{detection}_{at}",
        detection=detection,
        severity=Severity.HIGH,
        confidence=0.9,
        techniques=(),
        entity_type="principal",
        entity="mallory",
        principal="mallory",
        org="acme",
        explanation="mallory probed",
        evidence=("ev_x",),
        first_seen=T0 + at,
        last_seen=T0 + at,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def result(scenarios: list[Scenario], findings: list[Finding], days: int = 400) -> RunResult:
    sent = {
        s.id: [Sent(T0 + c.at, 403, f"ev_{s.id}_{i}") for i, c in enumerate(s.malicious)]
        for s in scenarios
    }
    return RunResult(
        seed=1,
        days=7,
        start=T0,
        scenarios=scenarios,
        sent=sent,
        findings=findings,
        principal_days=days,
        benign_calls=1000,
        benign_denied=3,
        malicious_calls=sum(len(v) for v in sent.values()),
        events=2000,
        detectors=("D5", "D9"),
    )


def test_a_finding_naming_the_attacker_in_the_window_detects_the_scenario() -> None:
    report = score(result([scenario()], [finding(at=104.0)]))
    (s,) = report.scenarios
    assert s.detected
    assert s.fired == ("D5",)
    assert s.ttd_seconds == 4.0
    assert s.ttd_events == 3
    assert s.finding == "fd_D5_104.0"
    assert report.false_positives == ()
    assert report.fp_rate == 0.0
    assert report.ttd_median == {"D5": 4.0}
    assert report.passed


def test_another_detection_fires_but_does_not_detect_it_and_is_no_false_positive() -> None:
    report = score(result([scenario()], [finding("D1", at=101.0)]))
    (s,) = report.scenarios
    assert not s.detected
    assert s.fired == ("D1",)
    assert s.ttd_seconds is None
    assert report.false_positives == ()  # it is about the attack
    assert not report.passed


def test_naming_works_by_principal_org_network_or_evidence() -> None:
    other = {"principal": "bob", "entity": "bob", "org": "lab", "evidence": ("ev_z",)}
    by_org = finding(at=105, **{**other, "entity_type": "org", "entity": "acme", "principal": ""})
    by_network = finding(at=106, **{**other, "entity_type": "network", "entity": "198.18.9.0/24"})
    by_evidence = finding(at=107, **{**other, "evidence": ("ev_probe_2",)})
    for named in (by_org, by_network, by_evidence):
        assert score(result([scenario()], [named])).scenarios[0].detected, named
    unrelated = finding(at=105, **other)
    report = score(result([scenario()], [unrelated]))
    assert not report.scenarios[0].detected
    assert [fp.principal for fp in report.false_positives] == ["bob"]


def test_only_the_window_counts_and_a_finding_outside_it_is_a_false_positive() -> None:
    before = finding(at=50.0, last_seen=T0 + 60.0)
    after = finding(at=106.0 + GRACE + 1)
    report = score(result([scenario()], [before, after]))
    assert not report.scenarios[0].detected
    assert len(report.false_positives) == 2
    at_edge = finding(at=106.0 + GRACE)  # the last call was at 106
    assert score(result([scenario()], [at_edge])).scenarios[0].detected


def test_a_later_finding_citing_a_malicious_event_belongs_to_the_scenario() -> None:
    late = finding("D3", at=106.0 + GRACE + 3600, evidence=("ev_probe_3", "ev_benign"))
    report = score(result([scenario(expected=("D3",))], [late]))
    assert report.false_positives == ()
    assert report.scenarios[0].detected
    assert report.scenarios[0].ttd_events == 4


def test_an_earlier_finding_the_attack_grew_detects_without_a_time() -> None:
    merged = finding(at=50.0, last_seen=T0 + 103.0, count=3)
    report = score(result([scenario()], [merged]))
    (s,) = report.scenarios
    assert s.detected
    assert s.ttd_seconds is None
    assert s.ttd_events is None
    assert report.false_positives == ()
    assert report.ttd_median == {}


def test_the_earliest_expected_finding_gives_the_time_to_detect() -> None:
    findings = [finding("D6", at=106.0), finding("D8", at=100.0)]
    report = score(result([scenario(expected=("D8", "D6"))], findings))
    (s,) = report.scenarios
    assert s.ttd_seconds == 0.0
    assert s.ttd_events == 1
    assert s.fired == ("D6", "D8")
    assert report.ttd_median == {"D6": 6.0, "D8": 0.0}
    assert report.missing == ("D6", "D8")  # neither is in this run's pipeline


def test_suppressed_and_learning_findings_neither_detect_nor_count_as_false() -> None:
    quiet = [finding(status="suppressed"), finding("D1", at=9.0, status="learning")]
    report = score(result([scenario()], quiet))
    assert not report.scenarios[0].detected
    assert report.false_positives == ()


def test_the_false_positive_rate_is_per_1000_benign_principal_days_and_must_stay_under_5() -> None:
    benign = {"principal": "bob", "entity": "bob", "org": "lab", "evidence": ()}
    fps = [finding("D8", at=5000.0 + i, **benign) for i in range(2)]
    detected = finding()
    passing = score(result([scenario()], [detected, *fps], days=401))
    assert passing.fp_rate == round(2000 / 401, 2) < MAX_FP_RATE
    assert passing.passed
    failing = score(result([scenario()], [detected, *fps], days=400))
    assert failing.fp_rate == MAX_FP_RATE
    assert not failing.passed
    assert [fp.at_hours for fp in failing.false_positives] == [
        round(5000 / 3600, 2),
        round(5001 / 3600, 2),
    ]
    assert score(result([scenario()], [detected], days=0)).fp_rate == 0.0


def test_the_report_renders_a_table_and_a_verdict_and_serializes() -> None:
    report = score(result([scenario(), scenario("late", 9000.0, ("D9",))], [finding()]))
    console = Console(record=True, width=140)
    render(report, console)
    text = console.export_text()
    assert "probe" in text
    assert "late" in text
    assert "T1526" in text
    assert "scenarios detected: 1/2" in text
    assert "FAIL" in text
    narrow = Console(record=True, width=80)
    render(report, narrow)
    assert "T1526" not in narrow.export_text()  # the technique column needs room
    data = report.as_dict()
    assert data["passed"] is False
    assert data["scenarios"][0]["ttd_events"] == 3
    assert data["max_fp_rate"] == MAX_FP_RATE

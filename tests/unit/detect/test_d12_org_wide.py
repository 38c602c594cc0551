"""D12 org-wide anomaly: three or more principals of one vendor org flagged within an hour;
quiet on one finding (or one principal's many), findings spread out, internal orgs, D8
amplifiers and suppressed findings. Also runs through the engine with the shipped pipeline."""

from __future__ import annotations

import json
import secrets
from dataclasses import replace

from bastion.config.models import BastionConfig
from bastion.detect.detector import Context
from bastion.detect.detectors import default_detectors
from bastion.detect.detectors.d12_org_wide import OrgWide
from bastion.detect.engine import DetectionEngine
from bastion.detect.findings import Draft, Finding, Severity
from bastion.detect.observation import Observation, network_of
from bastion.detect.risk import RiskBoard

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
CONFIG = BastionConfig.model_validate(
    {
        "version": 1,
        "orgs": {"lab": {"kind": "internal"}, "acme": {"kind": "vendor"}},
        "principals": {
            **{name: {"kind": "user", "org": "acme"} for name in ("vic", "wen", "xav", "yan")},
            "alice": {"kind": "user", "org": "lab"},
            "bob": {"kind": "user", "org": "lab"},
            "carol": {"kind": "user", "org": "lab"},
        },
    }
)
CTX = Context(CONFIG)


def d12_finding(
    principal: str,
    time: float,
    detection: str = "D4",
    severity: Severity = Severity.MEDIUM,
    org: str = "",
) -> Finding:
    draft = Draft(
        detection=detection,
        severity=severity,
        confidence=0.6,
        entity_type="principal",
        entity=principal,
        explanation="test finding",
        evidence=("ev_" + secrets.token_hex(4),),
        principal=principal,
        org=org,
    )
    return Finding.from_draft(draft, time)


def test_three_principals_of_a_vendor_within_an_hour_is_medium() -> None:
    detector = OrgWide()
    first, second = d12_finding("vic", T0), d12_finding("wen", T0 + 600, "D1")
    assert detector.on_finding(first, CTX) == []
    assert detector.on_finding(second, CTX) == []
    third = d12_finding("xav", T0 + 1200, "D15", org="acme")
    [draft] = detector.on_finding(third, CTX)
    assert draft.detection == "D12"
    assert draft.severity is Severity.MEDIUM
    assert (draft.entity_type, draft.entity, draft.org, draft.principal) == (
        "org",
        "acme",
        "acme",
        "",
    )
    assert draft.techniques == ("T1199",)
    assert set(draft.evidence) == {*first.evidence, *second.evidence, *third.evidence}
    assert "vendor org acme: 3 principals flagged within 60 min" in draft.explanation
    assert "vic: D4" in draft.explanation
    assert "xav: D15" in draft.explanation


def test_one_finding_or_one_principal_is_quiet() -> None:
    detector = OrgWide()
    for n in range(10):  # one noisy account
        detections = ("D1", "D4", "D15")
        finding = d12_finding("vic", T0 + n, detections[n % 3], Severity.HIGH)
        assert detector.on_finding(finding, CTX) == []
    assert detector.on_finding(d12_finding("wen", T0 + 20), CTX) == []  # two principals


def test_findings_spread_over_more_than_the_span_are_quiet() -> None:
    detector = OrgWide()
    for n, principal in enumerate(("vic", "wen", "xav")):
        assert detector.on_finding(d12_finding(principal, T0 + n * 2000), CTX) == []


def test_internal_orgs_amplifiers_and_non_open_findings_do_not_count() -> None:
    detector = OrgWide()
    for n, principal in enumerate(("alice", "bob", "carol")):
        assert detector.on_finding(d12_finding(principal, T0 + n), CTX) == []
    assert detector.on_finding(d12_finding("vic", T0, "D8", Severity.LOW), CTX) == []
    assert detector.on_finding(d12_finding("wen", T0, "D12"), CTX) == []
    muted = replace(d12_finding("xav", T0), status="suppressed")
    assert detector.on_finding(muted, CTX) == []
    orgless = replace(d12_finding("yan", T0), principal="")
    assert detector.on_finding(orgless, CTX) == []
    assert detector.on_finding(d12_finding("vic", T0 + 1), CTX) == []  # only one counted yet
    watch_all = OrgWide(vendors_only=False)
    drafts = [
        draft
        for n, principal in enumerate(("alice", "bob", "carol"))
        for draft in watch_all.on_finding(d12_finding(principal, T0 + n), CTX)
    ]
    assert [draft.explanation.split(":")[0] for draft in drafts] == ["org lab"]


def test_many_principals_or_strong_findings_make_it_high() -> None:
    detector = OrgWide()
    for n, principal in enumerate(("vic", "wen")):
        detector.on_finding(d12_finding(principal, T0 + n, severity=Severity.HIGH), CTX)
    [draft] = detector.on_finding(d12_finding("xav", T0 + 5, severity=Severity.LOW), CTX)
    assert draft.severity is Severity.HIGH
    many = OrgWide(high_principals=4)
    drafts = [
        draft
        for n, principal in enumerate(("vic", "wen", "xav", "yan"))
        for draft in many.on_finding(d12_finding(principal, T0 + n), CTX)
    ]
    assert [draft.severity for draft in drafts] == [Severity.MEDIUM, Severity.HIGH]


def test_observe_ignores_events() -> None:
    obs = Observation(idx=-1, id="ev_1", name="request.decided", time=T0, principal="vic")
    assert OrgWide().observe(obs, CTX) == []


def test_the_engine_feeds_it_the_findings_of_the_shipped_pipeline() -> None:
    engine = DetectionEngine(default_detectors(CONFIG), CTX, RiskBoard(half_life=3600.0))
    found: list[Finding] = []
    for n, principal in enumerate(("vic", "wen", "xav")):  # three shared contractor accounts
        for device in range(4):
            ip = f"198.51.{device}.{n + 1}"
            obs = Observation(
                idx=-1,
                id=f"ev_{principal}_{device}",
                name="request.decided",
                time=T0 + n * 60 + device,
                principal=principal,
                org="acme",
                allowed=True,
                source_ip=ip,
                network=network_of(ip),
                jkt=f"{principal}{device}".ljust(43, "k"),
                family=f"fam_{principal}_{device}",
            )
            found += engine.process(obs)
    assert {f.detection for f in found} >= {"D4", "D12"}
    [org_wide] = {f.id: f for f in found if f.detection == "D12"}.values()
    assert (org_wide.entity_type, org_wide.entity) == ("org", "acme")
    assert engine.stats.errors == {}


def test_state_round_trips_through_json() -> None:
    detector = OrgWide()
    detector.on_finding(d12_finding("vic", T0), CTX)
    detector.on_finding(d12_finding("wen", T0 + 1), CTX)
    copy = OrgWide()
    copy.load(json.loads(json.dumps(detector.dump())))
    assert copy.dump() == detector.dump()
    assert copy.on_finding(d12_finding("xav", T0 + 2), CTX) != []


def test_state_stays_bounded_for_50000_orgs() -> None:
    detector = OrgWide(vendors_only=False, cap_orgs=2_000)
    for n in range(50_000):
        detector.on_finding(d12_finding(f"p{n}", T0 + n, org=f"org{n}"), CTX)
    assert len(detector.flags) == 2_000
    assert detector.flags.stats.evictions == 48_000

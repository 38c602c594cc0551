"""The engine's own behaviour with a toy detector: dedup within the window, learning and
suppressions as data, a failing detector counted and isolated, late events, risk points."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import pytest

from bastion.config.models import BastionConfig
from bastion.detect.detector import Context, StatefulDetector, Structure
from bastion.detect.engine import DetectionEngine
from bastion.detect.findings import Draft, Severity
from bastion.detect.observation import Observation
from bastion.detect.risk import RiskBoard


def config(detection: dict[str, Any] | None = None) -> BastionConfig:
    return BastionConfig.model_validate(
        {
            "version": 1,
            "orgs": {"lab": {"kind": "internal"}, "acme": {"kind": "vendor"}},
            "principals": {"alice": {"kind": "user", "org": "lab"}},
            "detection": detection or {},
        }
    )


class Denials(StatefulDetector):
    """Fires on every denied request (a stand-in for a real detector)."""

    id: ClassVar[str] = "D5"
    window: ClassVar[float] = 300.0

    def observe(self, obs: Observation, ctx: Context) -> list[Draft]:
        if not obs.is_request or obs.allowed:
            return []
        return [
            Draft(
                detection=self.id,
                severity=Severity.HIGH,
                confidence=1.0,
                entity_type="principal",
                entity=obs.principal,
                explanation=f"{obs.principal} was denied {obs.model}",
                evidence=(obs.id,),
                principal=obs.principal,
                org=obs.org,
            )
        ]


class Broken(StatefulDetector):
    id: ClassVar[str] = "D1"

    def observe(self, obs: Observation, ctx: Context) -> list[Draft]:
        raise RuntimeError("detector bug")

    def structures(self) -> Mapping[str, Structure]:
        return {}


def denied(n: int, time: float, principal: str = "alice", ip: str = "10.0.0.1") -> Observation:
    return Observation(
        idx=n,
        id=f"ev_{n}",
        name="request.decided",
        time=time,
        principal=principal,
        org="lab" if principal == "alice" else "acme",
        model="m",
        allowed=False,
        source_ip=ip,
    )


def engine(detection: dict[str, Any] | None = None) -> DetectionEngine:
    return DetectionEngine([Broken(), Denials()], Context(config(detection)), RiskBoard())


def test_repeats_within_the_window_grow_one_finding() -> None:
    subject = engine()
    first = subject.process(denied(1, 1000.0))
    second = subject.process(denied(2, 1100.0))
    assert first[0].id == second[0].id
    assert second[0].count == 2
    assert second[0].evidence == ("ev_1", "ev_2")
    assert second[0].first_seen == 1000.0
    assert second[0].last_seen == 1100.0
    later = subject.process(denied(3, 1100.0 + 301))
    assert later[0].id != first[0].id  # outside the window: a new finding
    assert subject.stats.findings_new == 2
    assert subject.stats.findings_merged == 1


def test_a_failing_detector_is_counted_and_the_others_still_run() -> None:
    subject = engine()
    assert len(subject.process(denied(1, 1000.0))) == 1
    assert subject.stats.errors == {"D1": 1}


def test_learning_and_suppressions_record_but_raise_no_risk() -> None:
    learning = engine({"learning": {"principals": ["alice"]}})
    (finding,) = learning.process(denied(1, 1000.0))
    assert finding.status == "learning"
    assert learning.risk.risk("alice", "lab", 1000.0) == 0
    suppressed = engine(
        {"suppressions": [{"networks": ["10.0.0.0/8"], "detections": ["D5"], "reason": "VPN"}]}
    )
    (finding,) = suppressed.process(denied(1, 1000.0))
    assert finding.status == "suppressed"
    (other,) = suppressed.process(denied(2, 1000.0, principal="bob", ip="192.0.2.1"))
    assert other.status == "open"
    assert suppressed.risk.risk("bob", "acme", 1000.0) > 0


def test_open_findings_raise_risk_which_decays() -> None:
    subject = engine()
    subject.process(denied(1, 1000.0))
    now = subject.risk.risk("alice", "lab", 1000.0)
    assert now == 50  # high severity, full confidence
    assert subject.risk.risk("alice", "lab", 1000.0 + 3600) == 25  # one half-life later


def test_late_events_are_counted_and_still_processed() -> None:
    subject = engine()
    subject.process(denied(1, 5000.0))
    assert subject.process(denied(2, 1000.0))  # 4000 s late
    assert subject.stats.late == 1
    assert subject.stats.processed == 2


def test_the_engines_own_events_are_not_observed() -> None:
    subject = engine()
    event = Observation(idx=1, id="ev_1", name="finding.raised", time=1.0)
    assert subject.process(event) == []
    assert subject.stats.ignored == 1


@pytest.mark.parametrize(
    "record",
    [{}, {"name": 5, "time": "x", "reasons": "not-a-list", "tokens_out": True}, {"time": None}],
)
def test_malformed_records_become_empty_observations(record: dict[str, Any]) -> None:
    obs = Observation.from_record(record, 7)
    assert obs.idx == 7
    assert obs.time == 0.0
    assert obs.reasons == ()
    assert obs.tokens_out == 0

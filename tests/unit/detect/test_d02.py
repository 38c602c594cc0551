"""D2: a token family from a second network. Fires on concurrent use from two /24s and on a
revoked family; quiet on VPN egress rotation within one ASN and on a single network."""

from __future__ import annotations

from typing import Any

from bastion.config.models import BastionConfig
from bastion.detect.detector import Context
from bastion.detect.detectors.d02_token_family import TokenFamilyMoved
from bastion.detect.findings import Severity
from bastion.detect.inline import FamilyTracker
from bastion.detect.observation import Observation, network_of

CTX = Context(
    BastionConfig.model_validate(
        {"version": 1, "orgs": {"acme": {"kind": "vendor"}}, "principals": {}}
    )
)


def use(n: int, time: float, ip: str, asn: int = 64500, **fields: Any) -> Observation:
    values: dict[str, Any] = {
        "idx": n,
        "id": f"ev_{n}",
        "name": "request.decided",
        "time": time,
        "principal": "vic",
        "org": "acme",
        "family": "fam_1",
        "allowed": True,
        "source_ip": ip,
        "network": network_of(ip),
        "asn": asn,
    }
    values.update(fields)
    return Observation(**values)


def test_concurrent_use_from_two_networks_is_high() -> None:
    detector = TokenFamilyMoved()
    assert detector.observe(use(1, 0.0, "203.0.113.5"), CTX) == []
    assert detector.observe(use(2, 30.0, "203.0.113.9"), CTX) == []  # same /24
    (draft,) = detector.observe(use(3, 70.0, "198.51.100.7", asn=64999), CTX)
    assert draft.severity is Severity.HIGH
    assert draft.entity == "fam_1"
    assert draft.principal == "vic"
    assert "203.0.113.0/24" in draft.explanation
    assert "198.51.100.0/24" in draft.explanation
    assert "within 40 s" in draft.explanation
    assert draft.evidence == ("ev_3",)


def test_a_later_move_within_one_asn_is_quiet_and_to_another_asn_is_medium() -> None:
    detector = TokenFamilyMoved()
    detector.observe(use(1, 0.0, "203.0.113.5"), CTX)
    assert detector.observe(use(2, 3600.0, "203.0.114.5"), CTX) == []  # VPN egress rotation
    (draft,) = detector.observe(use(3, 9000.0, "198.51.100.7", asn=64999), CTX)
    assert draft.severity is Severity.MEDIUM


def test_a_revoked_family_is_critical() -> None:
    detector = TokenFamilyMoved()
    revoked = use(1, 0.0, "", name="token.family_revoked", error="refresh token reuse")
    (draft,) = detector.observe(revoked, CTX)
    assert draft.severity is Severity.CRITICAL
    assert "refresh token reuse" in draft.explanation


def test_state_round_trips_and_is_bounded() -> None:
    detector = TokenFamilyMoved(cap=100)
    for n in range(1000):
        detector.observe(use(n, float(n), "203.0.113.5", family=f"fam_{n}"), CTX)
    assert len(detector.structures()["families"]) == 100  # type: ignore[arg-type]
    copy = TokenFamilyMoved(cap=100)
    copy.load(detector.dump())
    assert copy.dump() == detector.dump()
    (draft,) = copy.observe(use(2000, 1000.0, "198.51.100.7", family="fam_999"), CTX)
    assert draft.severity is Severity.HIGH


def test_the_inline_tracker_marks_two_places_at_once() -> None:
    tracker = FamilyTracker(concurrent=600.0)
    assert not tracker.moved("fam_1", "203.0.113.5", 0.0)
    assert not tracker.moved("fam_1", "203.0.113.6", 10.0)
    assert tracker.moved("fam_1", "198.51.100.7", 20.0)
    assert not tracker.moved("fam_2", "198.51.100.7", 20.0)
    assert not tracker.moved("fam_3", "203.0.113.5", 0.0)
    assert not tracker.moved("fam_3", "198.51.100.7", 5000.0)  # hours later: not concurrent

"""D4 credential sharing: too many device keys or networks at once for one principal, or one
device key used by two principals; quiet on VPN egress changes, a user's two laptops, devices
used one after another, service fleets and delegation."""

from __future__ import annotations

import json
import secrets

from bastion.config.models import BastionConfig
from bastion.detect.detector import Context
from bastion.detect.detectors.d04_credential_sharing import CredentialSharing
from bastion.detect.findings import Severity
from bastion.detect.observation import Observation, network_of

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
CTX = Context(
    BastionConfig.model_validate(
        {
            "version": 1,
            "orgs": {"lab": {"kind": "internal"}, "acme": {"kind": "vendor"}},
            "principals": {
                "victor": {"kind": "user", "org": "acme"},
                "wendy": {"kind": "user", "org": "acme"},
                "batch": {"kind": "service", "org": "lab"},
            },
        }
    )
)


def d04_key(n: int) -> str:
    return f"{n:02d}" + "k" * 41


def d04_use(time: float, principal: str = "victor", **fields: object) -> Observation:
    values: dict[str, object] = {
        "name": "request.decided",
        "allowed": True,
        "source_ip": "203.0.113.10",
        "jkt": d04_key(0),
    }
    values.update(fields)
    return Observation(
        idx=-1,
        id="ev_" + secrets.token_hex(6),
        time=time,
        principal=principal,
        network=network_of(str(values["source_ip"])),
        **values,  # type: ignore[arg-type]
    )


def test_four_device_keys_within_ten_minutes_is_high() -> None:
    detector = CredentialSharing()
    for n in range(3):
        assert detector.observe(d04_use(T0 + n * 60, jkt=d04_key(n)), CTX) == []
    fourth = d04_use(T0 + 240, jkt=d04_key(3))
    [draft] = detector.observe(fourth, CTX)
    assert draft.detection == "D4"
    assert (draft.severity, draft.confidence) == (Severity.HIGH, 0.7)
    assert (draft.entity_type, draft.entity, draft.principal, draft.org) == (
        "principal",
        "victor",
        "victor",
        "acme",
    )
    assert draft.evidence == (fourth.id,)
    assert "4 device keys" in draft.explanation
    assert "limit 3" in draft.explanation
    assert "03kkkkkkkkkk…" in draft.explanation


def test_four_networks_within_ten_minutes_is_medium_and_both_is_high() -> None:
    detector = CredentialSharing()
    for n in range(3):
        assert detector.observe(d04_use(T0 + n, source_ip=f"198.51.{n}.7"), CTX) == []
    [draft] = detector.observe(d04_use(T0 + 4, source_ip="198.51.3.7"), CTX)
    assert draft.severity is Severity.MEDIUM
    assert "4 networks" in draft.explanation
    assert "198.51.3.0/24" in draft.explanation
    other = CredentialSharing()
    for n in range(3):
        other.observe(d04_use(T0 + n, "wendy", jkt=d04_key(n), source_ip=f"198.51.{n}.7"), CTX)
    [both] = other.observe(d04_use(T0 + 4, "wendy", jkt=d04_key(3), source_ip="192.0.2.1"), CTX)
    assert (both.severity, both.confidence) == (Severity.HIGH, 0.85)


def test_one_device_key_used_by_two_principals_is_high() -> None:
    detector = CredentialSharing()
    assert detector.observe(d04_use(T0, "victor", name="token.issued"), CTX) == []
    [draft] = detector.observe(d04_use(T0 + 3600, "wendy", source_ip="192.0.2.1"), CTX)
    assert (draft.severity, draft.entity_type, draft.entity) == (Severity.HIGH, "key", d04_key(0))
    assert draft.principal == "wendy"
    assert "of victor was used by wendy" in draft.explanation
    assert "192.0.2.0/24" in draft.explanation


def test_vpn_egress_changes_and_two_laptops_are_quiet() -> None:
    detector = CredentialSharing()
    for n in range(30):  # flapping between two VPN egress ranges, on two laptops
        obs = d04_use(T0 + n * 20, source_ip=f"203.0.{113 + n % 2}.10", jkt=d04_key(n % 2))
        assert detector.observe(obs, CTX) == []


def test_devices_used_one_after_another_are_quiet() -> None:
    detector = CredentialSharing()
    for n in range(6):  # six devices and networks, but 15 minutes apart
        obs = d04_use(T0 + n * 900, jkt=d04_key(n), source_ip=f"198.51.{n}.7")
        assert detector.observe(obs, CTX) == []


def test_a_service_fleet_gets_more_room() -> None:
    detector = CredentialSharing()
    for n in range(12):  # twelve workers with their own keys, at once
        obs = d04_use(T0 + n, "batch", jkt=d04_key(n), source_ip=f"10.0.{n}.5")
        assert detector.observe(obs, CTX) == []
    [draft] = detector.observe(d04_use(T0 + 20, "batch", jkt=d04_key(12)), CTX)
    assert "limit 12" in draft.explanation


def test_delegation_attributes_the_key_to_its_holder() -> None:
    detector = CredentialSharing()
    for n, subject in enumerate(("victor", "wendy", "alice")):  # batch acts for three people
        obs = d04_use(T0 + n, subject, act=("batch",), jkt=d04_key(9))
        assert detector.observe(obs, CTX) == []


def test_denials_are_not_uses() -> None:
    detector = CredentialSharing()
    detector.observe(d04_use(T0, "victor"), CTX)
    assert detector.observe(d04_use(T0 + 1, "wendy", allowed=False), CTX) == []
    assert detector.observe(d04_use(T0 + 1, "wendy", name="token.refused"), CTX) == []


def test_state_round_trips_through_json() -> None:
    detector = CredentialSharing()
    for n in range(3):
        detector.observe(d04_use(T0 + n, jkt=d04_key(n)), CTX)
    copy = CredentialSharing()
    copy.load(json.loads(json.dumps(detector.dump())))
    assert copy.dump() == detector.dump()
    assert copy.observe(d04_use(T0 + 5, jkt=d04_key(3)), CTX) != []


def test_state_stays_bounded_for_50000_principals() -> None:
    detector = CredentialSharing(cap_principals=20_000, cap_keys=20_000)
    for n in range(50_000):
        detector.observe(d04_use(T0 + n, f"p{n}", jkt=f"{n:043d}"), CTX)
    assert len(detector.keys) == len(detector.networks) == len(detector.owners) == 20_000
    assert detector.keys.stats.evictions == detector.owners.stats.evictions == 30_000


def test_one_key_used_by_two_logins_from_two_networks_in_turn_is_high() -> None:
    detector = CredentialSharing()
    owner = {"family": "fam_owner", "source_ip": "10.20.1.10"}
    friend = {"family": "fam_friend", "source_ip": "10.20.6.20"}  # a copy of the key elsewhere
    assert detector.observe(d04_use(T0, **owner), CTX) == []
    assert detector.observe(d04_use(T0 + 1, **friend), CTX) == []
    [draft] = detector.observe(d04_use(T0 + 2, **owner), CTX)
    assert (draft.severity, draft.entity_type, draft.entity) == (
        Severity.HIGH,
        "principal",
        "victor",
    )
    assert "two logins from two networks" in draft.explanation
    assert "10.20.1.0/24" in draft.explanation


def test_one_device_roaming_with_two_sessions_is_quiet() -> None:
    detector = CredentialSharing()
    # Two processes on one laptop (two families) move together from network A to B and back.
    plan = [("fam_1", "A"), ("fam_2", "A"), ("fam_1", "B"), ("fam_2", "B"), ("fam_1", "A")]
    for n, (family, net) in enumerate(plan):
        source = "10.20.1.10" if net == "A" else "10.20.2.10"
        assert detector.observe(d04_use(T0 + n * 10, family=family, source_ip=source), CTX) == []


def test_the_same_pattern_slower_than_the_flip_span_or_internal_is_quiet() -> None:
    slow = CredentialSharing(flip_span=120)
    internal = CredentialSharing()
    for n, (family, source) in enumerate(
        [("f1", "10.20.1.10"), ("f2", "10.20.6.20"), ("f1", "10.20.1.10")]
    ):
        assert slow.observe(d04_use(T0 + n * 200, family=family, source_ip=source), CTX) == []
        use = d04_use(T0 + n, "alice", family=family, source_ip=source)  # alice is internal
        assert internal.observe(use, CTX) == []


def test_two_places_state_survives_a_restart() -> None:
    detector = CredentialSharing()
    detector.observe(d04_use(T0, family="f1", source_ip="10.20.1.10"), CTX)
    detector.observe(d04_use(T0 + 1, family="f2", source_ip="10.20.6.20"), CTX)
    restored = CredentialSharing()
    restored.load(detector.dump())
    assert restored.observe(d04_use(T0 + 2, family="f1", source_ip="10.20.1.10"), CTX)

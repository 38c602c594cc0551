"""What each response action acts on for a finding: the right principal, org, family, key,
network or compartment, never a suspension for D8 alone or of an internal org, and never more
than a few targets however wide the evidence."""

from __future__ import annotations

import pytest

from bastion.detect.findings import Finding, Severity
from bastion.respond.actions import MAX_TARGETS, Target, targets_of
from bastion.respond.entities import Implicated

NOTHING = Implicated()


def finding(
    detection: str = "D5",
    *,
    entity_type: str = "principal",
    entity: str = "victor",
    principal: str = "victor",
    org: str = "acme",
) -> Finding:
    return Finding(
        id="fd_1",
        detection=detection,
        severity=Severity.HIGH,
        confidence=0.9,
        techniques=(),
        entity_type=entity_type,
        entity=entity,
        principal=principal,
        org=org,
        explanation="test",
        evidence=(),
        first_seen=0.0,
        last_seen=0.0,
    )


@pytest.mark.parametrize(
    ("action", "expected"),
    [("notify", Target("webhook", "*")), ("open_incident", Target("incident", ""))],
)
def test_notify_and_open_incident_always_have_their_one_target(
    action: str, expected: Target
) -> None:
    nobody = finding("D13", entity_type="org", entity="", principal="", org="")
    assert targets_of(action, nobody, NOTHING, "") == ([expected], "")


@pytest.mark.parametrize("action", ["step_up", "throttle", "suspend_principal"])
def test_principal_actions_take_the_findings_principal(action: str) -> None:
    # A finding about a family still names whose family it is.
    about_family = finding("D2", entity_type="family", entity="fam_1", principal="victor")
    assert targets_of(action, about_family, NOTHING, "vendor") == (
        [Target("principal", "victor")],
        "",
    )
    # The principal field wins over the entity; the entity fills in when the field is empty.
    both = finding(entity_type="principal", entity="mallory", principal="victor")
    assert targets_of(action, both, NOTHING, "vendor")[0] == [Target("principal", "victor")]
    entity_only = finding(entity_type="principal", entity="mallory", principal="")
    assert targets_of(action, entity_only, NOTHING, "vendor")[0] == [Target("principal", "mallory")]


@pytest.mark.parametrize("action", ["step_up", "throttle", "suspend_principal"])
def test_principal_actions_act_on_nothing_when_no_principal_is_named(action: str) -> None:
    about_org = finding("D12", entity_type="org", entity="acme", principal="")
    # Evidence naming principals is not enough: the action must not pick one of several.
    wide = Implicated(principals=frozenset({"victor", "vera"}))
    assert targets_of(action, about_org, wide, "vendor") == ([], "the finding names no principal")


@pytest.mark.parametrize("action", ["suspend_principal", "suspend_org"])
@pytest.mark.parametrize("org_kind", ["vendor", "internal"])
def test_d8_alone_never_suspends(action: str, org_kind: str) -> None:
    targets, why = targets_of(action, finding("D8"), NOTHING, org_kind)
    assert targets == []
    assert why == "D8 (off-hours use) alone never suspends"


@pytest.mark.parametrize("action", ["step_up", "throttle"])
def test_d8_may_still_step_up_or_throttle(action: str) -> None:
    assert targets_of(action, finding("D8"), NOTHING, "vendor")[0] == [
        Target("principal", "victor")
    ]


def test_suspend_org_takes_a_vendor_org_only() -> None:
    assert targets_of("suspend_org", finding("D12"), NOTHING, "vendor") == (
        [Target("org", "acme")],
        "",
    )
    lab = finding("D12", org="lab")
    for kind in ("internal", ""):  # an org of unknown kind is not suspended either
        assert targets_of("suspend_org", lab, NOTHING, kind) == (
            [],
            "an internal org is never suspended automatically",
        )
    assert targets_of("suspend_org", finding("D12", org=""), NOTHING, "vendor") == (
        [],
        "the finding names no org",
    )


POOLS = [
    ("revoke_family", "family", "families"),
    ("lock_key", "key", "keys"),
    ("lock_network", "network", "networks"),
    ("lock_compartment", "compartment", "compartments"),
]


@pytest.mark.parametrize(("action", "kind", "pool"), POOLS)
def test_evidence_targets_are_bounded_with_the_findings_own_entity_first(
    action: str, kind: str, pool: str
) -> None:
    many = [f"{kind}-{n:02d}" for n in range(10)]
    implicated = Implicated(**{pool: frozenset([*many, "own"])})
    own = finding(entity_type=kind, entity="own")
    targets, why = targets_of(action, own, implicated, "vendor")
    assert why == ""
    assert targets == [Target(kind, "own"), *[Target(kind, v) for v in many[: MAX_TARGETS - 1]]]
    # A finding about someone else: the evidence's, in a stable order, still bounded.
    other = targets_of(action, finding(), implicated, "vendor")[0]
    assert other == [Target(kind, v) for v in many[:MAX_TARGETS]]


@pytest.mark.parametrize(("action", "kind", "pool"), POOLS)
def test_evidence_targets_are_not_repeated(action: str, kind: str, pool: str) -> None:
    implicated = Implicated(**{pool: frozenset({"own"})})
    own = finding(entity_type=kind, entity="own")
    assert targets_of(action, own, implicated, "vendor") == ([Target(kind, "own")], "")
    alone = targets_of(action, own, NOTHING, "vendor")  # the entity alone is enough
    assert alone == ([Target(kind, "own")], "")


@pytest.mark.parametrize(("action", "kind", "pool"), POOLS)
def test_evidence_actions_act_on_nothing_without_such_evidence(
    action: str, kind: str, pool: str
) -> None:
    # Every other kind of evidence is there, and does not count: a key is not a family.
    others = {name: frozenset({"x"}) for _, _, name in POOLS if name != pool}
    unrelated = Implicated(principals=frozenset({"victor"}), orgs=frozenset({"acme"}), **others)
    assert targets_of(action, finding(), unrelated, "vendor") == (
        [],
        f"the finding and its evidence name no {kind}",
    )

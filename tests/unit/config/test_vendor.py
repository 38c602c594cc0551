"""Vendor boundaries in bastion.yaml: each mistake is a named error at its line."""

from __future__ import annotations

import pytest

from bastion.config import parse_config
from bastion.config.vendor import WorkingHours, network_allows
from bastion.errors import ConfigError

BASE = """\
version: 1
orgs:
  lab: {kind: internal}
  acme:
    kind: vendor
    sponsor: alice
    contract: {start: "2026-01-01T00:00:00Z", end: "2027-01-01T00:00:00Z"}
principals:
  alice: {kind: user, org: lab}
  vic: {kind: user, org: acme}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return caught.value.problems


def test_a_bounded_vendor_parses() -> None:
    config = parse_config(BASE)
    assert config.orgs["acme"].sponsor == "alice"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "sponsor: alice",
            "sponsor: vic",
            "orgs.acme.sponsor: sponsor 'vic' must belong to an internal org",
        ),
        ("sponsor: alice", "sponsor: nobody", "sponsor 'nobody' must be a principal declared"),
        (
            'end: "2027-01-01T00:00:00Z"',
            'end: "2025-01-01T00:00:00Z"',
            "contract end must be after its start",
        ),
        ('start: "2026-01-01T00:00:00Z"', 'start: "2026-01-01T00:00:00"', "need a time zone"),
        (
            "    sponsor: alice\n",
            "    sponsor: alice\n    allowed_networks: [10.0.0.300/8]\n",
            "is not an IP address or CIDR",
        ),
        (
            "    sponsor: alice\n",
            "    sponsor: alice\n    working_hours: {timezone: Mars/Base}\n",
            "unknown time zone",
        ),
        (
            "    sponsor: alice\n",
            '    sponsor: alice\n    working_hours: {timezone: UTC, start: "18:00", end: "08:00"}'
            "\n",
            "end must be after",
        ),
        ("    sponsor: alice\n", "    sponsor: alice\n    seat_limit: 0\n", "seat_limit"),
    ],
)
def test_boundary_mistakes_are_named(old: str, new: str, expected: str) -> None:
    text = BASE.replace(old, new, 1)
    assert text != BASE
    found = problems(text)
    assert any(expected in problem for problem in found), found
    assert all(problem.startswith("bastion.yaml:") for problem in found)


def test_working_hours_and_networks() -> None:
    hours = WorkingHours(timezone="UTC", start="08:00", end="18:00")
    monday_noon = 1795435200.0  # 2026-11-23 12:00 UTC, a Monday
    assert hours.covers(monday_noon)
    assert not hours.covers(monday_noon + 8 * 3600)  # 20:00
    assert not hours.covers(monday_noon + 5 * 86400)  # Saturday
    assert network_allows((), "192.0.2.1")
    assert network_allows(("192.0.2.0/24",), "::ffff:192.0.2.9")
    assert not network_allows(("192.0.2.0/24",), "198.51.100.1")
    assert not network_allows(("192.0.2.0/24",), "not-an-address")


ACCESS = (
    BASE
    + """\
compartments:
  frontier:
    level: critical
    access: {approvals: 2, approvers: [alice, bea]}
"""
)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("approvals: 2", "approvals: 1", "a critical compartment needs at least 2 approvals"),
        ("approvers: [alice, bea]", "approvers: [alice]", "2 approvals need at least as many"),
        (
            "approvers: [alice, bea]",
            "approvers: [alice, vic]",
            "approver 'vic' must be a principal",
        ),
        ("approvers: [alice, bea]", "approvers: [alice, ghost]", "approver 'ghost' must be"),
    ],
)
def test_access_rule_mistakes_are_named(old: str, new: str, expected: str) -> None:
    text = ACCESS.replace(
        "  vic: {kind: user, org: acme}\n",
        "  vic: {kind: user, org: acme}\n  bea: {kind: user, org: lab}\n",
    ).replace(old, new, 1)
    assert parse_config(
        ACCESS.replace(
            "  vic: {kind: user, org: acme}\n",
            "  vic: {kind: user, org: acme}\n  bea: {kind: user, org: lab}\n",
        )
    )
    found = problems(text)
    assert any(expected in problem for problem in found), found


@pytest.mark.parametrize(
    ("quotas", "expected"),
    [
        ("{principal: {requests_per_minute: 0}}", "quotas.principal.requests_per_minute"),
        ("{org: {tokens_per_hour: -5}}", "quotas.org.tokens_per_hour"),
        ("{principal: {requests_per_minute: '10'}}", "quotas.principal.requests_per_minute"),
        ("{team: {requests_per_minute: 10}}", "quotas.team: unknown key"),
    ],
)
def test_quota_mistakes_are_named(quotas: str, expected: str) -> None:
    text = BASE + f"compartments:\n  general:\n    level: internal\n    quotas: {quotas}\n"
    found = problems(text)
    assert any(expected in problem for problem in found), found

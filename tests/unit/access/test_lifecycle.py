"""Access-review due times and dormancy, decided from the snapshot exactly to the second."""

from __future__ import annotations

import pytest

from bastion.access.dormancy import is_dormant, last_activity
from bastion.access.reviews import review_due_at
from bastion.config import parse_config
from bastion.policy.authorize import Caller, authorize
from bastion.policy.decision import Reason
from bastion.policy.facts import request_facts
from bastion.policy.snapshot import Snapshot, build_snapshot
from bastion.store.principals import PrincipalRow
from bastion.store.reviews import ReviewRow

DAY = 86400.0
NOW = 1_790_000_000.0  # 2026-09-21, inside the contract below
CONFIG = """\
version: 1
upstreams:
  up: {base_url: "http://upstream.test/v1", api: openai}
models:
  - {name: open-chat, upstream: up, compartment: public}
  - {name: chat, upstream: up, compartment: general}
  - {name: secret-chat, upstream: up, compartment: secret}
compartments:
  public: {level: open, grants: {orgs: [lab, acme]}}
  general: {level: internal, grants: {orgs: [lab, acme]}}
  secret: {level: restricted, grants: {orgs: [lab, acme]}}
orgs:
  lab: {kind: internal}
  acme:
    kind: vendor
    sponsor: alice
    contract: {start: "2026-01-01T00:00:00Z", end: "2099-01-01T00:00:00Z"}
  beta: {kind: vendor, sponsor: alice, review_every_days: 7}
principals:
  alice: {kind: user, org: lab}
  victor: {kind: user, org: acme}
LIFECYCLE
"""


def review(org: str, due_at: float, completed_at: float | None = None) -> ReviewRow:
    return ReviewRow(f"rv_{org}", org, due_at - 30 * DAY, due_at, completed_at, None)


def row(name: str, org: str, created: float, active: float | None = None) -> PrincipalRow:
    return PrincipalRow(name, "user", org, "config", False, created, active)


def built(
    *,
    reviews: tuple[ReviewRow, ...] = (),
    lifecycle: str = "",
    principals: tuple[PrincipalRow, ...] = (),
) -> Snapshot:
    rows = principals or (row("alice", "lab", NOW - 5 * DAY), row("victor", "acme", NOW - DAY))
    return build_snapshot(
        epoch=1,
        config=parse_config(CONFIG.replace("LIFECYCLE", lifecycle)),
        principals=rows,
        device_keys=(),
        locks=(),
        env={},
        reviews=reviews,
    )


def decide(snapshot: Snapshot, who: str, org: str, model: str, now: float) -> list[Reason]:
    caller = Caller(principal=who, org=org, jkt="jkt", family="fam")
    compartment = snapshot.models[model].compartment
    decision = authorize(
        snapshot, caller, model, request_facts(snapshot, caller, compartment, "10.0.0.1", "x", now)
    )
    return [] if decision.allowed else list(decision.reasons)


# -- review due times -------------------------------------------------------------------------


def test_the_first_review_is_due_one_period_after_it_opens() -> None:
    assert review_due_at(every_days=90, last_completed_at=None, now=NOW) == NOW + 90 * DAY


def test_later_reviews_are_due_one_period_after_the_last_completion() -> None:
    completed = NOW - 10 * DAY
    assert review_due_at(every_days=30, last_completed_at=completed, now=NOW) == NOW + 20 * DAY
    late = NOW - 40 * DAY  # a completion long ago makes the new review overdue at once
    assert review_due_at(every_days=30, last_completed_at=late, now=NOW) < NOW


def test_the_review_period_defaults_to_90_days_for_vendors_only() -> None:
    orgs = parse_config(CONFIG.replace("LIFECYCLE", "")).orgs
    assert orgs["acme"].review_interval_days == 90
    assert orgs["beta"].review_interval_days == 7
    assert orgs["lab"].review_interval_days is None


def test_overdue_is_exact_to_the_second() -> None:
    due = NOW + 100
    snapshot = built(reviews=(review("acme", due),))
    assert not snapshot.review_overdue("acme", due - 0.001)
    assert snapshot.review_overdue("acme", due)
    assert decide(snapshot, "victor", "acme", "secret-chat", due - 1) == []
    assert decide(snapshot, "victor", "acme", "secret-chat", due) == [Reason.REVIEW_OVERDUE]


def test_overdue_suspends_restricted_and_above_only() -> None:
    snapshot = built(reviews=(review("acme", NOW - 1),))
    assert decide(snapshot, "victor", "acme", "secret-chat", NOW) == [Reason.REVIEW_OVERDUE]
    assert decide(snapshot, "victor", "acme", "chat", NOW) == []
    assert decide(snapshot, "victor", "acme", "open-chat", NOW) == []
    assert decide(snapshot, "alice", "lab", "secret-chat", NOW) == []


def test_completed_reviews_and_orgs_without_reviews_are_not_overdue() -> None:
    snapshot = built(
        reviews=(review("acme", NOW - 1, completed_at=NOW - 2), review("lab", NOW - 1))
    )
    assert snapshot.review_due == {}  # a completed one; and lab is internal, never reviewed
    assert decide(snapshot, "victor", "acme", "secret-chat", NOW) == []


def test_two_open_reviews_of_one_org_count_by_the_earliest() -> None:
    early, late = review("acme", NOW - 1), review("acme", NOW + DAY)
    assert built(reviews=(late, early)).review_due == {"acme": NOW - 1}


# -- dormancy ---------------------------------------------------------------------------------


def test_last_activity_is_the_last_token_or_else_the_creation() -> None:
    assert last_activity(row("a", "lab", NOW - 9 * DAY)) == NOW - 9 * DAY
    assert last_activity(row("a", "lab", NOW - 9 * DAY, NOW - DAY)) == NOW - DAY
    assert is_dormant(NOW - 30 * DAY, NOW, 30 * DAY)
    assert not is_dormant(NOW - 30 * DAY + 1, NOW, 30 * DAY)
    assert not is_dormant(NOW - 1000 * DAY, NOW, None)


def test_without_a_lifecycle_setting_nobody_is_dormant() -> None:
    snapshot = built(principals=(row("alice", "lab", NOW - 900 * DAY),))
    assert snapshot.dormant_after is None
    assert not snapshot.dormant("alice", NOW)
    assert decide(snapshot, "alice", "lab", "chat", NOW) == []


@pytest.mark.parametrize(
    ("created", "active", "dormant"),
    [
        (NOW - 40 * DAY, None, True),  # never active: counts from creation
        (NOW - 40 * DAY, NOW - 29 * DAY, False),
        (NOW - 40 * DAY, NOW - 30 * DAY, True),  # exactly the limit
        (NOW - DAY, None, False),
    ],
)
def test_dormancy_is_exact_and_denied_for_every_compartment(
    created: float, active: float | None, dormant: bool
) -> None:
    snapshot = built(
        lifecycle="lifecycle: {dormant_after_days: 30}",
        principals=(row("alice", "lab", created, active), row("victor", "acme", created, active)),
    )
    assert snapshot.dormant("alice", NOW) is dormant
    expected = [Reason.DORMANT_PRINCIPAL] if dormant else []
    for who, org in (("alice", "lab"), ("victor", "acme")):
        assert decide(snapshot, who, org, "open-chat", NOW) == expected


def test_a_principal_with_no_recorded_creation_counts_as_dormant() -> None:
    snapshot = built(
        lifecycle="lifecycle: {dormant_after_days: 30}",
        principals=(row("alice", "lab", NOW),),  # victor: declared, but no store row
    )
    assert not snapshot.dormant("alice", NOW)
    assert snapshot.dormant("victor", NOW)  # fail closed

"""Network, step-up and throttle locks over a real snapshot (no I/O).

Network locks refuse by the caller's source address (O(1) per prefix length), step-up locks
refuse tokens whose MFA login predates the lock (a step-up, not a "no"), and throttle locks
refuse nothing here: the gateway holds the principal to the lock's rate.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from bastion.policy.authorize import (
    Caller,
    check_locks,
    lock_targets,
    network_targets,
    step_up_lock,
    throttle_locks,
)
from bastion.policy.decision import Decision, Reason
from bastion.policy.snapshot import Snapshot
from bastion.policy.stepup import decide_with_step_up, step_up_error
from bastion.store.locks import LockRow

from .factories import CONFIG, NOW, caller, snapshot

ALICE = replace(caller("alice", "lab", jkt="jkt-alice", family="fam-alice"), source="203.0.113.77")
PLACED = NOW - 90.5  # when the step-up locks below were placed


def row(
    target_type: str,
    target: str,
    *,
    lock_id: str = "L-1",
    created_at: float = PLACED,
    expires_at: float | None = None,
    rate: float | None = None,
) -> LockRow:
    return LockRow(
        id=lock_id,
        target_type=target_type,
        target=target,
        reason="test",
        author="tester",
        created_at=created_at,
        expires_at=expires_at,
        released_at=None,
        released_by=None,
        rate=rate,
    )


def locked(*rows: LockRow, config_text: str = CONFIG) -> Snapshot:
    return snapshot(epoch=5, locks=rows, config_text=config_text)


# -- network locks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "targets"),
    [
        ("203.0.113.77", ("203.0.113.77/32", "203.0.113.0/24", "203.0.0.0/16")),
        ("::ffff:203.0.113.77", ("203.0.113.77/32", "203.0.113.0/24", "203.0.0.0/16")),
        (
            "2001:db8:aa:bb:1:2:3:4",
            ("2001:db8:aa:bb:1:2:3:4/128", "2001:db8:aa:bb::/64", "2001:db8:aa::/48"),
        ),
        ("", ()),
        ("testclient", ()),
        ("203.0.113.0/24", ()),  # a source is an address, never a network
    ],
)
def test_network_targets_cover_each_lockable_prefix(source: str, targets: tuple[str, ...]) -> None:
    assert network_targets(source) == tuple(("network", target) for target in targets)


@pytest.mark.parametrize("network", ["203.0.113.77/32", "203.0.113.0/24", "203.0.0.0/16"])
def test_a_network_lock_denies_callers_from_inside_it(network: str) -> None:
    decision = check_locks(locked(row("network", network)), ALICE, "general", NOW)
    assert decision == Decision(False, (Reason.LOCKED_NETWORK,), ("lock:L-1",), 5)


@pytest.mark.parametrize("source", ["203.0.114.77", "198.51.100.1", "2001:db8::1", ""])
def test_a_network_lock_leaves_other_networks_alone(source: str) -> None:
    built = locked(row("network", "203.0.113.0/24"))
    assert check_locks(built, replace(ALICE, source=source), "general", NOW) is None


@pytest.mark.parametrize("network", ["2001:db8:aa:bb::/64", "2001:db8:aa::/48"])
def test_an_ipv6_network_lock_denies_callers_inside_it(network: str) -> None:
    built = locked(row("network", network))
    inside = replace(ALICE, source="2001:db8:aa:bb:1:2:3:4")
    outside = replace(ALICE, source="2001:db8:ab:bb:1:2:3:4")
    decision = check_locks(built, inside, "general", NOW)
    assert decision is not None
    assert decision.reasons == (Reason.LOCKED_NETWORK,)
    assert check_locks(built, outside, "general", NOW) is None


def test_the_snapshot_knows_when_a_network_is_locked() -> None:
    assert not locked(row("principal", "carol")).has_network_locks
    assert locked(row("network", "203.0.113.0/24")).has_network_locks
    # without network locks the lookups are skipped altogether
    assert ("network", "203.0.113.0/24") in lock_targets(ALICE, "general")
    assert not any(kind == "network" for kind, _ in lock_targets(ALICE, "general", False))


def test_an_expired_network_lock_no_longer_denies() -> None:
    built = locked(row("network", "203.0.113.0/24", expires_at=NOW - 1))
    assert check_locks(built, ALICE, "general", NOW) is None


def test_a_lock_on_the_principal_is_named_before_its_network() -> None:
    built = locked(row("network", "203.0.113.0/24"), row("principal", "alice", lock_id="P"))
    decision = check_locks(built, ALICE, "general", NOW)
    assert decision is not None
    assert (decision.reasons, decision.policies) == ((Reason.LOCKED_PRINCIPAL,), ("lock:P",))


def test_a_delegated_call_from_a_locked_network_is_denied() -> None:
    acting = replace(ALICE, actor="victor", actor_org="acme")
    built = locked(row("network", "203.0.113.0/24"))
    decision = check_locks(built, acting.acting(), "general", NOW)
    assert decision is not None
    assert decision.reasons == (Reason.LOCKED_NETWORK,)


# -- step-up locks --------------------------------------------------------------------------------


def mfa(at: float | None) -> Caller:
    return replace(ALICE, mfa_at=at)


@pytest.mark.parametrize("mfa_at", [None, PLACED - 3600, PLACED - 1.5])
def test_a_step_up_lock_denies_a_token_without_mfa_since_it(mfa_at: float | None) -> None:
    decision = check_locks(locked(row("stepup", "alice")), mfa(mfa_at), "general", NOW)
    assert decision == Decision(False, (Reason.INSUFFICIENT_USER_AUTHENTICATION,), ("lock:L-1",), 5)


@pytest.mark.parametrize("mfa_at", [PLACED + 0.5, NOW - 5, NOW])
def test_mfa_after_the_step_up_lock_passes(mfa_at: float) -> None:
    assert check_locks(locked(row("stepup", "alice")), mfa(mfa_at), "general", NOW) is None


def test_a_step_up_lock_counts_from_the_start_of_its_second() -> None:
    """``auth_time`` is whole seconds: an MFA login in the lock's own second passes."""
    built = locked(row("stepup", "alice", created_at=1000.75))
    assert step_up_lock(built, mfa(1000.0), NOW) is None
    assert step_up_lock(built, mfa(999.0), NOW) is not None


def test_a_step_up_lock_on_someone_else_or_expired_leaves_the_caller_alone() -> None:
    assert check_locks(locked(row("stepup", "carol")), mfa(None), "general", NOW) is None
    expired = locked(row("stepup", "alice", expires_at=NOW - 1))
    assert check_locks(expired, mfa(None), "general", NOW) is None


def test_a_step_up_lock_on_the_actor_applies_to_its_delegated_calls() -> None:
    acting = replace(mfa(None), actor="victor", actor_org="acme")
    decision = check_locks(locked(row("stepup", "victor")), acting, "general", NOW)
    assert decision is not None
    assert decision.reasons == (Reason.INSUFFICIENT_USER_AUTHENTICATION,)


def test_an_outright_lock_wins_over_a_step_up_lock() -> None:
    built = locked(row("stepup", "alice"), row("org", "lab", lock_id="O"))
    decision = check_locks(built, mfa(None), "general", NOW)
    assert decision is not None
    assert (decision.reasons, decision.policies) == ((Reason.LOCKED_ORG,), ("lock:O",))


def test_the_latest_of_two_step_up_locks_is_the_one_to_satisfy() -> None:
    """MFA between the two locks satisfied the first only: the second still asks."""
    first = row("stepup", "alice", lock_id="first", created_at=NOW - 600)
    second = row("stepup", "alice", lock_id="second", created_at=NOW - 60, expires_at=NOW + 60)
    built = locked(first, second)
    lock = step_up_lock(built, mfa(NOW - 300), NOW)
    assert lock is not None
    assert lock.id == "second"
    assert step_up_lock(built, mfa(NOW - 30), NOW) is None
    # merged, the pair lasts as long as the longer-lasting one: until released
    assert step_up_lock(built, mfa(NOW - 300), NOW + 3600) is not None


def test_a_step_up_lock_asks_for_a_step_up_with_max_age_since_the_lock() -> None:
    built = locked(row("stepup", "alice"))
    decision, step_up = decide_with_step_up(built, mfa(None), "chat", "general", "", "openai", NOW)
    assert step_up is True
    assert decision.policies == ("lock:L-1",)
    error = step_up_error(built, mfa(None), "chat", "general", NOW)
    assert error.max_age == 90  # floor(NOW - PLACED)
    assert error.status == 401
    assert error.message == (
        "principal 'alice' must log in again with MFA (step-up lock placed 90 s ago)"
    )


def test_max_age_is_the_stricter_of_the_compartment_and_the_lock() -> None:
    strict = CONFIG.replace(
        "    token_binding: optional\n    grants:\n      orgs: [lab]\n",
        "    token_binding: optional\n    max_mfa_age_minutes: 1\n    grants:\n      orgs: [lab]\n",
    )
    assert "max_mfa_age_minutes: 1" in strict
    built = locked(row("stepup", "alice"), config_text=strict)
    assert step_up_error(built, mfa(None), "chat", "general", NOW).max_age == 60
    assert step_up_error(built, mfa(None), "chat", "general", PLACED + 10).max_age == 10


def test_a_step_up_lock_never_asks_in_vain() -> None:
    """A caller MFA would not help (no grant) gets the 403 naming the lock, not a challenge."""
    built = locked(row("stepup", "alice"))
    decision, step_up = decide_with_step_up(
        built, mfa(None), "frontier-model", "frontier", "", "openai", NOW
    )
    assert step_up is False
    assert decision.allowed is False
    assert Reason.INSUFFICIENT_USER_AUTHENTICATION in decision.reasons
    assert "lock:L-1" in decision.policies


# -- throttle locks -------------------------------------------------------------------------------


def test_a_throttle_lock_refuses_nothing_by_itself() -> None:
    built = locked(row("throttle", "alice", rate=6))
    assert check_locks(built, mfa(None), "general", NOW) is None
    assert not any(kind == "throttle" for kind, _ in lock_targets(ALICE, "general"))
    assert [lock.rate for lock in throttle_locks(built, ALICE, NOW)] == [6]


def test_throttle_locks_cover_the_principal_and_its_actor_only_while_active() -> None:
    built = locked(
        row("throttle", "alice", rate=6),
        row("throttle", "victor", lock_id="V", rate=2),
        row("throttle", "carol", lock_id="C", rate=1),
    )
    acting = replace(ALICE, actor="victor", actor_org="acme")
    assert [lock.id for lock in throttle_locks(built, acting, NOW)] == ["L-1", "V"]
    brief = locked(row("throttle", "alice", rate=6, expires_at=NOW - 1))
    assert throttle_locks(brief, ALICE, NOW) == []


def test_of_two_throttle_locks_the_lower_rate_holds() -> None:
    built = locked(
        row("throttle", "alice", lock_id="slow", rate=2, expires_at=NOW + 60),
        row("throttle", "alice", lock_id="fast", rate=10),
    )
    (lock,) = throttle_locks(built, ALICE, NOW + 3600)  # lasts as long as the longer one
    assert (lock.id, lock.rate) == ("slow", 2)

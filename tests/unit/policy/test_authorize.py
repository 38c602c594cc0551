"""Decisions over a snapshot: deny by default, grants, the shipped forbids, locks, errors."""

from __future__ import annotations

import cedarpy
import pytest

from bastion.policy.authorize import authorize, authorize_many, check_locks, lock_targets
from bastion.policy.decision import Decision, Reason

from .factories import CONFIG, MODELS, NOW, caller, facts, lock_row, principal_row, snapshot

GRANTED_BY = ("permit-granted-compartment",)
DAVE_GRANTED_FRONTIER = CONFIG.replace("principals: [carol]", "principals: [carol, dave]")
ACME_GRANTED_GENERAL = CONFIG.replace("orgs: [lab]", "orgs: [lab, acme]")


def test_a_principal_with_no_grant_is_denied_by_default() -> None:
    decision = authorize(snapshot(), caller("victor", "acme"), "chat", facts())
    assert decision == Decision(False, (Reason.NOT_GRANTED,), (), 1)


def test_a_compartment_granted_to_nobody_denies_everyone() -> None:
    built = snapshot()
    for name in ("alice", "carol", "victor"):
        decision = authorize(built, caller(name), "vault-model", facts())
        assert (decision.allowed, decision.reasons) == (False, (Reason.NOT_GRANTED,))


def test_a_grant_to_the_org_allows_its_members() -> None:
    decision = authorize(snapshot(), caller("alice"), "chat", facts())
    assert decision == Decision(True, (Reason.GRANTED,), GRANTED_BY, 1)


def test_an_org_grant_covers_store_principals_of_that_org() -> None:
    built = snapshot(principals=[principal_row("ci-bot", "lab"), principal_row("vbot", "acme")])
    assert authorize(built, caller("ci-bot"), "claude", facts()).allowed
    assert not authorize(built, caller("vbot", "acme"), "claude", facts()).allowed


def test_a_grant_to_a_principal_allows_that_principal_only() -> None:
    built = snapshot()
    carol = authorize(built, caller("carol"), "frontier-model", facts())
    assert carol == Decision(True, (Reason.GRANTED,), GRANTED_BY, 1)
    alice = authorize(built, caller("alice"), "frontier-model", facts())  # same org, no grant
    assert (alice.allowed, alice.reasons) == (False, (Reason.NOT_GRANTED,))


def test_a_disabled_principal_is_denied_despite_its_grant() -> None:
    decision = authorize(snapshot(), caller("dave"), "chat", facts())
    assert decision == Decision(
        False, (Reason.PRINCIPAL_DISABLED,), ("forbid-disabled-principal",), 1
    )


def test_a_principal_disabled_in_the_store_is_denied() -> None:
    built = snapshot(principals=[principal_row("ci-bot", "lab", disabled=True)])
    decision = authorize(built, caller("ci-bot"), "chat", facts())
    assert (decision.allowed, decision.reasons) == (False, (Reason.PRINCIPAL_DISABLED,))


def test_an_unbound_token_is_denied_where_binding_is_required() -> None:
    decision = authorize(snapshot(), caller("carol"), "frontier-model", facts(token_bound=False))
    assert decision == Decision(
        False, (Reason.TOKEN_BINDING_REQUIRED,), ("forbid-unbound-token",), 1
    )


def test_an_unbound_token_is_fine_where_binding_is_optional() -> None:
    assert authorize(snapshot(), caller("alice"), "chat", facts(token_bound=False)).allowed


def test_every_forbid_that_applies_is_reported_in_policy_order() -> None:
    built = snapshot(config_text=DAVE_GRANTED_FRONTIER)
    decision = authorize(built, caller("dave"), "frontier-model", facts(token_bound=False))
    assert decision.allowed is False
    assert decision.policies == ("forbid-disabled-principal", "forbid-unbound-token")
    assert decision.reasons == (Reason.PRINCIPAL_DISABLED, Reason.TOKEN_BINDING_REQUIRED)


def test_an_unknown_principal_is_denied_before_cedar_runs() -> None:
    decision = authorize(snapshot(epoch=7), caller("mallory"), "chat", facts())
    assert decision == Decision(False, (Reason.UNKNOWN_PRINCIPAL,), (), 7)


def test_a_store_principal_whose_org_is_gone_is_unknown() -> None:
    built = snapshot(principals=[principal_row("ghost", "gone-org")])
    decision = authorize(built, caller("ghost", "gone-org"), "chat", facts())
    assert decision.reasons == (Reason.UNKNOWN_PRINCIPAL,)


def test_an_unknown_model_is_never_allowed() -> None:
    decision = authorize(snapshot(), caller("alice"), "no-such-model", facts())
    assert decision.allowed is False


def test_an_operator_forbid_reports_its_id_and_generic_reason() -> None:
    built = snapshot(
        operator_policies="""
        @id("no-vendors")
        forbid (principal, action, resource) when { principal.org.kind == "vendor" };
        """,
        config_text=ACME_GRANTED_GENERAL,
    )
    assert authorize(built, caller("alice"), "chat", facts()).allowed
    decision = authorize(built, caller("victor", "acme"), "chat", facts())
    assert decision == Decision(False, (Reason.FORBIDDEN_BY_POLICY,), ("no-vendors",), 1)


def test_reasons_are_not_repeated_when_two_policies_give_the_same_one() -> None:
    built = snapshot(
        operator_policies="""
        @id("a-no-x") forbid (principal, action, resource) when { context.api == "x" };
        @id("b-no-x") forbid (principal, action, resource) when { context.api == "x" };
        """
    )
    decision = authorize(built, caller("alice"), "chat", facts(api="x"))
    assert decision.policies == ("a-no-x", "b-no-x")
    assert decision.reasons == (Reason.FORBIDDEN_BY_POLICY,)


# -- evaluation errors deny -----------------------------------------------------------------------

# Passes schema validation, overflows at run time (level_rank is 1 for an internal compartment).
OVERFLOWING = """
@id("overflows")
forbid (principal, action == Bastion::Action::"invoke", resource)
when { resource.compartment.level_rank + 9223372036854775807 > 0 };
"""


def test_the_overflowing_policy_really_errors_and_cedar_alone_would_allow() -> None:
    built = snapshot(operator_policies=OVERFLOWING)
    cedar = built.cedar
    request = {
        "principal": {"type": "Bastion::Principal", "id": "alice"},
        "action": {"type": "Bastion::Action", "id": "invoke"},
        "resource": {"type": "Bastion::Model", "id": "chat"},
        "context": facts().context(),
    }
    result = cedarpy.is_authorized(request, cedar.policies, cedar.entities, cedar.schema)
    assert result.diagnostics.errors  # the forbid errored ...
    assert result.allowed  # ... and Cedar skips erroring policies: the permit would win


def test_a_policy_error_makes_the_decision_a_deny() -> None:
    built = snapshot(epoch=4, operator_policies=OVERFLOWING)
    decision = authorize(built, caller("alice"), "chat", facts())
    assert decision == Decision(False, (Reason.POLICY_ERROR,), (), 4)


def test_a_policy_error_denies_in_the_batch_form_too() -> None:
    built = snapshot(operator_policies=OVERFLOWING)
    decisions = authorize_many(built, caller("alice"), ["chat", "claude"], facts())
    assert [d.reasons for d in decisions] == [(Reason.POLICY_ERROR,)] * 2


# -- the batch form -------------------------------------------------------------------------------


@pytest.mark.parametrize("principal", ["alice", "carol", "victor", "dave", "mallory"])
@pytest.mark.parametrize("token_bound", [True, False])
def test_authorize_many_agrees_with_authorize(principal: str, token_bound: bool) -> None:
    built = snapshot(epoch=11)
    who = caller(principal, "acme" if principal == "victor" else "lab")
    request = facts(token_bound=token_bound)
    models = [*MODELS, "no-such-model", "chat"]
    assert authorize_many(built, who, models, request) == [
        authorize(built, who, model, request) for model in models
    ]


def test_authorize_many_of_nothing_is_nothing() -> None:
    assert authorize_many(snapshot(), caller("alice"), [], facts()) == []
    assert authorize_many(snapshot(), caller("mallory"), [], facts()) == []


def test_authorize_many_shows_each_principal_what_it_may_use() -> None:
    built = snapshot()
    allowed = {
        name: [
            model
            for model, d in zip(
                MODELS, authorize_many(built, caller(name), MODELS, facts()), strict=True
            )
            if d.allowed
        ]
        for name in ("alice", "carol", "victor", "dave")
    }
    assert allowed == {
        "alice": ["chat", "claude"],
        "carol": ["chat", "claude", "frontier-model"],
        "victor": [],
        "dave": [],
    }


# -- locks ----------------------------------------------------------------------------------------

ALICE = caller("alice", "lab", jkt="jkt-alice", family="fam-alice")


@pytest.mark.parametrize(
    ("target_type", "target", "reason"),
    [
        ("all", "*", Reason.LOCKED_ALL),
        ("principal", "alice", Reason.LOCKED_PRINCIPAL),
        ("org", "lab", Reason.LOCKED_ORG),
        ("key", "jkt-alice", Reason.LOCKED_KEY),
        ("family", "fam-alice", Reason.LOCKED_FAMILY),
        ("compartment", "general", Reason.LOCKED_COMPARTMENT),
    ],
)
def test_each_lock_type_denies_with_its_reason(
    target_type: str, target: str, reason: Reason
) -> None:
    built = snapshot(epoch=8, locks=[lock_row(target_type, target, lock_id="L-1")])
    decision = check_locks(built, ALICE, "general", NOW)
    assert decision == Decision(False, (reason,), ("lock:L-1",), 8)


@pytest.mark.parametrize(
    ("target_type", "target"),
    [
        ("principal", "carol"),
        ("org", "acme"),
        ("key", "jkt-other"),
        ("family", "fam-other"),
        ("compartment", "frontier"),
        ("all", "everything"),  # the "all" lock's target is "*"
    ],
)
def test_a_lock_on_someone_else_leaves_the_caller_alone(target_type: str, target: str) -> None:
    built = snapshot(locks=[lock_row(target_type, target)])
    assert check_locks(built, ALICE, "general", NOW) is None


def test_a_compartment_lock_does_not_apply_when_no_compartment_is_asked_for() -> None:
    built = snapshot(locks=[lock_row("compartment", "general")])
    assert check_locks(built, ALICE, None, NOW) is None
    assert ("compartment", "general") not in lock_targets(ALICE, None)


def test_an_expired_lock_no_longer_denies() -> None:
    built = snapshot(locks=[lock_row("principal", "alice", expires_at=NOW - 1)])
    assert check_locks(built, ALICE, "general", NOW) is None


def test_a_lock_that_has_not_expired_yet_denies() -> None:
    built = snapshot(locks=[lock_row("principal", "alice", expires_at=NOW + 1)])
    decision = check_locks(built, ALICE, "general", NOW)
    assert decision is not None
    assert decision.reasons == (Reason.LOCKED_PRINCIPAL,)


@pytest.mark.parametrize("permanent_first", [True, False])
def test_a_permanent_lock_outlives_an_expiring_one_on_the_same_target(
    permanent_first: bool,
) -> None:
    permanent = lock_row("org", "lab", lock_id="forever")
    temporary = lock_row("org", "lab", lock_id="brief", expires_at=NOW + 5)
    rows = [permanent, temporary] if permanent_first else [temporary, permanent]
    decision = check_locks(snapshot(locks=rows), ALICE, "general", NOW + 3600)
    assert decision is not None
    assert (decision.reasons, decision.policies) == ((Reason.LOCKED_ORG,), ("lock:forever",))


def test_the_broadest_lock_is_named_first() -> None:
    built = snapshot(locks=[lock_row("principal", "alice"), lock_row("all", "*", lock_id="G")])
    decision = check_locks(built, ALICE, "general", NOW)
    assert decision is not None
    assert decision.reasons == (Reason.LOCKED_ALL,)


# -- epochs ---------------------------------------------------------------------------------------


def test_every_decision_carries_the_snapshot_epoch() -> None:
    built = snapshot(epoch=1234, locks=[lock_row("principal", "dave")])
    decisions = [
        authorize(built, caller("alice"), "chat", facts()),
        authorize(built, caller("victor", "acme"), "chat", facts()),
        authorize(built, caller("dave"), "chat", facts()),
        authorize(built, caller("mallory"), "chat", facts()),
        *authorize_many(built, caller("alice"), MODELS, facts()),
        *authorize_many(built, caller("mallory"), MODELS, facts()),
        check_locks(built, caller("dave"), "general", NOW),
    ]
    assert {d.epoch for d in decisions if d is not None} == {1234}
    assert all(d is not None for d in decisions)

"""Building snapshots (routes, principals, keys, the lock index, Cedar handles) and the holder."""

from __future__ import annotations

import dataclasses

import pytest

from bastion.errors import ConfigError
from bastion.policy.decision import Decision, Reason
from bastion.policy.holder import SnapshotHolder
from bastion.policy.snapshot import Snapshot, build_cedar, load_policy_text

from .factories import NOW, key_row, lock_row, principal_row, snapshot

# -- routes ---------------------------------------------------------------------------------------


def test_routes_resolve_upstream_url_model_id_and_timeouts() -> None:
    route = snapshot().models["chat"]
    assert (route.upstream, route.api, route.compartment) == ("oa", "openai", "general")
    assert route.upstream_model == "gpt-x"
    assert route.base_url == "http://upstream.test/v1"  # trailing slash dropped
    assert (route.connect_timeout, route.read_timeout) == (2.0, 30.0)


def test_upstream_model_defaults_to_the_model_name() -> None:
    route = snapshot().models["claude"]
    assert (route.upstream_model, route.api) == ("claude", "anthropic")


def test_api_key_comes_from_the_named_environment_variable_and_is_never_shown() -> None:
    models = snapshot(env={"OA_KEY": "sk-very-secret"}).models
    assert models["chat"].api_key == "sk-very-secret"
    assert models["chat"].api_key_env == "OA_KEY"
    assert "sk-very-secret" not in repr(models["chat"])
    assert models["claude"].api_key is None  # this upstream names no key


def test_a_missing_key_variable_gives_no_key() -> None:
    assert snapshot(env={}).models["chat"].api_key is None


def test_the_snapshot_is_stamped_with_its_epoch_and_is_immutable() -> None:
    built = snapshot(epoch=42)
    assert built.epoch == 42
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.epoch = 43  # type: ignore[misc]


# -- principals and device keys -------------------------------------------------------------------


def test_config_and_store_principals_are_both_known() -> None:
    built = snapshot(principals=[principal_row("ci-bot", "lab")])
    assert {"alice", "carol", "victor", "dave", "ci-bot"} <= set(built.principals)
    bot = built.principals["ci-bot"]
    assert (bot.kind, bot.org, bot.disabled) == ("service", "lab", False)


def test_a_store_principal_whose_org_left_the_config_is_dropped() -> None:
    built = snapshot(principals=[principal_row("ghost", "gone-org")])
    assert "ghost" not in built.principals


def test_the_config_wins_over_a_store_row_for_a_declared_principal() -> None:
    built = snapshot(principals=[principal_row("dave", "acme", kind="service", disabled=False)])
    dave = built.principals["dave"]
    assert (dave.kind, dave.org, dave.disabled) == ("user", "lab", True)


def test_device_keys_belong_to_their_principal_only() -> None:
    built = snapshot(device_keys=[key_row("jkt-a", "alice")])
    assert built.device_key("alice", "jkt-a") == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": "x-of-jkt-a",
    }
    assert built.device_key("carol", "jkt-a") is None  # someone else's key
    assert built.device_key("alice", "jkt-unknown") is None


def test_revoked_keys_and_keys_of_unknown_principals_are_left_out() -> None:
    built = snapshot(
        device_keys=[
            key_row("jkt-revoked", "alice", revoked_at=NOW - 1),
            key_row("jkt-orphan", "nobody"),
            key_row("jkt-live", "alice"),
        ]
    )
    assert set(built.device_keys) == {"jkt-live"}
    assert built.device_key("alice", "jkt-revoked") is None


# -- the lock index -------------------------------------------------------------------------------


def test_no_locks_means_no_lock_on_anything() -> None:
    assert snapshot().lock_on([("all", "*"), ("principal", "alice")], NOW) is None


def test_lock_on_finds_an_active_lock_on_any_target() -> None:
    built = snapshot(locks=[lock_row("org", "acme", lock_id="L1")])
    assert built.lock_on([("principal", "victor"), ("org", "lab")], NOW) is None
    lock = built.lock_on([("principal", "victor"), ("org", "acme")], NOW)
    assert lock is not None
    assert (lock.id, lock.target_type, lock.target) == ("L1", "org", "acme")


def test_an_expired_lock_is_ignored() -> None:
    built = snapshot(locks=[lock_row("principal", "alice", expires_at=NOW - 1)])
    assert built.lock_on([("principal", "alice")], NOW) is None
    assert built.lock_on([("principal", "alice")], NOW - 2) is not None  # before it expired


def test_a_lock_expires_exactly_at_its_expiry_time() -> None:
    built = snapshot(locks=[lock_row("principal", "alice", expires_at=NOW)])
    assert built.lock_on([("principal", "alice")], NOW - 0.001) is not None
    assert built.lock_on([("principal", "alice")], NOW) is None


@pytest.mark.parametrize("permanent_first", [True, False])
def test_a_lock_without_expiry_wins_over_one_with_expiry(permanent_first: bool) -> None:
    permanent = lock_row("principal", "alice", lock_id="forever")
    temporary = lock_row("principal", "alice", lock_id="brief", expires_at=NOW + 60)
    rows = [permanent, temporary] if permanent_first else [temporary, permanent]
    built = snapshot(locks=rows)
    lock = built.lock_on([("principal", "alice")], NOW + 3600)  # long after "brief" ended
    assert lock is not None
    assert lock.id == "forever"


@pytest.mark.parametrize("longer_first", [True, False])
def test_of_two_expiring_locks_the_longer_one_is_kept(longer_first: bool) -> None:
    longer = lock_row("key", "jkt-1", lock_id="long", expires_at=NOW + 600)
    shorter = lock_row("key", "jkt-1", lock_id="short", expires_at=NOW + 60)
    built = snapshot(locks=[longer, shorter] if longer_first else [shorter, longer])
    lock = built.lock_on([("key", "jkt-1")], NOW + 120)
    assert lock is not None
    assert lock.id == "long"


# -- Cedar handles --------------------------------------------------------------------------------


def test_shipped_policies_map_their_ids_to_reasons() -> None:
    assert dict(snapshot().cedar.reasons) == {
        "permit-granted-compartment": Reason.GRANTED,
        "forbid-disabled-principal": Reason.PRINCIPAL_DISABLED,
        "forbid-unbound-token": Reason.TOKEN_BINDING_REQUIRED,
        "permit-audit-read": Reason.GRANTED,
        "permit-time-bound-grant": Reason.GRANTED,
        "permit-delegated-grant": Reason.GRANTED,
        "forbid-critical-at-high-risk": Reason.RISK_TOO_HIGH,
        "forbid-critical-family-moved": Reason.TOKEN_FAMILY_MOVED,
        "forbid-honeytoken": Reason.HONEYTOKEN,
        "forbid-undeclared-origin": Reason.UNDECLARED_ORIGIN,
        "permit-access-request": Reason.GRANTED,
        "permit-access-admin": Reason.GRANTED,
        "forbid-vendor-control-plane": Reason.VENDOR_CONTROL_PLANE,
        "permit-directory-read": Reason.GRANTED,
        "permit-directory-admin": Reason.GRANTED,
        "forbid-vendor-directory": Reason.VENDOR_CONTROL_PLANE,
        "forbid-network-not-allowed": Reason.NETWORK_NOT_ALLOWED,
        "forbid-outside-contract": Reason.OUTSIDE_CONTRACT,
        "forbid-outside-working-hours": Reason.OUTSIDE_WORKING_HOURS,
        "forbid-outside-compartment-hours": Reason.OUTSIDE_COMPARTMENT_HOURS,
        "forbid-over-seat-limit": Reason.OVER_SEAT_LIMIT,
        "forbid-sponsor-inactive": Reason.SPONSOR_INACTIVE,
        "forbid-above-vendor-ceiling": Reason.ABOVE_VENDOR_CEILING,
        "forbid-stale-mfa": Reason.INSUFFICIENT_USER_AUTHENTICATION,
        "forbid-review-overdue": Reason.REVIEW_OVERDUE,
        "forbid-dormant-principal": Reason.DORMANT_PRINCIPAL,
        "permit-review": Reason.GRANTED,
        "forbid-vendor-review": Reason.VENDOR_CONTROL_PLANE,
        "permit-console-access": Reason.GRANTED,
        "permit-overview-read": Reason.GRANTED,
        "forbid-vendor-console": Reason.VENDOR_CONTROL_PLANE,
        "forbid-console-non-user": Reason.FORBIDDEN_BY_POLICY,
    }


def test_operator_policy_reasons_fall_back_to_forbidden_by_policy() -> None:
    built = snapshot(
        operator_policies="""
        @id("no-vendors")
        forbid (principal, action, resource) when { principal.org.kind == "vendor" };

        @id("odd-reason")
        @reason("not-a-reason")
        forbid (principal, action, resource) when { context.api == "nothing" };

        @id("named-reason")
        @reason("locked_all")
        forbid (principal, action, resource) when { context.api == "nothing" };
        """
    )
    reasons = built.cedar.reasons
    assert reasons["no-vendors"] is Reason.FORBIDDEN_BY_POLICY
    assert reasons["odd-reason"] is Reason.FORBIDDEN_BY_POLICY
    assert reasons["named-reason"] is Reason.LOCKED_ALL


def test_an_operator_policy_without_id_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        snapshot(operator_policies="forbid (principal, action, resource);")
    assert caught.value.file == "policies"
    assert any("has no @id annotation" in problem for problem in caught.value.problems)


def test_an_empty_id_counts_as_no_id() -> None:
    with pytest.raises(ConfigError, match="no @id"):
        snapshot(operator_policies='@id("") forbid (principal, action, resource);')


def test_an_operator_policy_reusing_a_shipped_id_is_refused() -> None:
    text = '@id("forbid-unbound-token") forbid (principal, action, resource);'
    with pytest.raises(ConfigError) as caught:
        snapshot(operator_policies=text)
    assert "duplicate policy @id 'forbid-unbound-token'" in caught.value.problems


def test_two_operator_policies_with_one_id_are_refused() -> None:
    text = """
    @id("mine") forbid (principal, action, resource) when { context.api == "a" };
    @id("mine") forbid (principal, action, resource) when { context.api == "b" };
    """
    with pytest.raises(ConfigError, match="duplicate policy @id 'mine'"):
        snapshot(operator_policies=text)


def test_a_policy_that_does_not_parse_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="Cedar parse error"):
        snapshot(operator_policies='@id("broken") forbid (principal, action, resource')


def test_a_policy_that_fails_schema_validation_is_a_config_error() -> None:
    text = '@id("typo") forbid (principal, action, resource) when { context.token_bund };'
    with pytest.raises(ConfigError) as caught:
        snapshot(operator_policies=text)
    assert any("token_bund" in problem for problem in caught.value.problems)


def test_entities_that_do_not_match_the_schema_are_a_config_error() -> None:
    schema, policies = load_policy_text()
    bad = [{"uid": {"type": "Bastion::Org", "id": "lab"}, "attrs": {"kind": 7}, "parents": []}]
    with pytest.raises(ConfigError, match="entities do not match the schema"):
        build_cedar(schema, policies, bad)


def test_a_broken_schema_is_a_config_error() -> None:
    _, policies = load_policy_text()
    with pytest.raises(ConfigError, match="Cedar parse error"):
        build_cedar("namespace Bastion {", policies, [])


# -- decisions as values --------------------------------------------------------------------------


def test_reason_parse_accepts_known_values_only() -> None:
    assert Reason.parse("principal_disabled") is Reason.PRINCIPAL_DISABLED
    assert Reason.parse(None) is Reason.FORBIDDEN_BY_POLICY
    assert Reason.parse("") is Reason.FORBIDDEN_BY_POLICY
    assert Reason.parse("Granted") is Reason.FORBIDDEN_BY_POLICY


def test_a_decision_describes_itself_by_its_reasons() -> None:
    denied = Decision(False, (Reason.PRINCIPAL_DISABLED, Reason.TOKEN_BINDING_REQUIRED), (), 3)
    assert denied.describe() == "denied: principal_disabled, token_binding_required"
    assert Decision(True, (Reason.GRANTED,), ("p",), 3).describe() == "allowed: granted"
    deny = Decision.deny(Reason.LOCKED_ALL, 9, ("lock:x",))
    assert (deny.allowed, deny.reasons, deny.policies, deny.epoch) == (
        False,
        (Reason.LOCKED_ALL,),
        ("lock:x",),
        9,
    )


# -- the holder -----------------------------------------------------------------------------------


def test_a_new_holder_has_no_snapshot() -> None:
    holder = SnapshotHolder()
    assert holder.current is None
    assert holder.last_error is None


def test_a_failed_first_build_leaves_no_snapshot() -> None:
    holder = SnapshotHolder()
    holder.failed("bastion.yaml:3: boom")
    assert holder.current is None
    assert holder.last_error == "bastion.yaml:3: boom"


def test_a_failed_rebuild_keeps_the_last_good_snapshot() -> None:
    holder = SnapshotHolder()
    good = snapshot(epoch=5)
    holder.swap(good)
    holder.failed("policies: duplicate policy @id 'x'")
    assert holder.current is good
    assert holder.last_error == "policies: duplicate policy @id 'x'"
    newer = snapshot(epoch=6)
    holder.swap(newer)
    assert holder.current is newer
    assert holder.last_error is None  # a good build clears the error


def test_listeners_are_called_on_every_swap_in_order_but_not_on_failure() -> None:
    holder = SnapshotHolder()
    seen: list[tuple[str, int]] = []

    def first(snap: Snapshot) -> None:
        seen.append(("first", snap.epoch))

    def second(snap: Snapshot) -> None:
        assert holder.current is snap  # listeners see the new snapshot already in place
        seen.append(("second", snap.epoch))

    holder.on_swap(first)
    holder.on_swap(second)
    holder.swap(snapshot(epoch=1))
    holder.failed("nope")
    holder.swap(snapshot(epoch=2))
    assert seen == [("first", 1), ("second", 1), ("first", 2), ("second", 2)]


def test_snapshots_share_the_compiled_policies_and_get_their_own_entities() -> None:
    first, second = snapshot(epoch=1), snapshot(epoch=2)
    assert first.cedar.policies is second.cedar.policies  # compiled once, per policy text
    assert first.cedar.schema is second.cedar.schema
    assert first.cedar.entities is not second.cedar.entities


def test_a_policy_error_is_raised_every_time_not_remembered() -> None:
    schema, policies = load_policy_text()
    broken = policies + '\n@id("x") permit(principal, action, resource) when { nonsense };\n'
    for _ in range(2):
        with pytest.raises(ConfigError) as caught:
            build_cedar(schema, broken, [])
        assert "Cedar parse error" in caught.value.problems[0]
    assert build_cedar(schema, policies, []).reasons  # the good text still compiles

"""Fail closed: the shipped policies validate against the shipped schema (so a bad edit fails CI),
and every way evaluation can go wrong — a policy that errors at run time, a request context
missing a fact or carrying a wrong one, an entity missing a required attribute — ends in a deny
or a refused build, never an allow."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

import cedarpy
import pytest

from bastion.errors import ConfigError
from bastion.policy.authorize import RequestFacts, authorize, authorize_many
from bastion.policy.decision import Decision, Reason
from bastion.policy.holder import SnapshotHolder
from bastion.policy.snapshot import Snapshot, build_snapshot, load_policy_text

from .factories import CONFIG, MODELS, caller, config, facts, snapshot

# -- the shipped policies and schema --------------------------------------------------------------


def shipped_files() -> dict[str, str]:
    root = resources.files("bastion.policy").joinpath("policies")
    return {
        entry.name: entry.read_text(encoding="utf-8")
        for entry in root.iterdir()
        if entry.name.endswith(".cedar")
    }


def test_the_shipped_policies_validate_against_the_shipped_schema() -> None:
    schema, policies = load_policy_text()
    result = cedarpy.validate_policies(policies, schema)
    assert [str(error) for error in result.errors] == []
    assert result.validation_passed


@pytest.mark.parametrize("name", sorted(shipped_files()))
def test_each_shipped_policy_file_validates_on_its_own(name: str) -> None:
    schema, _ = load_policy_text()
    result = cedarpy.validate_policies(shipped_files()[name], schema)
    assert [str(error) for error in result.errors] == [], name


def test_every_shipped_policy_names_an_id_and_a_known_reason() -> None:
    _, policies = load_policy_text()
    parsed = json.loads(cedarpy.policies_to_json_str(policies))["staticPolicies"]
    annotations = [policy.get("annotations", {}) for policy in parsed.values()]
    assert annotations
    known = {str(reason) for reason in Reason}
    assert [a for a in annotations if not a.get("id") or a.get("reason") not in known] == []


def test_the_validation_check_fails_on_a_bad_edit() -> None:
    """The check above is not vacuous: a typo in a shipped policy makes it fail."""
    schema, policies = load_policy_text()
    edited = policies.replace("context.network_allowed", "context.network_alowed", 1)
    assert edited != policies
    result = cedarpy.validate_policies(edited, schema)
    assert not result.validation_passed
    assert any("network_alowed" in str(error) for error in result.errors)


# -- a policy that errors at evaluation -----------------------------------------------------------

# Both validate against the schema. Adding 2^63 - 1 to a compartment's level rank plus one
# overflows at run time whatever the level; adding 1 instead does not.
ERRORING_PERMIT = """
@id("operator-permit")
permit (principal, action == Bastion::Action::"invoke", resource)
when { resource.compartment.level_rank + 1 + 9223372036854775807 > 0 };
"""
WORKING_PERMIT = ERRORING_PERMIT.replace("9223372036854775807", "1")
ERRORING_FORBID = ERRORING_PERMIT.replace("permit (", "forbid (")
# victor's vendor org on contract with a sponsor, so only the missing grant keeps him out.
ACME_ON_CONTRACT = CONFIG.replace(
    "  acme: {kind: vendor}",
    "  acme:\n    kind: vendor\n    sponsor: alice\n"
    '    contract: {start: "2020-01-01T00:00:00Z", end: "2099-01-01T00:00:00Z"}',
)


def cedar_alone(operator_policies: str, principal: str, model: str) -> cedarpy.AuthzResult:
    cedar = snapshot(operator_policies=operator_policies).cedar
    request = {
        "principal": {"type": "Bastion::Principal", "id": principal},
        "action": {"type": "Bastion::Action", "id": "invoke"},
        "resource": {"type": "Bastion::Model", "id": model},
        "context": facts().context(),
    }
    return cedarpy.is_authorized(request, cedar.policies, cedar.entities, cedar.schema)


def test_the_erroring_policies_validate_and_really_error() -> None:
    schema, shipped = load_policy_text()
    for text in (ERRORING_PERMIT, ERRORING_FORBID):
        assert cedarpy.validate_policies(shipped + text, schema).validation_passed
    assert cedar_alone(ERRORING_PERMIT, "victor", "chat").diagnostics.errors
    # Cedar alone skips an erroring forbid, so the standing grant would win:
    forbid = cedar_alone(ERRORING_FORBID, "alice", "chat")
    assert (forbid.allowed, bool(forbid.diagnostics.errors)) == (True, True)


def test_the_permit_would_allow_an_ungranted_caller_if_it_did_not_error() -> None:
    built = snapshot(operator_policies=WORKING_PERMIT, config_text=ACME_ON_CONTRACT)
    decision = authorize(built, caller("victor", "acme"), "chat", facts())
    assert decision == Decision(True, (Reason.GRANTED,), ("operator-permit",), 1)


def test_an_erroring_permit_denies_with_policy_error() -> None:
    built = snapshot(epoch=5, operator_policies=ERRORING_PERMIT, config_text=ACME_ON_CONTRACT)
    decision = authorize(built, caller("victor", "acme"), "chat", facts())
    assert decision == Decision(False, (Reason.POLICY_ERROR,), (), 5)


@pytest.mark.parametrize("policy", [ERRORING_PERMIT, ERRORING_FORBID], ids=["permit", "forbid"])
def test_an_erroring_policy_never_allows_anyone_anything(policy: str) -> None:
    built = snapshot(operator_policies=policy, config_text=ACME_ON_CONTRACT)
    who = [caller(name) for name in ("alice", "carol", "dave")] + [caller("victor", "acme")]
    for person in who:
        for model in MODELS:
            single = authorize(built, person, model, facts())
            assert single.allowed is False, (person.principal, model)
            assert single.reasons == (Reason.POLICY_ERROR,)
        assert not any(d.allowed for d in authorize_many(built, person, MODELS, facts()))


# -- a request context missing a fact, or carrying a wrong one ------------------------------------


@dataclass(frozen=True, slots=True)
class EditedFacts(RequestFacts):
    """The facts with one context attribute dropped, replaced or added: what the gateway would
    send if the schema and ``RequestFacts.context`` ever drifted apart."""

    key: str = ""
    value: object = None
    drop: bool = False

    def context(self) -> dict[str, object]:
        context = RequestFacts.context(self)
        if self.drop:
            del context[self.key]
        else:
            context[self.key] = self.value
        return context


BASE_CONTEXT = facts().context()


def edited(key: str, value: object = None, *, drop: bool = False) -> EditedFacts:
    return EditedFacts(
        token_bound=True, source_ip="192.0.2.7", api="openai", key=key, value=value, drop=drop
    )


def test_alice_is_allowed_with_the_full_context() -> None:
    assert authorize(snapshot(), caller("alice"), "chat", facts()).allowed
    assert authorize(snapshot(), caller("alice"), "chat", edited("api", "openai")).allowed


@pytest.mark.parametrize("key", sorted(BASE_CONTEXT))
def test_a_context_missing_any_fact_denies(key: str) -> None:
    decision = authorize(snapshot(epoch=9), caller("alice"), "chat", edited(key, drop=True))
    assert decision == Decision(False, (Reason.POLICY_ERROR,), (), 9)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("network_allowed", "yes"),  # a string where the schema says Bool
        ("token_bound", 1),
        ("source_ip", None),
        ("a_fact_the_schema_does_not_know", True),
    ],
)
def test_a_context_with_a_wrong_or_unknown_fact_denies(key: str, value: object) -> None:
    decision = authorize(snapshot(), caller("alice"), "chat", edited(key, value))
    assert (decision.allowed, decision.reasons) == (False, (Reason.POLICY_ERROR,))


def test_a_missing_fact_denies_in_the_batch_form_too() -> None:
    decisions = authorize_many(
        snapshot(), caller("carol"), MODELS, edited("network_allowed", drop=True)
    )
    assert [d.reasons for d in decisions] == [(Reason.POLICY_ERROR,)] * len(MODELS)


# -- an entity missing a required attribute ------------------------------------------------------


def schema_requiring_an_owner() -> tuple[str, str]:
    """The shipped schema with a required compartment attribute the snapshot does not supply,
    and a permit that reads it (it would allow every invoke if it ever evaluated)."""
    schema, policies = load_policy_text()
    needle = "    token_binding_required: Bool,\n"
    assert schema.count(needle) == 1
    schema = schema.replace(needle, needle + "    owner: String,\n")
    permit = (
        '\n@id("owner-permit")\npermit (principal, action == Bastion::Action::"invoke", resource)'
        ' when { resource.compartment.owner != "" || true };\n'
    )
    return schema, policies + permit


def build_with(schema: str, policies: str) -> Snapshot:
    return build_snapshot(
        epoch=2,
        config=config(),
        principals=(),
        device_keys=(),
        locks=(),
        env={},
        policy_text=(schema, policies),
    )


def test_an_entity_missing_a_required_attribute_fails_the_build() -> None:
    schema, policies = schema_requiring_an_owner()
    assert cedarpy.validate_policies(policies, schema).validation_passed  # only entities differ
    with pytest.raises(ConfigError) as caught:
        build_with(schema, policies)
    assert caught.value.file == "policies"
    assert caught.value.problems == [
        "entities do not match the schema: entity does not conform to the schema"
    ]  # cedarpy names neither the entity nor the attribute


def test_a_failed_build_keeps_the_last_good_snapshot_and_its_decisions() -> None:
    holder = SnapshotHolder()
    good = snapshot(epoch=1)
    holder.swap(good)
    schema, policies = schema_requiring_an_owner()
    try:  # what StateSync.reload does with a build that raises
        holder.swap(build_with(schema, policies))
    except ConfigError as exc:
        holder.failed(exc.message)
    assert holder.current is good
    assert "entities do not match the schema" in (holder.last_error or "")
    assert not authorize(good, caller("victor", "acme"), "chat", facts()).allowed  # no grant
    assert authorize(good, caller("alice"), "chat", facts()).epoch == 1


def test_a_failed_first_build_leaves_nothing_to_allow_with() -> None:
    holder = SnapshotHolder()
    schema, policies = schema_requiring_an_owner()
    with pytest.raises(ConfigError):
        holder.swap(build_with(schema, policies))
    assert holder.current is None  # the gateway denies every request: no_snapshot

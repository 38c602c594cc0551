"""D14: honeytokens — the streaming detector, and the inline deny that tells the caller
nothing more than ``not_granted``."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.config import parse_config
from bastion.detect.detector import Context
from bastion.detect.detectors import default_detectors
from bastion.detect.detectors.d14_honeytoken import HoneytokenPresented
from bastion.detect.findings import Severity
from bastion.detect.observation import Observation
from bastion.policy.authorize import Caller, authorize_admin
from bastion.policy.decide import decide
from bastion.policy.decision import Decision, Reason
from bastion.policy.snapshot import Snapshot, build_snapshot

T0 = 1_750_000_000.0
DECOY_KEY = "D" * 43
REAL_KEY = "R" * 43
CONFIG = f"""\
version: 1
upstreams:
  up: {{base_url: "http://upstream.test/v1", api: openai}}
models:
  - {{name: chat, upstream: up, compartment: general}}
compartments:
  general: {{level: internal, grants: {{orgs: [lab]}}}}
orgs:
  lab: {{kind: internal}}
principals:
  alice: {{kind: user, org: lab}}
  svc-backup: {{kind: service, org: lab, roles: [admin]}}
detection:
  honeytokens:
    principals: [svc-backup]
    keys: ["{DECOY_KEY}"]
"""
CTX = Context(config=parse_config(CONFIG))


def event(name: str = "request.decided", **fields: Any) -> Observation:
    return Observation(idx=-1, id="ev_1", name=name, time=T0, **fields)


def test_a_request_by_a_honeytoken_principal_is_critical() -> None:
    obs = event(
        principal="svc-backup", org="lab", source_ip="203.0.113.7", network="203.0.113.0/24"
    )
    (draft,) = HoneytokenPresented().observe(obs, CTX)
    assert draft.severity is Severity.CRITICAL
    assert (draft.entity_type, draft.entity, draft.principal, draft.org) == (
        "principal",
        "svc-backup",
        "svc-backup",
        "lab",
    )
    assert draft.explanation == (
        "honeytoken principal svc-backup presented from 203.0.113.0/24: request.decided (refused)"
    )
    assert draft.techniques == ("T1552.001", "AML.T0055")
    assert draft.evidence == ("ev_1",)


def test_a_honeytoken_key_is_critical_whoever_presents_it() -> None:
    (draft,) = HoneytokenPresented().observe(
        event("token.refused", principal="alice", jkt=DECOY_KEY), CTX
    )
    assert (draft.entity_type, draft.entity, draft.principal) == ("key", DECOY_KEY, "alice")
    assert draft.explanation == "honeytoken device key DDDDDDDD… presented: token.refused"
    assert DECOY_KEY not in draft.explanation


@pytest.mark.parametrize(
    "obs",
    [
        event("token.refused", principal="svc-backup"),
        event("token.issued", principal="svc-backup", jkt=REAL_KEY),
        event("request.decided", principal="alice", act=("svc-backup",)),  # delegated
        event("admin.denied", actor="svc-backup", target="GET /admin/audit"),
    ],
)
def test_every_kind_of_presentation_is_caught(obs: Observation) -> None:
    assert [d.severity for d in HoneytokenPresented().observe(obs, CTX)] == [Severity.CRITICAL]


@pytest.mark.parametrize(
    "obs",
    [
        event(principal="alice", jkt=REAL_KEY),
        # the operator setting the decoy up is not presenting it
        event("principal.created", actor="admin", target_type="principal", target="svc-backup"),
        event("key.enrolled", actor="admin", target_type="principal", target="svc-backup"),
        event("lock.created", actor="admin", target_type="key", target=DECOY_KEY),
    ],
)
def test_quiet_on_its_false_positive_traps(obs: Observation) -> None:
    assert HoneytokenPresented().observe(obs, CTX) == []


def test_without_honeytokens_nothing_fires_and_a_new_list_takes_effect() -> None:
    plain = Context(config=parse_config(CONFIG.split("detection:")[0]))
    detector = HoneytokenPresented()
    assert detector.observe(event(principal="svc-backup"), plain) == []
    assert detector.observe(event(principal="svc-backup"), CTX) != []


def test_it_is_in_the_default_pipeline() -> None:
    assert "D14" in [detector.id for detector in default_detectors(CTX.config)]


# -- inline ---------------------------------------------------------------------------------------


def snapshot() -> Snapshot:
    return build_snapshot(
        epoch=1, config=CTX.config, principals=(), device_keys=(), locks=(), env={}
    )


def test_covers() -> None:
    tokens = CTX.config.detection.honeytokens
    assert tokens.covers("svc-backup")
    assert tokens.covers("alice", DECOY_KEY)
    assert not tokens.covers("alice", REAL_KEY)
    assert not tokens.covers(None, None)
    assert not tokens.covers("", "")


@pytest.mark.parametrize(("principal", "jkt"), [("svc-backup", REAL_KEY), ("alice", DECOY_KEY)])
def test_a_honeytoken_is_denied_and_the_caller_is_told_not_granted(
    principal: str, jkt: str
) -> None:
    caller = Caller(principal=principal, org="lab", jkt=jkt, family="fam_1")
    decision = decide(snapshot(), caller, "chat", "general", "192.0.2.1", "openai", T0)
    assert not decision.allowed
    assert decision.reasons == (Reason.HONEYTOKEN,)
    assert decision.policies == ("forbid-honeytoken",)
    assert decision.shown() == (Reason.NOT_GRANTED,)


def test_the_control_plane_refuses_a_honeytoken_too() -> None:
    caller = Caller(principal="svc-backup", org="lab", jkt=REAL_KEY, family="fam_1")
    decision = authorize_admin(snapshot(), caller, "directory_read")
    assert decision.reasons == (Reason.HONEYTOKEN,)
    assert decision.shown() == (Reason.NOT_GRANTED,)


def test_other_reasons_are_shown_as_they_are() -> None:
    decision = Decision(False, (Reason.NETWORK_NOT_ALLOWED, Reason.OUTSIDE_CONTRACT), (), 1)
    assert decision.shown() == decision.reasons
    caller = Caller(principal="alice", org="lab", jkt=REAL_KEY, family="fam_1")
    assert decide(snapshot(), caller, "chat", "general", "192.0.2.1", "openai", T0).allowed

"""Control-plane actions of the directory: auditors read, admins change, vendors get nothing."""

from __future__ import annotations

import pytest

from bastion.policy.authorize import ADMIN_ACTIONS, authorize_admin
from bastion.policy.decision import Reason

from .factories import CONFIG, caller, snapshot

ROLES = CONFIG.replace(
    "  carol: {kind: user, org: lab}\n",
    "  carol: {kind: user, org: lab}\n"
    "  root: {kind: user, org: lab, roles: [admin]}\n"
    "  audrey: {kind: user, org: lab, roles: [auditor]}\n",
)
DIRECTORY = ("directory_read", "directory_admin", "lock_admin")


@pytest.mark.parametrize(
    ("who", "org", "allowed"),
    [
        ("root", "lab", {"directory_read", "directory_admin", "lock_admin"}),
        ("audrey", "lab", {"directory_read"}),
        ("alice", "lab", set()),
        ("victor", "acme", set()),
    ],
)
def test_who_may_read_and_change_the_directory(who: str, org: str, allowed: set[str]) -> None:
    built = snapshot(config_text=ROLES)
    assert set(DIRECTORY) <= ADMIN_ACTIONS
    for action in DIRECTORY:
        decision = authorize_admin(built, caller(who, org), action)
        assert decision.allowed is (action in allowed), (who, action)
        if not decision.allowed:
            expected = Reason.VENDOR_CONTROL_PLANE if org == "acme" else Reason.NOT_GRANTED
            assert decision.reasons == (expected,)


def test_an_operator_permit_cannot_open_the_directory_to_a_vendor() -> None:
    generous = '@id("operator-generous")\npermit (principal, action, resource);\n'
    built = snapshot(config_text=ROLES, operator_policies=generous)
    for action in DIRECTORY:
        decision = authorize_admin(built, caller("victor", "acme"), action)
        assert decision.reasons == (Reason.VENDOR_CONTROL_PLANE,)
        assert decision.policies == ("forbid-vendor-directory",)
    assert authorize_admin(built, caller("alice"), "lock_admin").allowed


def test_an_unknown_admin_action_is_denied() -> None:
    decision = authorize_admin(snapshot(config_text=ROLES), caller("root"), "directory_destroy")
    assert decision.reasons == (Reason.FORBIDDEN_BY_POLICY,)

"""Console actions: any internal user may sign in, auditors and admins see the overview;
vendors, services and disabled principals get no console, whatever an operator permits."""

from __future__ import annotations

import pytest

from bastion.policy.authorize import ADMIN_ACTIONS, authorize_admin
from bastion.policy.decision import Reason

from .factories import CONFIG, caller, snapshot

ROLES = CONFIG.replace(
    "  carol: {kind: user, org: lab}\n",
    "  carol: {kind: user, org: lab}\n"
    "  root: {kind: user, org: lab, roles: [admin]}\n"
    "  audrey: {kind: user, org: lab, roles: [auditor]}\n"
    "  robot: {kind: service, org: lab}\n",
)
CONSOLE = ("console_access", "overview_read")


@pytest.mark.parametrize(
    ("who", "org", "allowed", "refusal"),
    [
        ("root", "lab", {"console_access", "overview_read"}, None),
        ("audrey", "lab", {"console_access", "overview_read"}, None),
        ("alice", "lab", {"console_access"}, Reason.NOT_GRANTED),
        ("victor", "acme", set(), Reason.VENDOR_CONTROL_PLANE),
        ("robot", "lab", set(), Reason.FORBIDDEN_BY_POLICY),
        ("dave", "lab", set(), Reason.FORBIDDEN_BY_POLICY),
    ],
)
def test_who_may_use_the_console(
    who: str, org: str, allowed: set[str], refusal: Reason | None
) -> None:
    built = snapshot(config_text=ROLES)
    assert set(CONSOLE) <= ADMIN_ACTIONS
    for action in CONSOLE:
        decision = authorize_admin(built, caller(who, org), action)
        assert decision.allowed is (action in allowed), (who, action)
        if not decision.allowed:
            assert refusal in decision.reasons, (who, action, decision.reasons)


def test_an_operator_permit_cannot_open_the_console_to_a_vendor_or_a_service() -> None:
    generous = '@id("operator-generous")\npermit (principal, action, resource);\n'
    built = snapshot(config_text=ROLES, operator_policies=generous)
    for action in CONSOLE:
        assert not authorize_admin(built, caller("victor", "acme"), action).allowed
        assert not authorize_admin(built, caller("robot"), action).allowed
    assert authorize_admin(built, caller("alice"), "overview_read").allowed

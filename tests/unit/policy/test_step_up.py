"""MFA freshness and step-up over a real snapshot and the shipped Cedar policies (no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import orjson
import pytest

from bastion.errors import InsufficientUserAuthentication
from bastion.gateway.responses import error_body, error_headers
from bastion.policy.authorize import Caller
from bastion.policy.decision import Decision, Reason
from bastion.policy.mfa import max_mfa_age, mfa_fresh
from bastion.policy.stepup import decide_with_step_up
from bastion.store.locks import LockRow

from .factories import CONFIG, NOW, caller, lock_row, snapshot

# general asks for MFA within 10 minutes; vault too, but is granted to nobody.
MFA_CONFIG = CONFIG.replace(
    "    token_binding: optional\n    grants:\n      orgs: [lab]\n",
    "    token_binding: optional\n    max_mfa_age_minutes: 10\n    grants:\n      orgs: [lab]\n",
).replace(
    "  vault:\n    level: internal\n",
    "  vault:\n    level: internal\n    max_mfa_age_minutes: 10\n",
)


def alice(mfa_at: float | None) -> Caller:
    return replace(caller("alice"), mfa_at=mfa_at)


COMPARTMENTS = {"chat": "general", "frontier-model": "frontier", "vault-model": "vault"}


def decide(
    who: Caller, model: str = "chat", locks: Sequence[LockRow] = ()
) -> tuple[Decision, bool]:
    built = snapshot(config_text=MFA_CONFIG, locks=locks)
    return decide_with_step_up(built, who, model, COMPARTMENTS[model], "", "openai", NOW)


def test_the_config_asks_for_mfa_where_intended() -> None:
    assert "max_mfa_age_minutes: 10" in MFA_CONFIG
    built = snapshot(config_text=MFA_CONFIG)
    assert max_mfa_age(built, "general") == 600
    assert max_mfa_age(built, "frontier") is None
    assert max_mfa_age(built, None) is None


@pytest.mark.parametrize(
    ("mfa_at", "fresh"),
    [(None, False), (NOW - 601, False), (NOW - 600, True), (NOW - 5, True), (NOW + 2, True)],
)
def test_mfa_is_fresh_up_to_and_including_max_age(mfa_at: float | None, fresh: bool) -> None:
    built = snapshot(config_text=MFA_CONFIG)
    who = replace(caller("alice"), mfa_at=mfa_at)
    assert mfa_fresh(built, who, "general", "openai", NOW) is fresh
    assert mfa_fresh(built, who, "frontier", "openai", NOW) is True  # asks for no MFA
    assert mfa_fresh(built, who, "general", "list", NOW) is True  # listing never asks


def test_stale_mfa_alone_asks_for_a_step_up() -> None:
    decision, step_up = decide(alice(None))
    assert step_up is True
    assert decision.allowed is False
    assert decision.reasons == (Reason.INSUFFICIENT_USER_AUTHENTICATION,)
    assert decision.policies == ("forbid-stale-mfa",)


def test_fresh_mfa_is_allowed() -> None:
    decision, step_up = decide(alice(NOW - 60))
    assert (decision.allowed, step_up) == (True, False)


def test_no_step_up_when_mfa_would_not_help() -> None:
    decision, step_up = decide(alice(None), "vault-model")
    assert step_up is False
    assert decision.reasons == (Reason.NOT_GRANTED, Reason.INSUFFICIENT_USER_AUTHENTICATION)
    assert decision.policies == ("forbid-stale-mfa",)


def test_a_lock_is_never_turned_into_a_step_up() -> None:
    decision, step_up = decide(alice(None), locks=[lock_row("principal", "alice")])
    assert step_up is False
    assert decision.reasons == (Reason.LOCKED_PRINCIPAL,)


def test_the_step_up_challenge_and_body() -> None:
    error = InsufficientUserAuthentication('needs "MFA"\n now', 900)
    assert error.status == 401
    headers = dict(error_headers(error))
    assert headers[b"www-authenticate"] == (
        b'DPoP error="insufficient_user_authentication", '
        b'error_description="needs \'MFA\'  now", max_age=900, algs="EdDSA ES256"'
    )
    assert orjson.loads(error_body(error)) == {
        "type": "error",
        "error": {
            "type": "insufficient_user_authentication",
            "code": "insufficient_user_authentication",
            "message": 'needs "MFA"\n now',
        },
    }

"""D9: access after the contract, a grant, or an account's active life ended. Fires at the first
denial (high for contract end, dormancy, a disabled account and a revoked grant; medium for an
expired grant); quiet on ``not_granted`` for a principal that never held a time-bound grant
there, and on allowed traffic."""

from __future__ import annotations

from typing import Any

import orjson

from bastion.config.models import BastionConfig
from bastion.detect.detector import Context
from bastion.detect.detectors.d09_contract_and_dormancy import ContractAndDormancy
from bastion.detect.findings import Draft, Severity
from bastion.detect.observation import Observation

T0 = 1_700_000_000.0
HOUR = 3600.0
CTX = Context(
    BastionConfig.model_validate(
        {
            "version": 1,
            "orgs": {"acme": {"kind": "vendor"}, "lab": {"kind": "internal"}},
            "principals": {
                "victor": {"kind": "user", "org": "acme"},
                "carol": {"kind": "user", "org": "lab"},
            },
        }
    ),
    orgs_of={"dora": "lab"},
)


def call(
    n: int, dt: float, *, allowed: bool, reasons: tuple[str, ...], **fields: Any
) -> Observation:
    values: dict[str, Any] = {
        "idx": n,
        "id": f"ev_{n}",
        "name": "request.decided",
        "time": T0 + dt,
        "principal": "victor",
        "org": "acme",
        "model": "cyber-frontier",
        "compartment": "frontier",
        "route": "POST /v1/chat/completions",
        "allowed": allowed,
        "reasons": reasons,
        "status": 200 if allowed else 403,
        "outcome": "completed" if allowed else "denied",
        "source_ip": "203.0.113.7",
    }
    values.update(fields)
    return Observation(**values)


def admin(n: int, dt: float, action: str, target: str, **fields: Any) -> Observation:
    values: dict[str, Any] = {
        "idx": n,
        "id": f"ev_{n}",
        "name": action,
        "action": action,
        "time": T0 + dt,
        "actor": "bastion:access",
        "target_type": "principal",
        "target": target,
    }
    values.update(fields)
    return Observation(**values)


def run(detector: ContractAndDormancy, observations: list[Observation]) -> list[Draft]:
    return [draft for obs in observations for draft in detector.observe(obs, CTX)]


def test_first_call_after_contract_end_is_high_at_once() -> None:
    detector = ContractAndDormancy()
    (draft,) = detector.observe(call(1, 0, allowed=False, reasons=("outside_contract",)), CTX)
    assert draft.severity is Severity.HIGH
    assert (draft.entity_type, draft.entity, draft.org) == ("principal", "victor", "acme")
    assert draft.evidence == ("ev_1",)
    assert draft.techniques == ("T1078", "T1199")
    assert "outside the contract window of its org" in draft.explanation
    assert "cyber-frontier" in draft.explanation
    assert "203.0.113.7" in draft.explanation


def test_dormant_and_disabled_accounts_are_high() -> None:
    detector = ContractAndDormancy()
    dormant = call(1, 0, allowed=False, reasons=("dormant_principal",), principal="dora", org="")
    (draft,) = detector.observe(dormant, CTX)
    assert draft.severity is Severity.HIGH
    assert draft.org == "lab"  # from the store's principal → org map
    assert "from a dormant account" in draft.explanation
    disabled = call(2, 5, allowed=False, reasons=("principal_disabled",), principal="carol")
    (draft,) = detector.observe(disabled, CTX)
    assert draft.severity is Severity.HIGH
    assert "from a disabled account" in draft.explanation


def test_use_after_a_grant_expired_is_medium() -> None:
    detector = ContractAndDormancy()
    observations = [
        admin(1, 0, "grant.created", "victor"),
        call(2, 60, allowed=True, reasons=("granted",)),
        call(3, 8 * HOUR + 60, allowed=False, reasons=("not_granted",)),
    ]
    (draft,) = run(detector, observations)
    assert draft.severity is Severity.MEDIUM
    assert "after its grant to frontier expired" in draft.explanation
    assert draft.evidence == ("ev_3",)


def test_use_after_a_grant_was_revoked_is_high() -> None:
    detector = ContractAndDormancy()
    observations = [
        admin(1, 0, "grant.created", "victor"),
        call(2, 60, allowed=True, reasons=("granted",)),
        admin(3, 120, "grant.revoked", "victor", actor="principal:alice"),
        call(4, 180, allowed=False, reasons=("not_granted",)),
    ]
    (draft,) = run(detector, observations)
    assert draft.severity is Severity.HIGH
    assert "was revoked" in draft.explanation


def test_a_grant_event_naming_its_compartment_needs_no_prior_use() -> None:
    detector = ContractAndDormancy()
    granted = admin(1, 0, "grant.created", "victor", compartment="frontier")
    (draft,) = run(detector, [granted, call(2, 9 * HOUR, allowed=False, reasons=("not_granted",))])
    assert draft.severity is Severity.MEDIUM
    other = call(3, 9 * HOUR, allowed=False, reasons=("not_granted",), compartment="secrets")
    assert detector.observe(other, CTX) == []  # the grant was to frontier, not secrets


def test_a_grant_revoked_before_a_new_grant_that_expired_is_an_expiry() -> None:
    detector = ContractAndDormancy()
    observations = [
        admin(1, 0, "grant.created", "victor"),
        admin(2, 10, "grant.revoked", "victor"),
        admin(3, 20, "grant.created", "victor"),
        call(4, 30, allowed=True, reasons=("granted",)),
        call(5, 9 * HOUR, allowed=False, reasons=("not_granted",)),
    ]
    (draft,) = run(detector, observations)
    assert draft.severity is Severity.MEDIUM


def test_not_granted_without_a_time_bound_grant_is_quiet() -> None:
    detector = ContractAndDormancy()
    observations = [
        call(1, 0, allowed=True, reasons=("granted",)),  # a standing grant, no grant event
        call(2, 60, allowed=False, reasons=("not_granted",)),
        admin(3, 100, "grant.created", "victor"),
        call(4, 200, allowed=True, reasons=("granted",), compartment="secrets"),
        call(5, 300, allowed=False, reasons=("not_granted",)),  # frontier: not used since
    ]
    assert run(detector, observations) == []


def test_allowed_calls_other_denials_and_events_without_a_principal_are_quiet() -> None:
    detector = ContractAndDormancy()
    observations = [
        call(1, 0, allowed=True, reasons=("granted",)),
        call(2, 1, allowed=False, reasons=("network_not_allowed",)),
        call(3, 2, allowed=False, reasons=("outside_contract",), principal=""),
        admin(4, 3, "grant.created", ""),
        admin(5, 4, "lock.created", "victor"),
        Observation(idx=6, id="ev_6", name="token.refused", time=T0 + 5, error="invalid_grant"),
    ]
    assert run(detector, observations) == []


def test_state_round_trips() -> None:
    detector = ContractAndDormancy()
    run(detector, [admin(1, 0, "grant.created", "victor"), call(2, 60, allowed=True, reasons=())])
    restored = ContractAndDormancy()
    restored.load(orjson.loads(orjson.dumps(detector.dump())))  # as the store keeps it
    assert restored.dump() == detector.dump()
    (draft,) = restored.observe(call(3, 9 * HOUR, allowed=False, reasons=("not_granted",)), CTX)
    assert draft.severity is Severity.MEDIUM


def test_state_is_bounded() -> None:
    detector = ContractAndDormancy()  # the shipped caps
    for n in range(50_000):
        detector.observe(admin(n, n * 0.01, "grant.created", f"p{n}"), CTX)
        detector.observe(call(n, n * 0.01 + 1, allowed=True, reasons=(), principal=f"p{n}"), CTX)
    for book in (detector.granted, detector.used):
        assert len(book) == 20_000
        assert book.stats.evictions == 30_000


def test_a_refused_login_of_a_dormant_account_is_found() -> None:
    from bastion.detect.detectors.d09_contract_and_dormancy import ContractAndDormancy

    detector = ContractAndDormancy()
    refused = Observation(
        idx=1,
        id="ev_1",
        name="token.refused",
        time=1000.0,
        principal="vic",
        error="invalid_grant",
        reason="principal 'vic' is dormant; an admin can enable it again",
    )
    (draft,) = detector.observe(refused, CTX)
    assert draft.entity == "vic"
    assert "dormant" in draft.explanation
    other = Observation(idx=2, id="ev_2", name="token.refused", time=1.0, principal="vic")
    assert detector.observe(other, CTX) == []

"""D5: model enumeration. Fires (high) at the request that makes the third distinct denied model
within 5 min, and (medium) when denials span two compartments; quiet on model listing, on
repeated denials of one model, on slow trial and error, and on denials that are not about
entitlement."""

from __future__ import annotations

from typing import Any

import orjson

from bastion.config.models import BastionConfig
from bastion.detect.detector import Context
from bastion.detect.detectors.d05_enumeration import Enumeration
from bastion.detect.findings import Severity
from bastion.detect.observation import Observation

T0 = 1_700_000_000.0
CTX = Context(
    BastionConfig.model_validate(
        {
            "version": 1,
            "orgs": {"acme": {"kind": "vendor"}},
            "principals": {"victor": {"kind": "user", "org": "acme"}},
        }
    )
)


def denied(
    n: int, dt: float, model: str, compartment: str = "frontier", **fields: Any
) -> Observation:
    values: dict[str, Any] = {
        "idx": n,
        "id": f"ev_{n}",
        "name": "request.decided",
        "time": T0 + dt,
        "principal": "victor",
        "org": "acme",
        "model": model,
        "compartment": compartment,
        "route": "POST /v1/chat/completions",
        "allowed": False,
        "reasons": ("not_granted",),
        "status": 403,
        "outcome": "denied",
        "error": "access_denied",
        "source_ip": "203.0.113.7",
    }
    values.update(fields)
    return Observation(**values)


def unknown_model(n: int, dt: float) -> Observation:
    return denied(n, dt, "", "", reasons=(), status=404, error="model_not_found")


def listing(n: int, dt: float) -> Observation:
    return Observation(
        idx=n,
        id=f"ev_{n}",
        name="request.decided",
        time=T0 + dt,
        principal="victor",
        org="acme",
        route="GET /v1/models",
        allowed=True,
        reasons=("granted",),
        status=200,
        outcome="completed",
    )


def run(detector: Enumeration, observations: list[Observation]) -> list[Any]:
    return [draft for obs in observations for draft in detector.observe(obs, CTX)]


def test_third_distinct_denied_model_is_high_at_that_request() -> None:
    detector = Enumeration()
    assert detector.observe(denied(1, 0, "cyber-a"), CTX) == []
    assert detector.observe(denied(2, 20, "cyber-b"), CTX) == []
    (draft,) = detector.observe(denied(3, 40, "cyber-c", reasons=("above_vendor_ceiling",)), CTX)
    assert draft.severity is Severity.HIGH
    assert (draft.entity_type, draft.entity) == ("principal", "victor")
    assert (draft.principal, draft.org) == ("victor", "acme")
    assert draft.evidence == ("ev_1", "ev_2", "ev_3")
    assert draft.explanation == (
        "principal victor was denied 3 distinct models within 5 min: cyber-a (not_granted), "
        "cyber-b (not_granted), cyber-c (above_vendor_ceiling) (last from 203.0.113.7)"
    )
    assert "T1526" in draft.techniques


def test_denials_across_two_compartments_are_medium() -> None:
    detector = Enumeration()
    assert detector.observe(denied(1, 0, "cyber-a", "frontier"), CTX) == []
    (draft,) = detector.observe(denied(2, 30, "secret-x", "secrets"), CTX)
    assert draft.severity is Severity.MEDIUM
    assert "2 compartments it holds no grant to within 5 min: frontier, secrets" in (
        draft.explanation
    )


def test_unknown_models_count_once_and_the_known_third_fires() -> None:
    detector = Enumeration()
    drafts = run(detector, [unknown_model(1, 0), unknown_model(2, 5), denied(3, 10, "cyber-a")])
    assert drafts == []  # two distinct so far: "an unknown model" and cyber-a
    (draft,) = detector.observe(denied(4, 15, "cyber-b"), CTX)
    assert draft.severity is Severity.HIGH
    assert "an unknown model" in draft.explanation


def test_listing_models_is_not_a_denial() -> None:
    detector = Enumeration()
    assert run(detector, [listing(n, n) for n in range(50)]) == []
    assert run(detector, [denied(100, 60, "cyber-a"), denied(101, 61, "cyber-a")]) == []


def test_two_denials_of_the_same_model_or_a_retry_loop_are_quiet() -> None:
    detector = Enumeration()
    assert run(detector, [denied(n, n * 2.0, "cyber-a") for n in range(30)]) == []


def test_slow_trial_and_error_beyond_five_minutes_is_quiet() -> None:
    detector = Enumeration()
    models = ["cyber-a", "cyber-b", "cyber-c", "cyber-d"]
    assert run(detector, [denied(n, n * 400.0, m) for n, m in enumerate(models)]) == []


def test_other_denials_and_anonymous_calls_do_not_count() -> None:
    detector = Enumeration()
    observations = [
        denied(1, 0, "cyber-a", reasons=("locked_principal",)),
        denied(2, 1, "cyber-b", reasons=("network_not_allowed",)),
        denied(3, 2, "cyber-c", reasons=("outside_working_hours",)),
        denied(4, 3, "cyber-d", principal=""),
        denied(5, 4, "", "", reasons=(), status=404, error="not_found", route="POST /v1/nope"),
        denied(6, 5, "", "", reasons=(), status=404, error="not_found", route="GET /admin"),
    ]
    assert run(detector, observations) == []
    assert run(detector, [denied(7, 6, "cyber-e"), denied(8, 7, "cyber-f")]) == []


def test_findings_repeat_only_for_new_models() -> None:
    detector = Enumeration()
    run(detector, [denied(n, n, f"cyber-{n}") for n in range(3)])
    assert detector.observe(denied(10, 10, "cyber-1"), CTX) == []  # nothing new
    (draft,) = detector.observe(denied(11, 11, "cyber-9"), CTX)
    assert "4 distinct models" in draft.explanation


def test_state_round_trips() -> None:
    detector = Enumeration()
    run(detector, [denied(1, 0, "cyber-a"), denied(2, 10, "cyber-b")])
    restored = Enumeration()
    restored.load(orjson.loads(orjson.dumps(detector.dump())))  # as the store keeps it
    assert restored.dump() == detector.dump()
    (draft,) = restored.observe(denied(3, 20, "cyber-c"), CTX)
    assert draft.severity is Severity.HIGH
    assert draft.evidence == ("ev_1", "ev_2", "ev_3")


def test_state_is_bounded() -> None:
    detector = Enumeration()  # the shipped caps
    for n in range(50_000):
        detector.observe(denied(n, n * 0.01, "cyber-a", principal=f"p{n}"), CTX)
    assert len(detector.denials) == 20_000
    assert detector.denials.stats.evictions == 30_000
    for n in range(100):  # and per principal: at most cap_denials kept
        detector.observe(denied(n, 600 + n, f"m{n}", principal="busy"), CTX)
    assert detector.denials.of("busy").count() <= 64

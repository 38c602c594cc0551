"""D7: distillation or harvesting across accounts of one vendor org. Fires on output volume far
above the org's baseline spread over several accounts (high), on several heavy accounts sharing
a network new to the org or a hosting network (medium, high with two reasons), and on several
accounts sweeping one model with short prompts (high on a critical model); quiet on an org's
normal daily peak from its office, on one batch account, on an org's usual short-prompt
workload, on internal orgs and models, and on an org's first day."""

from __future__ import annotations

from typing import Any

import orjson

from bastion.config.models import BastionConfig
from bastion.detect.detector import Context
from bastion.detect.detectors.d07_distillation import Distillation
from bastion.detect.findings import Draft, Severity
from bastion.detect.observation import Observation, network_of

T0 = 1_699_920_000.0  # a midnight, UTC
HOUR = 3600.0
DAY = 86_400.0
OFFICE = "198.51.100.10"
STAFF = ("a1", "a2", "a3", "a4", "a5")
CTX = Context(
    BastionConfig.model_validate(
        {
            "version": 1,
            "orgs": {"acme": {"kind": "vendor"}, "lab": {"kind": "internal"}},
            "compartments": {
                "general": {"level": "internal"},
                "secrets": {"level": "restricted"},
                "frontier": {"level": "critical"},
            },
        }
    )
)


class Clock:
    def __init__(self) -> None:
        self.n = 0

    def served(self, time: float, principal: str, tokens_out: int, **fields: Any) -> Observation:
        self.n += 1
        ip = fields.pop("ip", OFFICE)
        values: dict[str, Any] = {
            "idx": self.n,
            "id": f"ev_{self.n}",
            "name": "request.decided",
            "time": time,
            "principal": principal,
            "org": "acme",
            "model": "sec-model",
            "compartment": "secrets",
            "allowed": True,
            "reasons": ("granted",),
            "status": 200,
            "outcome": "completed",
            "source_ip": ip,
            "network": network_of(ip),
            "tokens_in": 800,
            "tokens_out": tokens_out,
        }
        values.update(fields)
        return Observation(**values)


def burst(
    detector: Distillation,
    clock: Clock,
    start: float,
    principals: tuple[str, ...],
    per_principal: int,
    calls: int,
    span: float = HOUR,
    **fields: Any,
) -> list[Draft]:
    """Each of ``principals`` takes ``per_principal`` tokens in ``calls`` interleaved calls."""
    drafts = []
    for i in range(calls):
        for k, principal in enumerate(principals):
            time = start + i * span / calls + k
            obs = clock.served(time, principal, per_principal // calls, **fields)
            drafts += detector.observe(obs, CTX)
    return drafts


def office_days(detector: Distillation, clock: Clock, days: range) -> list[Draft]:
    """The org's normal days: five people at the office, 9:00-17:00, a peak at 10 and 11."""
    drafts = []
    for day in days:
        for hour in range(9, 17):
            each = 22_000 if hour in (10, 11) else 8_000
            drafts += burst(detector, clock, T0 + day * DAY + hour * HOUR, STAFF, each, calls=3)
    return drafts


def test_the_org_normal_daily_peak_from_its_office_is_quiet() -> None:
    detector, clock = Distillation(), Clock()
    assert office_days(detector, clock, range(5)) == []


def test_volume_far_above_the_org_baseline_spread_over_accounts_is_high() -> None:
    detector, clock = Distillation(), Clock()
    office_days(detector, clock, range(3))
    start = T0 + 3 * DAY + 14 * HOUR
    drafts = burst(detector, clock, start, STAFF[:4], 80_000, calls=40)
    draft = drafts[0]
    assert draft.severity is Severity.HIGH
    assert (draft.entity_type, draft.entity, draft.org, draft.principal) == (
        "org",
        "acme",
        "acme",
        "",
    )
    assert draft.explanation.startswith("vendor org acme: ")
    assert "spread over 4 accounts" in draft.explanation
    assert "principals a1, a2, a3, a4" in draft.explanation
    assert "AML.T0024.002" in draft.techniques
    assert len(drafts) == 1  # once per hour


def test_heavy_accounts_on_a_network_new_to_the_org_are_medium() -> None:
    detector, clock = Distillation(), Clock()
    office_days(detector, clock, range(3))
    start = T0 + 3 * DAY + 14 * HOUR
    (draft,) = burst(detector, clock, start, STAFF[:3], 25_000, calls=10, ip="203.0.113.40")
    assert draft.severity is Severity.MEDIUM
    assert "3 accounts each took at least 20,000 output tokens" in draft.explanation
    assert "one network 203.0.113.0/24" in draft.explanation
    assert "first seen for the org" in draft.explanation


def test_heavy_accounts_on_a_new_hosting_network_are_high() -> None:
    detector, clock = Distillation(), Clock()
    office_days(detector, clock, range(3))
    start = T0 + 3 * DAY + 14 * HOUR
    drafts = burst(
        detector, clock, start, STAFF[:3], 25_000, calls=10, ip="203.0.113.40", origin="hosting"
    )
    (draft,) = drafts
    assert draft.severity is Severity.HIGH
    assert "a hosting network" in draft.explanation


def test_several_accounts_sweeping_a_critical_model_with_short_prompts_are_high() -> None:
    detector, clock = Distillation(), Clock()
    office_days(detector, clock, range(3))
    start = T0 + 3 * DAY + 14 * HOUR
    fields = {"model": "cyber-frontier", "compartment": "frontier", "tokens_in": 50}
    (draft,) = burst(detector, clock, start, STAFF[:3], 120 * 150, calls=120, **fields)
    assert draft.severity is Severity.HIGH
    assert "3 accounts each sent at least 100 short prompts" in draft.explanation
    assert "to cyber-frontier" in draft.explanation
    assert "a model new to the org" in draft.explanation


def test_calls_whose_input_size_is_unknown_are_not_short_prompts() -> None:
    detector, clock = Distillation(), Clock()
    office_days(detector, clock, range(3))
    start = T0 + 3 * DAY + 14 * HOUR
    fields = {"model": "cyber-frontier", "compartment": "frontier", "tokens_in": 0}
    assert burst(detector, clock, start, STAFF[:3], 120 * 150, calls=120, **fields) == []


def test_a_sweep_of_a_restricted_model_is_medium() -> None:
    detector, clock = Distillation(), Clock()
    office_days(detector, clock, range(3))
    start = T0 + 3 * DAY + 14 * HOUR
    fields = {"model": "sec-mini", "tokens_in": 40}
    (draft,) = burst(detector, clock, start, STAFF[2:], 110 * 100, calls=110, **fields)
    assert draft.severity is Severity.MEDIUM


def test_one_batch_account_with_many_short_prompts_is_quiet() -> None:
    detector, clock = Distillation(), Clock()
    office_days(detector, clock, range(3))
    start = T0 + 3 * DAY + 14 * HOUR
    fields = {"model": "sec-mini", "tokens_in": 40}
    assert burst(detector, clock, start, ("etl",), 2000 * 20, calls=2000, **fields) == []


def test_the_org_usual_short_prompt_workload_is_quiet() -> None:
    detector, clock = Distillation(), Clock()
    services = ("s1", "s2", "s3")
    fields = {"model": "sec-mini", "tokens_in": 40}
    drafts = []
    for day in range(4):
        for hour in range(9, 17):
            start = T0 + day * DAY + hour * HOUR
            drafts += burst(detector, clock, start, services, 150 * 150, calls=150, **fields)
    assert drafts == []


def test_internal_orgs_and_models_below_restricted_are_not_counted() -> None:
    detector, clock = Distillation(), Clock()
    office_days(detector, clock, range(3))
    start = T0 + 3 * DAY + 14 * HOUR
    assert burst(detector, clock, start, STAFF[:4], 90_000, calls=20, compartment="general") == []
    lab = ("l1", "l2", "l3", "l4")
    assert burst(detector, clock, start, lab, 90_000, calls=20, org="lab") == []
    denied = {"allowed": False, "ip": "203.0.113.40"}
    assert burst(detector, clock, start, STAFF[:3], 90_000, calls=20, **denied) == []


def test_an_org_first_day_is_quiet_whatever_it_does() -> None:
    detector, clock = Distillation(), Clock()
    start = T0 + 9 * HOUR
    assert burst(detector, clock, start, STAFF, 80_000, calls=20, ip="203.0.113.40") == []
    sweep = {"model": "cyber-frontier", "compartment": "frontier", "tokens_in": 50}
    assert burst(detector, clock, start + HOUR, STAFF, 150 * 100, calls=150, **sweep) == []


def test_state_round_trips() -> None:
    detector, clock = Distillation(), Clock()
    office_days(detector, clock, range(3))
    restored = Distillation()
    restored.load(orjson.loads(orjson.dumps(detector.dump())))  # as the store keeps it
    assert restored.dump() == detector.dump()
    start = T0 + 3 * DAY + 14 * HOUR
    for copy in (detector, restored):
        drafts = burst(copy, Clock(), start, STAFF[:3], 25_000, calls=10, ip="203.0.113.40")
        assert [d.severity for d in drafts] == [Severity.MEDIUM]


def test_state_is_bounded() -> None:
    detector, clock = Distillation(), Clock()  # the shipped caps
    for n in range(50_000):
        obs = clock.served(T0 + n * 0.01, f"p{n}", 100, tokens_in=10)
        detector.observe(obs, CTX)
    for table in (detector.principals, detector.sweeps):
        assert len(table) == 20_000
        assert table.stats.evictions == 30_000
    assert len(detector.members.since("acme", 0.0)) == 64
    assert len(detector.on_network.since(f"acme {network_of(OFFICE)}", 0.0)) == 32

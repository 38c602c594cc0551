"""D6: output volume. Fires when a principal's hour is far above its own baseline (medium, high
at twice the thresholds) and when one compartment gives a principal more than its level's
ceiling (high, even on a first day); quiet on a new hire's first day, on a batch service that
is steadily high, on denied calls, and once per hour."""

from __future__ import annotations

from typing import Any

import orjson

from bastion.config.models import BastionConfig
from bastion.detect.detector import Context
from bastion.detect.detectors.d06_output_volume import OutputVolume
from bastion.detect.detectors.volume import HourlyVolume, Volumes
from bastion.detect.findings import Draft, Severity
from bastion.detect.observation import Observation

T0 = 1_699_920_000.0  # a midnight, UTC
HOUR = 3600.0
DAY = 86_400.0
CTX = Context(
    BastionConfig.model_validate(
        {
            "version": 1,
            "orgs": {"lab": {"kind": "internal"}},
            "principals": {"alice": {"kind": "user", "org": "lab"}},
            "compartments": {
                "general": {"level": "internal"},
                "secrets": {"level": "restricted"},
                "frontier": {"level": "critical"},
                "bulk": {
                    "level": "critical",
                    "quotas": {"principal": {"tokens_per_hour": 500_000}},
                },
            },
        }
    )
)


class Clock:
    """Event ids and times for one test."""

    def __init__(self) -> None:
        self.n = 0

    def served(self, time: float, tokens_out: int, **fields: Any) -> Observation:
        self.n += 1
        values: dict[str, Any] = {
            "idx": self.n,
            "id": f"ev_{self.n}",
            "name": "request.decided",
            "time": time,
            "principal": "alice",
            "org": "lab",
            "model": "chat",
            "compartment": "general",
            "allowed": True,
            "reasons": ("granted",),
            "status": 200,
            "outcome": "completed",
            "tokens_in": 500,
            "tokens_out": tokens_out,
        }
        values.update(fields)
        return Observation(**values)


def hour_of_use(
    detector: OutputVolume, clock: Clock, start: float, total: int, calls: int = 10, **fields: Any
) -> list[Draft]:
    """``total`` output tokens in ``calls`` calls spread over the hour starting at ``start``."""
    step = HOUR / calls
    return [
        draft
        for i in range(calls)
        for draft in detector.observe(clock.served(start + i * step, total // calls, **fields), CTX)
    ]


def working_days(
    detector: OutputVolume, clock: Clock, days: int, per_hour: int = 10_000, **fields: Any
) -> list[Draft]:
    """``days`` days of 9:00-17:00 use, a little different each hour."""
    drafts = []
    for day in range(days):
        for hour in range(9, 17):
            total = per_hour + (hour % 4) * per_hour // 10
            start = T0 + day * DAY + hour * HOUR
            drafts += hour_of_use(detector, clock, start, total, **fields)
    return drafts


def test_an_hour_far_above_the_baseline_fires_at_the_crossing_calls() -> None:
    detector, clock = OutputVolume(), Clock()
    assert working_days(detector, clock, 3) == []
    start = T0 + 3 * DAY + 10 * HOUR
    medium, draft = hour_of_use(detector, clock, start, 200_000, calls=20)
    assert medium.severity is Severity.MEDIUM  # at 50,000: the minimum, far above baseline
    assert medium.evidence == (f"ev_{clock.n - 15}",)
    assert draft.severity is Severity.HIGH  # at 100,000: twice both thresholds
    assert (draft.entity_type, draft.entity, draft.principal, draft.org) == (
        "principal",
        "alice",
        "alice",
        "lab",
    )
    assert draft.evidence == (f"ev_{clock.n - 10}",)  # the 10th call: 100,000 tokens
    assert "received 100,000 output tokens in the last hour" in draft.explanation
    assert "baseline of 11," in draft.explanation
    assert "AML.T0024.002" in draft.techniques


def test_a_smaller_excess_is_medium_and_a_worse_one_in_the_same_hour_escalates() -> None:
    detector, clock = OutputVolume(), Clock()
    working_days(detector, clock, 3)
    start = T0 + 3 * DAY + 10 * HOUR
    (draft,) = hour_of_use(detector, clock, start, 60_000, calls=6)
    assert draft.severity is Severity.MEDIUM
    assert hour_of_use(detector, clock, start + 1800, 30_000, calls=3) == []  # still medium
    (draft,) = hour_of_use(detector, clock, start + 2400, 60_000, calls=3)
    assert draft.severity is Severity.HIGH


def test_a_flagged_hour_does_not_teach_the_baseline_to_accept_the_next() -> None:
    detector, clock = OutputVolume(), Clock()
    working_days(detector, clock, 3)
    for day in (3, 4, 5):
        start = T0 + day * DAY + 10 * HOUR
        drafts = hour_of_use(detector, clock, start, 200_000, calls=20)
        assert [d.severity for d in drafts] == [Severity.MEDIUM, Severity.HIGH], day


def test_more_than_the_critical_ceiling_is_high_even_on_a_first_day() -> None:
    detector, clock = OutputVolume(), Clock()
    start = T0 + 10 * HOUR
    drafts = hour_of_use(detector, clock, start, 250_000, calls=25, compartment="frontier")
    (draft,) = drafts
    assert draft.severity is Severity.HIGH
    assert draft.evidence == (f"ev_{clock.n - 4}",)  # the 21st call: 210,000 > 200,000
    assert "from critical compartment frontier" in draft.explanation
    assert "above its ceiling of 200,000 per principal" in draft.explanation


def test_a_larger_quota_raises_the_ceiling_and_restricted_has_its_own() -> None:
    detector, clock = OutputVolume(), Clock()
    start = T0 + 10 * HOUR
    assert hour_of_use(detector, clock, start, 400_000, compartment="bulk") == []
    assert hour_of_use(detector, clock, start, 900_000, compartment="secrets") == []
    (draft,) = hour_of_use(detector, clock, start + HOUR, 1_100_000, compartment="secrets")
    assert "restricted compartment secrets" in draft.explanation


def test_a_new_hire_first_day_of_normal_use_is_quiet() -> None:
    detector, clock = OutputVolume(), Clock()
    start = T0 + 9 * HOUR
    drafts = hour_of_use(detector, clock, start, 5_000)  # onboarding: a little
    for hour in range(1, 8):  # then real work, one hour heavy: no baseline to judge it by yet
        total = 90_000 if hour == 5 else 30_000
        drafts += hour_of_use(detector, clock, start + hour * HOUR, total, compartment="frontier")
    assert drafts == []


def test_a_batch_service_steadily_high_is_quiet() -> None:
    detector, clock = OutputVolume(), Clock()
    drafts = []
    for hour in range(24 * 5):  # day and night, ~600k an hour on a restricted model
        total = 600_000 + (hour % 5) * 20_000
        start = T0 + hour * HOUR
        drafts += hour_of_use(
            detector, clock, start, total, calls=30, principal="etl", compartment="secrets"
        )
    assert drafts == []


def test_a_batch_service_over_the_critical_ceiling_is_judged_on_its_baseline_once_established() -> (
    None
):
    detector, clock = OutputVolume(), Clock()
    by_day: dict[int, list[Draft]] = {0: [], 1: [], 2: [], 3: []}
    for hour in range(24 * 4):
        start = T0 + hour * HOUR
        drafts = hour_of_use(
            detector, clock, start, 300_000, calls=30, principal="etl", compartment="frontier"
        )
        by_day[hour // 24] += drafts
    assert by_day[0]  # its first day: over the ceiling with no history — worth a look
    assert by_day[2] == by_day[3] == []  # established at this level: quiet
    start = T0 + 4 * DAY
    drafts = hour_of_use(
        detector, clock, start, 1_500_000, calls=30, principal="etl", compartment="frontier"
    )
    assert [d.severity for d in drafts] == [Severity.MEDIUM, Severity.HIGH]
    assert "against a baseline of 300,000 per active hour" in drafts[0].explanation


def test_denied_calls_and_calls_without_output_are_not_counted() -> None:
    detector, clock = OutputVolume(), Clock()
    start = T0 + 10 * HOUR
    denied = [
        clock.served(start + i, 50_000, allowed=False, compartment="frontier") for i in range(10)
    ]
    empty = [clock.served(start + i, 0, compartment="frontier") for i in range(10)]
    anonymous = [clock.served(start, 50_000, principal="", compartment="frontier")]
    assert [d for obs in denied + empty + anonymous for d in detector.observe(obs, CTX)] == []
    assert len(detector.principals) == 0


def test_state_round_trips() -> None:
    detector, clock = OutputVolume(), Clock()
    working_days(detector, clock, 3)
    hour_of_use(detector, clock, T0 + 3 * DAY, 150_000, compartment="frontier")
    restored = OutputVolume()
    restored.load(orjson.loads(orjson.dumps(detector.dump())))  # as the store keeps it
    assert restored.dump() == detector.dump()
    for copy in (detector, restored):
        start = T0 + 3 * DAY + 10 * HOUR
        drafts = hour_of_use(copy, Clock(), start, 200_000, calls=20)
        assert [d.severity for d in drafts] == [Severity.MEDIUM, Severity.HIGH]


def test_malformed_records_are_skipped_on_load() -> None:
    volumes = Volumes(10, 7 * DAY, 6)
    good = HourlyVolume(T0, 7 * DAY, 6)
    good.add(T0, 10.0, 4.0)
    volumes.load({"ok": good.dump(), "short": [1.0, 2.0], "text": "x", "bools": [True] * 23})
    assert len(volumes) == 1
    assert volumes.skipped == 3
    assert volumes.dump()["ok"] == good.dump()


def test_state_is_bounded() -> None:
    detector, clock = OutputVolume(), Clock()  # the shipped caps
    for n in range(50_000):
        obs = clock.served(T0 + n * 0.01, 100, principal=f"p{n}", compartment="frontier")
        detector.observe(obs, CTX)
    for table in (detector.principals, detector.compartments):
        assert len(table) == 20_000
        assert table.stats.evictions == 30_000

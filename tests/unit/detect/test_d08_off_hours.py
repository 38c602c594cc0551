"""D8 unusual hours: a use at an hour this principal never works, after a baseline, is LOW
and never more; quiet on on-call hours seen before, the hour next to usual ones, new hires and
denials; hours are counted in the org's working-hours time zone."""

from __future__ import annotations

import json
import secrets
from dataclasses import replace

import pytest

from bastion.config.models import BastionConfig
from bastion.detect.detector import Context
from bastion.detect.detectors.d08_off_hours import OffHours
from bastion.detect.findings import Finding, Severity
from bastion.detect.observation import Observation

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z (a Thursday)
DAY, HOUR = 86_400.0, 3600.0
CTX = Context(
    BastionConfig.model_validate(
        {
            "version": 1,
            "orgs": {
                "lab": {"kind": "internal"},
                "acme": {
                    "kind": "vendor",
                    "working_hours": {"timezone": "America/New_York"},
                },
            },
            "principals": {
                "alice": {"kind": "user", "org": "lab"},
                "victor": {"kind": "user", "org": "acme"},
            },
        }
    )
)


def d08_use(time: float, principal: str = "alice", **fields: object) -> Observation:
    values: dict[str, object] = {"name": "request.decided", "allowed": True}
    values.update(fields)
    return Observation(
        idx=-1,
        id="ev_" + secrets.token_hex(6),
        time=time,
        principal=principal,
        **values,  # type: ignore[arg-type]
    )


def d08_office_days(detector: OffHours, principal: str = "alice", days: int = 3) -> None:
    """``days`` of work from 09:00 to 16:59 UTC, 24 uses a day."""
    for day in range(days):
        for n in range(24):
            obs = d08_use(T0 + day * DAY + 9 * HOUR + n * 1200, principal)
            assert detector.observe(obs, CTX) == []


def test_a_session_at_three_am_for_an_office_worker_is_low() -> None:
    detector = OffHours(standalone=True)
    d08_office_days(detector)
    night = T0 + 3 * DAY + 3 * HOUR
    assert detector.observe(d08_use(night), CTX) == []
    assert detector.observe(d08_use(night + 300), CTX) == []
    obs = d08_use(night + 600)
    [draft] = detector.observe(obs, CTX)  # the third use within the hour
    assert draft.detection == "D8"
    assert (draft.severity, draft.confidence) == (Severity.LOW, 0.3)
    assert (draft.entity_type, draft.entity, draft.principal, draft.org) == (
        "principal",
        "alice",
        "alice",
        "lab",
    )
    assert draft.evidence == (obs.id,)
    assert "made 3 uses within 10 min from 03:00 UTC" in draft.explanation
    assert "72 earlier uses" in draft.explanation
    assert "09:00" in draft.explanation  # the usual hours, for the reader
    assert detector.observe(d08_use(night + 900), CTX) != []  # the session goes on: merged
    # once the session is over, 3 am is a known hour for alice
    assert detector.observe(d08_use(night + DAY), CTX) == []


def test_a_one_off_page_is_quiet_unless_tuned_to_flag_every_request() -> None:
    detector = OffHours(standalone=True)
    d08_office_days(detector)
    for minute in (0, 5):  # two requests answering a page
        assert detector.observe(d08_use(T0 + 3 * DAY + 3 * HOUR + minute * 60), CTX) == []
    strict = OffHours(min_uses=1, standalone=True)
    d08_office_days(strict)
    [draft] = strict.observe(d08_use(T0 + 3 * DAY + 3 * HOUR), CTX)
    assert "made 1 use within 0 min" in draft.explanation


def test_it_is_never_more_than_low() -> None:
    detector = OffHours(min_uses=1, standalone=True)
    d08_office_days(detector)
    drafts = [
        draft
        for hour in range(0, 24, 3)
        for draft in detector.observe(d08_use(T0 + 4 * DAY + hour * HOUR), CTX)
    ]
    assert drafts
    assert {draft.severity for draft in drafts} == {Severity.LOW}


def test_on_call_at_three_am_seen_before_is_quiet() -> None:
    detector = OffHours(standalone=True)
    detector.observe(d08_use(T0 + 3 * HOUR), CTX)  # paged once, the first night
    d08_office_days(detector)
    assert detector.observe(d08_use(T0 + 5 * DAY + 3 * HOUR + 600), CTX) == []


def test_an_hour_next_to_usual_ones_is_quiet() -> None:
    detector = OffHours(standalone=True)
    d08_office_days(detector)
    assert detector.observe(d08_use(T0 + 3 * DAY + 17 * HOUR + 1800), CTX) == []  # 17:30
    assert detector.observe(d08_use(T0 + 3 * DAY + 8 * HOUR + 1800), CTX) == []  # 08:30


def test_a_new_hire_is_not_judged_before_a_baseline() -> None:
    detector = OffHours(standalone=True)
    d08_office_days(detector, "newbie", days=1)
    assert detector.observe(d08_use(T0 + DAY + 3 * HOUR, "newbie"), CTX) == []  # too soon
    sparse = OffHours(standalone=True)
    for day in range(10):  # ten days but only 30 uses: not enough
        for n in range(3):
            sparse.observe(d08_use(T0 + day * DAY + (10 + n) * HOUR, "rare"), CTX)
    assert sparse.observe(d08_use(T0 + 11 * DAY + 3 * HOUR, "rare"), CTX) == []


def test_denials_are_not_uses() -> None:
    detector = OffHours(min_uses=1, standalone=True)
    d08_office_days(detector)
    assert detector.observe(d08_use(T0 + 3 * DAY + 3 * HOUR, allowed=False), CTX) == []
    assert detector.observe(d08_use(T0 + 3 * DAY + 3 * HOUR, name="token.refused"), CTX) == []
    assert detector.observe(d08_use(T0 + 3 * DAY + 3 * HOUR + 60), CTX) != []


def test_hours_are_counted_in_the_orgs_time_zone() -> None:
    detector = OffHours(min_uses=1, standalone=True)
    # victor works 09:00-17:00 in New York: 14:00-22:00 UTC in winter
    for day in range(3):
        for n in range(24):
            detector.observe(d08_use(T0 + day * DAY + 14 * HOUR + n * 1200, "victor"), CTX)
    # 06:00 UTC is 01:00 in New York: unusual; 13:30 UTC is 08:30 there: next to usual
    [draft] = detector.observe(d08_use(T0 + 3 * DAY + 6 * HOUR, "victor"), CTX)
    assert "from 01:00 America/New_York" in draft.explanation
    assert draft.org == "acme"
    assert detector.observe(d08_use(T0 + 3 * DAY + 13.5 * HOUR, "victor"), CTX) == []


def test_the_histogram_decays() -> None:
    detector = OffHours(decay_at=100, min_uses=1, standalone=True)
    detector.observe(d08_use(T0 + 3 * HOUR), CTX)  # one night long ago
    d08_office_days(detector, days=5)  # 120 uses: halved once
    record = detector.hours.get("alice")
    assert record is not None
    assert record[3] == 0.0
    assert detector.observe(d08_use(T0 + 6 * DAY + 3 * HOUR), CTX) != []


def test_state_round_trips_through_json() -> None:
    detector = OffHours(min_uses=2, standalone=True)
    d08_office_days(detector)
    detector.observe(d08_use(T0 + 3 * DAY + 3 * HOUR), CTX)  # an open episode, saved too
    copy = OffHours(min_uses=2, standalone=True)
    copy.load(json.loads(json.dumps(detector.dump())))
    assert copy.dump() == detector.dump()
    assert copy.observe(d08_use(T0 + 3 * DAY + 3 * HOUR + 60), CTX) != []


def test_state_stays_bounded_for_50000_principals() -> None:
    detector = OffHours(cap_principals=20_000, standalone=True)
    for n in range(50_000):
        detector.observe(d08_use(T0 + n, f"p{n}"), CTX)
    assert len(detector.hours) == 20_000
    assert detector.hours.stats.evictions == 30_000


def test_saved_state_of_another_shape_is_refused() -> None:
    detector = OffHours(standalone=True)
    with pytest.raises(ValueError, match="unknown shape"):
        detector.load({"hours": {"alice": [0.0] * 26}})  # an older layout
    assert len(detector.hours) == 0


def test_by_default_it_only_amplifies_another_finding_in_the_episode() -> None:
    detector = OffHours()
    d08_office_days(detector)
    night = T0 + 3 * DAY + 3 * HOUR
    assert all(detector.observe(d08_use(night + n * 60), CTX) == [] for n in range(5))
    other = Finding(
        id="fd_1",
        detection="D6",
        severity=Severity.HIGH,
        confidence=0.9,
        techniques=(),
        entity_type="principal",
        entity="alice",
        principal="alice",
        org="lab",
        explanation="output volume",
        evidence=("ev_x",),
        first_seen=night + 300,
        last_seen=night + 300,
    )
    (draft,) = detector.on_finding(other, CTX)
    assert draft.severity is Severity.LOW
    assert "D6" in draft.explanation
    assert "03:00" in draft.explanation
    assert detector.on_finding(replace(other, principal="bob", entity="bob"), CTX) == []
    assert detector.on_finding(replace(other, detection="D12"), CTX) == []

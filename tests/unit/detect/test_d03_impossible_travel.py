"""D3 impossible travel: two countries too far apart for the time between successive uses;
quiet on flights, neighbouring countries, missing country data and denials."""

from __future__ import annotations

import json
import secrets

import pytest

from bastion.config.models import BastionConfig
from bastion.detect.detector import Context
from bastion.detect.detectors.d03_impossible_travel import ImpossibleTravel, distance_km
from bastion.detect.findings import Severity
from bastion.detect.observation import Observation

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
HOUR = 3600.0
CTX = Context(
    BastionConfig.model_validate(
        {
            "version": 1,
            "orgs": {"acme": {"kind": "vendor"}},
            "principals": {"victor": {"kind": "user", "org": "acme"}},
        }
    )
)


def d03_use(time: float, country: str, principal: str = "victor", **fields: object) -> Observation:
    values: dict[str, object] = {"name": "request.decided", "allowed": True, "family": "fam_a"}
    values.update(fields)
    return Observation(
        idx=-1,
        id="ev_" + secrets.token_hex(6),
        time=time,
        principal=principal,
        country=country,
        **values,  # type: ignore[arg-type]
    )


def test_germany_then_the_us_within_half_an_hour_is_medium() -> None:
    detector = ImpossibleTravel()
    first = d03_use(T0, "DE", family="fam_a")
    assert detector.observe(first, CTX) == []
    second = d03_use(T0 + 0.5 * HOUR, "US", family="fam_b")
    [draft] = detector.observe(second, CTX)
    assert draft.detection == "D3"
    assert draft.severity is Severity.MEDIUM
    assert (draft.entity_type, draft.entity, draft.principal) == ("principal", "victor", "victor")
    assert draft.org == "acme"  # from the context: the event carried none
    assert draft.evidence == (first.id, second.id)
    assert draft.techniques == ("T1078",)
    for evidence in ("victor", "DE then US", "30 min", "km/h"):
        assert evidence in draft.explanation


def test_one_token_family_in_two_far_countries_is_high() -> None:
    detector = ImpossibleTravel()
    detector.observe(d03_use(T0, "GB", name="token.issued"), CTX)
    [draft] = detector.observe(d03_use(T0 + 120, "SG"), CTX)
    assert draft.severity is Severity.HIGH
    assert "token family fam_a" in draft.explanation


@pytest.mark.parametrize(("origin", "destination"), [("DE", "US"), ("US", "JP"), ("GB", "IN")])
def test_a_flight_ten_hours_later_is_quiet(origin: str, destination: str) -> None:
    detector = ImpossibleTravel()
    detector.observe(d03_use(T0, origin), CTX)
    assert detector.observe(d03_use(T0 + 10 * HOUR, destination), CTX) == []


def test_neighbouring_countries_minutes_apart_are_quiet() -> None:
    detector = ImpossibleTravel()
    detector.observe(d03_use(T0, "DE"), CTX)
    assert detector.observe(d03_use(T0 + 300, "NL"), CTX) == []  # a VPN exit next door
    assert detector.observe(d03_use(T0 + 600, "BE"), CTX) == []


def test_without_country_data_it_stays_silent() -> None:
    detector = ImpossibleTravel()
    detector.observe(d03_use(T0, "DE"), CTX)
    assert detector.observe(d03_use(T0 + 60, ""), CTX) == []  # no IP database answer
    assert detector.observe(d03_use(T0 + 120, "ZZ"), CTX) == []  # not in the table
    assert detector.observe(d03_use(T0 + 180, "DE"), CTX) == []


def test_denials_are_not_uses() -> None:
    detector = ImpossibleTravel()
    detector.observe(d03_use(T0, "DE"), CTX)
    assert detector.observe(d03_use(T0 + 60, "US", allowed=False), CTX) == []
    assert detector.observe(d03_use(T0 + 60, "US", name="token.refused"), CTX) == []
    assert detector.observe(d03_use(T0 + 120, "DE"), CTX) == []


def test_a_late_event_is_judged_but_keeps_the_newest_position() -> None:
    detector = ImpossibleTravel()
    detector.observe(d03_use(T0, "DE"), CTX)
    [late] = detector.observe(d03_use(T0 - 600, "AU"), CTX)
    assert "10 min" in late.explanation
    assert detector.observe(d03_use(T0 + 60, "DE"), CTX) == []  # compared with DE, not AU


def test_distances_err_on_the_short_side() -> None:
    assert distance_km("DE", "NL") == 0.0
    far = distance_km("DE", "US")
    assert far is not None
    assert 4_000 < far < 8_000
    assert distance_km("DE", "XX") is None


def test_thresholds_are_tunable() -> None:
    detector = ImpossibleTravel(max_speed_kmh=5000.0)
    detector.observe(d03_use(T0, "DE"), CTX)
    assert detector.observe(d03_use(T0 + 2 * HOUR, "US"), CTX) == []  # ~2,750 km/h


def test_state_round_trips_through_json() -> None:
    detector = ImpossibleTravel()
    detector.observe(d03_use(T0, "DE"), CTX)
    copy = ImpossibleTravel()
    copy.load(json.loads(json.dumps(detector.dump())))
    assert copy.dump() == detector.dump()
    assert copy.observe(d03_use(T0 + 60, "US"), CTX) != []


def test_state_stays_bounded_for_50000_principals() -> None:
    detector = ImpossibleTravel(cap_principals=20_000)
    for n in range(50_000):
        detector.observe(d03_use(T0 + n, "DE", f"p{n}"), CTX)
    assert len(detector.last) == 20_000
    assert detector.last.stats.evictions == 30_000


def test_saved_state_of_another_shape_is_refused() -> None:
    detector = ImpossibleTravel()
    with pytest.raises(ValueError, match="unknown shape"):
        detector.load({"last": {"victor": [T0, "DE", 3, "fam"]}})
    assert len(detector.last) == 0

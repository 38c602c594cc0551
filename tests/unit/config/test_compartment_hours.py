"""A compartment's allowed hours in bastion.yaml: the shape of an org's working hours, and every
mistake a named error at its line."""

from __future__ import annotations

import pytest

from bastion.config import parse_config
from bastion.config.vendor import Day
from bastion.errors import ConfigError

BASE = """\
version: 1
compartments:
  general:
    level: internal
    allowed_hours:
      timezone: Europe/Paris
      days: [mon, tue, wed]
      start: "07:30"
      end: "19:00"
  open-all-day:
    level: open
orgs:
  lab: {kind: internal}
"""
HOURS = """\
    allowed_hours:
      timezone: Europe/Paris
      days: [mon, tue, wed]
      start: "07:30"
      end: "19:00"
"""


def problems(text: str) -> list[str]:
    assert text != BASE
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return caught.value.problems


def test_allowed_hours_parse() -> None:
    hours = parse_config(BASE).compartments["general"].allowed_hours
    assert hours is not None
    assert (hours.timezone, hours.days, hours.start, hours.end) == (
        "Europe/Paris",
        (Day.MON, Day.TUE, Day.WED),
        "07:30",
        "19:00",
    )


def test_a_compartment_without_allowed_hours_has_none() -> None:
    assert parse_config(BASE).compartments["open-all-day"].allowed_hours is None


def test_only_the_time_zone_is_required() -> None:
    text = BASE.replace(HOURS, "    allowed_hours: {timezone: UTC}\n")
    hours = parse_config(text).compartments["general"].allowed_hours
    assert hours is not None
    assert (hours.days, hours.start, hours.end) == (
        (Day.MON, Day.TUE, Day.WED, Day.THU, Day.FRI),
        "08:00",
        "18:00",
    )


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "timezone: Europe/Paris",
            "timezone: Mars/Base",
            "bastion.yaml:6: compartments.general.allowed_hours.timezone: unknown time zone "
            "'Mars/Base' (use an IANA name: Europe/Paris)",
        ),
        (
            '"19:00"',
            '"25:00"',
            "bastion.yaml:9: compartments.general.allowed_hours.end: must be a time HH:MM "
            "between 00:00 and 24:00 (got '25:00')",
        ),
        (
            '"07:30"',
            '"7:30"',
            "bastion.yaml:8: compartments.general.allowed_hours.start: must be a time HH:MM "
            "between 00:00 and 24:00 (got '7:30')",
        ),
        (
            '"19:00"',
            '"07:00"',
            "bastion.yaml:5: compartments.general.allowed_hours: hours end must be after their "
            "start (same day)",
        ),
        (
            '"19:00"',
            '"07:30"',
            "bastion.yaml:5: compartments.general.allowed_hours: hours end must be after their "
            "start (same day)",
        ),
        (
            "[mon, tue, wed]",
            "[mon, funday]",
            "bastion.yaml:7: compartments.general.allowed_hours.days[1]: must be one of mon, tue, "
            "wed, thu, fri, sat, sun (got 'funday')",
        ),
        (
            "[mon, tue, wed]",
            "[]",
            "bastion.yaml:7: compartments.general.allowed_hours.days: must list at least one day",
        ),
        (
            "      timezone: Europe/Paris\n",
            "",
            "bastion.yaml:5: compartments.general.allowed_hours.timezone: missing required key",
        ),
        (
            "      timezone: Europe/Paris\n",
            "      timezone: Europe/Paris\n      tz: UTC\n",
            "bastion.yaml:7: compartments.general.allowed_hours.tz: unknown key (expected one "
            "of: timezone, days, start, end)",
        ),
        (
            HOURS,
            "    allowed_hours: always\n",
            "bastion.yaml:5: compartments.general.allowed_hours: must be a mapping with keys "
            "timezone, days, start, end (got 'always')",
        ),
        (
            '"07:30"',
            "730",
            "bastion.yaml:8: compartments.general.allowed_hours.start: must be a string (got 730)",
        ),
        (
            "    allowed_hours:\n",
            "    allowed_hour:\n",
            "bastion.yaml:5: compartments.general.allowed_hour: unknown key; did you mean "
            "'allowed_hours'?",
        ),
    ],
)
def test_allowed_hours_mistakes_are_named(old: str, new: str, expected: str) -> None:
    assert problems(BASE.replace(old, new, 1)) == [expected]


def test_a_vendor_org_cannot_list_no_working_days_either() -> None:
    text = BASE + "  acme:\n    kind: vendor\n    working_hours: {timezone: UTC, days: []}\n"
    assert problems(text) == [
        "bastion.yaml:16: orgs.acme.working_hours.days: must list at least one day"
    ]

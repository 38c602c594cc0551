"""``max_mfa_age_minutes``: a compartment's step-up requirement, validated like every setting."""

from __future__ import annotations

import pytest

from bastion.config import parse_config
from bastion.config.models import MAX_MFA_AGE_MINUTES, Compartment, Level
from bastion.errors import ConfigError

BASE = """\
version: 1
upstreams:
  local: {base_url: "http://127.0.0.1:8081/v1", api: openai}
orgs:
  lab: {kind: internal}
models:
  - {name: demo, upstream: local, compartment: general}
compartments:
  general:
    level: internal
"""


def test_no_setting_means_no_mfa_requirement() -> None:
    assert parse_config(BASE).compartments["general"].max_mfa_age_minutes is None


@pytest.mark.parametrize("minutes", [1, 15, MAX_MFA_AGE_MINUTES])
def test_positive_whole_minutes_up_to_a_day_are_accepted(minutes: int) -> None:
    config = parse_config(BASE + f"    max_mfa_age_minutes: {minutes}\n")
    assert config.compartments["general"].max_mfa_age_minutes == minutes


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", "must be at least 1 (got 0)"),
        ("-5", "must be at least 1 (got -5)"),
        (str(MAX_MFA_AGE_MINUTES + 1), f"must be at most {MAX_MFA_AGE_MINUTES}"),
        ("'15'", "must be a whole number"),
        ("15.5", "must be a whole number"),
        ("true", "must be a whole number"),
        ("[15]", "must be a whole number"),
    ],
)
def test_bad_values_name_the_line_and_key(value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + f"    max_mfa_age_minutes: {value}\n")
    (problem,) = caught.value.problems
    assert problem.startswith("bastion.yaml:11: compartments.general.max_mfa_age_minutes: ")
    assert expected in problem


def test_a_misspelt_key_is_an_error_not_a_silently_missing_requirement() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + "    max_mfa_age: 15\n")
    assert "max_mfa_age" in caught.value.message


def test_the_same_rules_hold_in_python() -> None:
    assert Compartment(level=Level.CRITICAL, max_mfa_age_minutes=5).max_mfa_age_minutes == 5
    with pytest.raises(ValueError, match="max_mfa_age_minutes"):
        Compartment(level=Level.CRITICAL, max_mfa_age_minutes=0)

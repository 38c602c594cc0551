"""Access-review periods and dormancy in bastion.yaml: each mistake is a named error at its line."""

from __future__ import annotations

import pytest

from bastion.config import parse_config
from bastion.errors import ConfigError

BASE = """\
version: 1
orgs:
  lab: {kind: internal}
  acme:
    kind: vendor
    sponsor: alice
    review_every_days: 30
principals:
  alice: {kind: user, org: lab}
lifecycle:
  dormant_after_days: 90
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return caught.value.problems


def test_the_settings_parse() -> None:
    config = parse_config(BASE)
    assert config.orgs["acme"].review_every_days == 30
    assert config.orgs["acme"].review_interval_days == 30
    assert config.lifecycle.dormant_after_days == 90


def test_both_are_optional() -> None:
    text = BASE.replace("    review_every_days: 30\n", "").replace(
        "lifecycle:\n  dormant_after_days: 90\n", ""
    )
    config = parse_config(text)
    assert config.orgs["acme"].review_interval_days == 90  # the default for vendors
    assert config.lifecycle.dormant_after_days is None  # dormancy off unless configured
    assert parse_config(BASE.replace("days: 90", "days: null")).lifecycle.dormant_after_days is None


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "review_every_days: 30",
            "review_every_days: 0",
            "bastion.yaml:7: orgs.acme.review_every_days: must be at least 1 (got 0)",
        ),
        (
            "review_every_days: 30",
            "review_every_days: 366",
            "bastion.yaml:7: orgs.acme.review_every_days: must be at most 365 (got 366)",
        ),
        (
            "review_every_days: 30",
            'review_every_days: "30"',
            "bastion.yaml:7: orgs.acme.review_every_days: must be a whole number (got '30')",
        ),
        (
            "review_every_days: 30",
            "review_every_days: 2.5",
            "bastion.yaml:7: orgs.acme.review_every_days: must be a whole number",
        ),
        (
            "  lab: {kind: internal}",
            "  lab: {kind: internal, review_every_days: 30}",
            "bastion.yaml:3: orgs.lab.review_every_days: applies to vendor orgs only",
        ),
        (
            "dormant_after_days: 90",
            "dormant_after_days: 0",
            "bastion.yaml:11: lifecycle.dormant_after_days: must be at least 1 (got 0)",
        ),
        (
            "dormant_after_days: 90",
            "dormant_after_days: 3651",
            "bastion.yaml:11: lifecycle.dormant_after_days: must be at most 3650 (got 3651)",
        ),
        (
            "dormant_after_days: 90",
            "dormant_after_days: 90d",
            "bastion.yaml:11: lifecycle.dormant_after_days: must be a whole number (got '90d')",
        ),
        (
            "dormant_after_days: 90",
            "dormant_days: 90",
            "bastion.yaml:11: lifecycle.dormant_days: unknown key; did you mean "
            "'dormant_after_days'?",
        ),
        (
            "lifecycle:\n  dormant_after_days: 90\n",
            "lifecycle: 90\n",
            "bastion.yaml:10: lifecycle: must be a mapping",
        ),
    ],
)
def test_mistakes_are_named_at_their_line(old: str, new: str, expected: str) -> None:
    text = BASE.replace(old, new, 1)
    assert text != BASE
    found = problems(text)
    assert any(problem.startswith(expected) for problem in found), found

"""``lock_view``: a compartment may refuse calls when a gateway's lock view is not known current.

Validated like every setting: a typo or a quoted number is an error naming the line, never a
silently lax compartment.
"""

from __future__ import annotations

import math

import pytest

from bastion.config import parse_config
from bastion.config.models import BastionConfig
from bastion.errors import ConfigError, LockViewStale
from bastion.policy.lockview import check_lock_view

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


class _Snapshot:
    """Just what ``check_lock_view`` reads: the config."""

    def __init__(self, config: BastionConfig) -> None:
        self.config = config


def test_by_default_a_compartment_is_not_strict() -> None:
    lock_view = parse_config(BASE).compartments["general"].lock_view
    assert (lock_view.strict, lock_view.max_age_seconds) == (False, 2.0)


@pytest.mark.parametrize(
    ("text", "bound"),
    [
        ("{strict: true}", 2.0),
        ("{strict: true, max_age_seconds: 0.5}", 0.5),
        ("{strict: true, max_age_seconds: 30}", 30.0),
    ],
)
def test_a_strict_compartment_with_a_bound_is_accepted(text: str, bound: float) -> None:
    lock_view = parse_config(BASE + f"    lock_view: {text}\n").compartments["general"].lock_view
    assert (lock_view.strict, lock_view.max_age_seconds) == (True, bound)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("{strict: 'yes'}", "strict"),
        ("{strict: 1}", "strict"),
        ("{strict: true, max_age_seconds: 0.1}", "at least 0.5"),
        ("{strict: true, max_age_seconds: 0}", "at least 0.5"),
        ("{strict: true, max_age_seconds: -2}", "at least 0.5"),
        ("{strict: true, max_age_seconds: 3601}", "at most 3600"),
        ("{strict: true, max_age_seconds: '2'}", "max_age_seconds"),
        ("{strict: true, max_age: 2}", "max_age"),
        ("strict", "lock_view"),
        ("[true]", "lock_view"),
    ],
)
def test_bad_values_name_the_line_and_key(value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + f"    lock_view: {value}\n")
    assert "bastion.yaml:11: compartments.general.lock_view" in caught.value.message
    assert expected in caught.value.message


def test_a_strict_compartment_refuses_a_view_older_than_its_bound() -> None:
    config = parse_config(BASE + "    lock_view: {strict: true, max_age_seconds: 2}\n")
    snapshot = _Snapshot(config)
    check_lock_view(snapshot, "general", 1.9)  # type: ignore[arg-type]
    with pytest.raises(LockViewStale) as caught:
        check_lock_view(snapshot, "general", 2.5)  # type: ignore[arg-type]
    assert (caught.value.status, caught.value.code) == (503, "lock_view_stale")
    assert "2.5s ago" in caught.value.message
    with pytest.raises(LockViewStale, match="never"):
        check_lock_view(snapshot, "general", math.inf)  # type: ignore[arg-type]


def test_a_compartment_that_is_not_strict_is_served_from_any_view() -> None:
    config = parse_config(BASE + "    lock_view: {strict: false, max_age_seconds: 1}\n")
    check_lock_view(_Snapshot(config), "general", math.inf)  # type: ignore[arg-type]
    check_lock_view(_Snapshot(parse_config(BASE)), "general", math.inf)  # type: ignore[arg-type]

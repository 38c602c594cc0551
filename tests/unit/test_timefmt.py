"""How the CLI and the console write times."""

from __future__ import annotations

import pytest

from bastion.timefmt import relative, when


def test_when_is_utc_to_the_second_and_a_dash_for_none() -> None:
    assert when(0) == "1970-01-01 00:00:00"
    assert when(1_800_000_000.9) == "2027-01-15 08:00:00"
    assert when(None) == "-"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "T+0s"),
        (12.7, "T+12s"),
        (-59, "T-59s"),
        (61, "T+1m01s"),
        (-3720, "T-1h02m"),
        (86399, "T+23h59m"),
        (2 * 86400 + 3 * 3600 + 59, "T+2d03h"),
    ],
)
def test_relative_to_the_first_signal(seconds: float, shown: str) -> None:
    assert relative(seconds) == shown

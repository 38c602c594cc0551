"""Durations typed on the command line (lock expiries, code lifetimes): ``90``, ``15m``, ``2d``."""

from __future__ import annotations

import pytest

from bastion.cli.context import parse_duration
from bastion.errors import BadRequest


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("90s", 90),
        ("15m", 900),
        ("4h", 14_400),
        ("2d", 172_800),
        ("1s", 1),
        (" 5m ", 300),
        ("007m", 420),
    ],
)
def test_durations_are_read_as_seconds(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "0",
        "0s",
        "00m",
        "-5m",
        "+5m",
        "5x",
        "5 m",
        "1.5h",
        "m",
        "5mm",
        "15M",
        "1h30m",
        "5m\n5m",
    ],
)
def test_anything_else_is_refused_with_a_helpful_message(text: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_duration(text)
    assert caught.value.message == (
        f"invalid duration {text!r}: use a positive number with s, m, h or d"
    )
    assert caught.value.status == 400

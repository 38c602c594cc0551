"""The risk feed's input checks and the board's change log (no Redis needed here)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bastion.detect.risk import RiskBoard
from bastion.store.risk_feed import parse_entry


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "principal",
        {"kind": "principal"},
        [],
        ["principal", "bob", 10.0],
        ["principal", "bob", 10.0, 1.0, "extra"],
        ["janitor", "bob", 10.0, 1.0],
        ["principal", "", 10.0, 1.0],
        ["principal", "b" * 257, 10.0, 1.0],
        ["principal", 7, 10.0, 1.0],
        ["principal", "bob", "10", 1.0],
        ["principal", "bob", True, 1.0],
        ["principal", "bob", 10.0, None],
        ["principal", "bob", math.nan, 1.0],
        ["principal", "bob", 10.0, math.inf],
        ["principal", "bob", -1.0, 1.0],
        ["principal", "bob", 100.5, 1.0],
    ],
)
def test_a_malformed_entry_is_rejected(raw: Any) -> None:
    assert parse_entry(raw) is None


def test_a_well_formed_entry_is_taken() -> None:
    assert parse_entry(["org", "acme", 40, 12]) == ("org", "acme", 40.0, 12.0)
    assert parse_entry(["principal", "b" * 256, 0, 0.5]) == ("principal", "b" * 256, 0.0, 0.5)


def test_drain_returns_each_change_once_and_forgets_pruned_entries() -> None:
    board = RiskBoard(half_life=10.0, cap=2)
    board.add("principal", "alice", 30.0, 0.0)
    board.add("principal", "alice", 10.0, 0.0)
    assert board.drain() == [("principal", "alice", 40.0, 0.0)]
    assert board.drain() == []
    board.add("principal", "bob", 5.0, 0.0)
    board.add("org", "acme", 50.0, 1000.0)  # full: prunes what decayed below a point first
    drained = board.drain()
    assert ("org", "acme", 50.0, 1000.0) in drained
    assert all(name != "bob" for _, name, _, _ in drained)


def test_put_takes_the_entry_as_it_is_within_bounds() -> None:
    board = RiskBoard(half_life=3600.0)
    board.put("principal", "carol", 95.0, 100.0)
    assert board.score("principal", "carol", 100.0) == 95.0
    board.put("principal", "carol", 10.0, 100.0)  # the worker's word replaces, never adds
    assert board.score("principal", "carol", 100.0) == 10.0
    assert board.drain() == []  # put is not a local change: nothing to publish again

"""The state primitives the stream detectors build on: tables of small records, activity
baselines, and several first-seen values at once."""

from __future__ import annotations

import json

import pytest

from bastion.detect.state import Activity, FirstSeen, Table


def test_table_is_an_lru_that_dumps_copies_and_loads() -> None:
    table: Table[list[float]] = Table(2)
    table.put("a", [1.0])
    table.put("b", [2.0])
    dumped = table.dump()
    record = table.get("a")
    assert record is not None
    record.append(3.0)  # updated in place, after the dump
    assert dumped == {"a": [1.0], "b": [2.0]}
    table.put("c", [4.0])
    assert "b" not in table
    assert table.stats.evictions == 1
    copy: Table[list[float]] = Table(2)
    copy.load(json.loads(json.dumps(table.dump())))
    assert copy.dump() == {"a": [1.0, 3.0], "c": [4.0]}


def test_activity_needs_events_and_time_and_restarts_after_a_gap() -> None:
    activity = Activity(cap=10, min_events=3, min_span=100.0, restart_after=1000.0)
    assert [activity.record("alice", t) for t in (0.0, 10.0, 20.0, 30.0)] == [False] * 4
    assert activity.record("alice", 100.0)  # 4 earlier events, 100 s since the first
    assert activity.of("alice") == (0.0, 5)
    assert not activity.record("alice", 1200.0)  # silent for 1,100 s: learned afresh
    assert activity.of("alice") == (1200.0, 1)
    assert activity.of("bob") is None
    copy = Activity(cap=10, min_events=3, min_span=100.0)
    copy.load(json.loads(json.dumps(activity.dump())))
    assert copy.dump() == activity.dump()
    assert len(copy) == 1


def test_activity_is_bounded() -> None:
    activity = Activity(cap=5, min_events=1, min_span=0.0)
    for n in range(12):
        activity.record(f"p{n}", float(n))
    assert len(activity) == 5
    assert activity.stats.evictions == 7


def test_first_seen_novel_records_several_values_with_one_lookup() -> None:
    seen = FirstSeen(ttl=100.0, cap_entities=4, cap_values=3)
    assert seen.novel("alice", ["k:1", "n:a"], 0.0) == {"k:1", "n:a"}
    assert seen.novel("alice", ["k:1", "n:b"], 50.0) == {"n:b"}
    assert seen.novel("alice", ["k:1", "n:a"], 140.0) == {"n:a"}  # n:a expired, k:1 did not
    seen.novel("alice", ["c:DE"], 141.0)  # a fourth value: the oldest (n:b) goes
    assert set(seen.values("alice", 0.0)) == {"k:1", "n:a", "c:DE"}
    assert seen.stats.evictions == 1
    assert seen.novel("alice", ["k:1"], 120.0) == set()  # a late event keeps the newest time
    assert seen.values("alice", 0.0)["k:1"] == 140.0
    assert len(seen) == 1


def test_table_refuses_saved_records_of_another_shape_before_loading_any() -> None:
    table: Table[list[float]] = Table(10, shape=lambda r: isinstance(r, list) and len(r) == 2)
    with pytest.raises(ValueError, match="unknown shape"):
        table.load({"a": [1.0, 2.0], "b": [1.0]})
    assert len(table) == 0
    table.load({"a": [1.0, 2.0]})
    assert table.get("a") == [1.0, 2.0]

"""Risk scores decay and stay bounded; state primitives stay within their caps and round-trip."""

from __future__ import annotations

from bastion.detect.observation import network_of
from bastion.detect.risk import RiskBoard
from bastion.detect.state import LRU, Ewma, FirstSeen, Windows


def test_risk_adds_up_to_100_and_halves_every_half_life() -> None:
    board = RiskBoard(half_life=100.0)
    for _ in range(5):
        board.add("principal", "alice", 50, 0.0)
    assert board.score("principal", "alice", 0.0) == 100.0
    assert round(board.score("principal", "alice", 100.0)) == 50
    assert board.risk("alice", "lab", 200.0) == 25
    board.add("org", "lab", 90, 200.0)
    assert board.risk("alice", "lab", 200.0) == 90  # the larger of principal and org


def test_risk_board_is_bounded() -> None:
    board = RiskBoard(half_life=10.0, cap=100)
    for n in range(1000):
        board.add("principal", f"p{n}", 10, float(n))
    assert len(board._scores) <= 100


def test_lru_evicts_the_least_recent_and_counts() -> None:
    lru: LRU[str, int] = LRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1
    lru.put("c", 3)
    assert "b" not in lru
    assert lru.stats.evictions == 1


def test_first_seen_with_ttl_and_caps_round_trips() -> None:
    seen = FirstSeen(ttl=100.0, cap_entities=2, cap_values=2)
    assert not seen.seen("alice", "k1", 0.0)
    assert seen.seen("alice", "k1", 50.0)
    assert not seen.seen("alice", "k1", 200.0)  # beyond the TTL it counts as new again
    seen.seen("alice", "k2", 201.0)
    seen.seen("alice", "k3", 202.0)  # third value: the oldest goes
    assert set(seen.values("alice", 0.0)) == {"k2", "k3"}
    copy = FirstSeen(ttl=100.0, cap_entities=2)
    copy.load(seen.dump())
    assert copy.dump() == seen.dump()
    for n in range(10):
        seen.seen(f"p{n}", "x", 0.0)
    assert len(seen.dump()) == 2
    assert seen.stats.evictions >= 8


def test_windows_expire_by_event_time_and_are_bounded() -> None:
    windows = Windows(span=60.0, cap_entities=3, cap_items=5)
    window = windows.of("alice")
    for t in range(10):
        window.add(float(t), value=f"m{t % 3}", amount=2.0)
    assert window.count() == 5
    assert window.total() == 10.0
    window.add(100.0, "late")
    assert window.count() == 1
    for n in range(10):
        windows.of(f"p{n}")
    assert len(windows) == 3


def test_ewma_scores_outliers_after_warmup() -> None:
    baseline = Ewma(half_life=3600.0, warmup=5)
    for hour in range(10):
        assert hour < 5 or (baseline.score(1000.0) or 0) < 1
        baseline.update(1000.0, hour * 3600.0)
    assert (baseline.score(50_000.0) or 0) > 4


def test_network_of() -> None:
    assert network_of("203.0.113.77") == "203.0.113.0/24"
    assert network_of("2001:db8:1:2::5") == "2001:db8:1::/48"
    assert network_of("not-an-ip") == ""

"""The in-memory replay cache: single use within the TTL, eviction, and failing closed when full."""

from __future__ import annotations

import pytest

from bastion.identity.replay import MemoryReplayCache, ReplayCache


def test_a_key_is_new_once_then_seen_until_it_expires() -> None:
    cache: ReplayCache = MemoryReplayCache()
    assert cache.add("a", ttl=10, now=100)
    assert not cache.add("a", ttl=10, now=105)
    assert not cache.add("a", ttl=10, now=109.9)
    assert cache.add("a", ttl=10, now=110)  # expired: the proof's own time checks refuse it now


def test_expired_entries_are_evicted() -> None:
    cache = MemoryReplayCache()
    for i in range(100):
        cache.add(f"k{i}", ttl=10, now=float(i))
    assert len(cache) == 10  # only the keys added in the last 10 seconds are live
    cache.add("late", ttl=10, now=1000)
    assert len(cache) == 1


def test_out_of_order_expiries_are_handled() -> None:
    cache = MemoryReplayCache()
    assert cache.add("long", ttl=100, now=0)
    assert cache.add("short", ttl=1, now=0)
    assert cache.add("short", ttl=1, now=2)  # the short one expired behind the long one
    assert not cache.add("long", ttl=100, now=2)
    assert len(cache) == 2


def test_a_full_cache_fails_closed() -> None:
    cache = MemoryReplayCache(max_entries=3)
    assert all(cache.add(key, ttl=60, now=0) for key in ("a", "b", "c"))
    assert not cache.add("d", ttl=60, now=1)  # refused: evicting a live key would allow a replay
    assert not cache.add("a", ttl=60, now=1)
    assert cache.add("d", ttl=60, now=60)  # room again once the others expired


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MemoryReplayCache(max_entries=0)
    with pytest.raises(ValueError, match="ttl"):
        MemoryReplayCache().add("a", ttl=0, now=0)

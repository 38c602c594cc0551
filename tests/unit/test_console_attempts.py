"""Anonymous console sign-in attempts: per source address and in all, refilling with time."""

from __future__ import annotations

import pytest

from bastion.console.attempts import SignInAttempts
from bastion.errors import TooManyRequests


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def attempts(clock: Clock, total_per_minute: float = 600.0) -> SignInAttempts:
    return SignInAttempts(per_minute=6, burst=3, total_per_minute=total_per_minute, clock=clock)


def test_a_source_gets_its_burst_then_waits_for_the_refill() -> None:
    clock = Clock()
    limiter = attempts(clock)
    for _ in range(3):
        limiter.take("192.0.2.1")
    with pytest.raises(TooManyRequests) as refused:
        limiter.take("192.0.2.1")
    assert refused.value.status == 429
    assert refused.value.retry_after == 10  # 6 a minute: one every 10 s
    assert "from this address" in refused.value.message
    clock.now += 10
    limiter.take("192.0.2.1")
    with pytest.raises(TooManyRequests):
        limiter.take("192.0.2.1")


def test_a_refused_attempt_costs_nothing() -> None:
    clock = Clock()
    limiter = attempts(clock)
    for _ in range(3):
        limiter.take("192.0.2.1")
    for _ in range(50):  # hammering while refused does not push the wait further out
        with pytest.raises(TooManyRequests):
            limiter.take("192.0.2.1")
    clock.now += 10
    limiter.take("192.0.2.1")


def test_sources_are_counted_apart() -> None:
    limiter = attempts(Clock())
    for _ in range(3):
        limiter.take("192.0.2.1")
    limiter.take("192.0.2.2")
    limiter.take("2001:db8::1")


def test_every_source_together_has_a_limit() -> None:
    clock = Clock()
    limiter = attempts(clock, total_per_minute=5.0)
    for n in range(5):
        limiter.take(f"192.0.2.{n}")
    with pytest.raises(TooManyRequests) as refused:
        limiter.take("198.51.100.1")
    assert "right now" in refused.value.message
    assert refused.value.retry_after == 12
    clock.now += 12
    limiter.take("198.51.100.1")


def test_memory_is_bounded_and_the_least_recently_seen_is_forgotten() -> None:
    clock = Clock()
    limiter = SignInAttempts(per_minute=6, burst=1, max_sources=3, clock=clock)
    limiter.take("a")
    for source in ("b", "c", "d"):
        limiter.take(source)
    assert len(limiter) == 3
    limiter.take("a")  # forgotten, so a fresh bucket; "b" is now the oldest
    with pytest.raises(TooManyRequests):
        limiter.take("d")
    assert len(limiter) == 3


def test_many_sources_cannot_start_afresh_past_the_total() -> None:
    limiter = SignInAttempts(
        per_minute=6, burst=1, total_per_minute=10, max_sources=2, clock=Clock()
    )
    for n in range(10):
        limiter.take(f"203.0.113.{n}")
    with pytest.raises(TooManyRequests):
        limiter.take("203.0.113.200")

"""Shared state in Redis, against this machine's real Redis: the Lua token buckets behind
cluster quotas, throttles and the console's sign-in limits, and the DPoP replay cache
(``SET NX PX``), including Redis down."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from bastion.config.models import Limits, Quotas
from bastion.console.attempts import SignInAttempts, SignInLimits
from bastion.errors import QuotaUnavailable, ReplayCacheUnavailable, Throttled, TooManyRequests
from bastion.gateway.quotas import ThrottleHold
from bastion.gateway.quotas_redis import RedisQuotaBuckets
from bastion.identity.replay_redis import RedisReplayCache
from bastion.store.redis import async_client

pytestmark = pytest.mark.anyio
REDIS_URL = "redis://127.0.0.1:6379/0"
DEAD_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1: refused at once


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client() -> AsyncIterator[aioredis.Redis]:
    redis_client = async_client(REDIS_URL)
    yield redis_client
    await redis_client.aclose()


@pytest.fixture
async def prefix(client: aioredis.Redis) -> AsyncIterator[str]:
    """A namespace of this test's own; its keys are deleted afterwards (and only its keys)."""
    name = "t" + secrets.token_hex(6)
    yield name
    keys = [key async for key in client.scan_iter(match=f"{name}:*")]
    if keys:
        await client.delete(*keys)


@pytest.fixture
async def buckets(client: aioredis.Redis, prefix: str) -> RedisQuotaBuckets:
    return RedisQuotaBuckets(client, prefix)


async def test_requests_per_minute_refuse_then_refill(buckets: RedisQuotaBuckets) -> None:
    quotas = Quotas(principal=Limits(requests_per_minute=2))
    await buckets.admit(quotas, "c", "alice", "lab", now=0.0)
    await buckets.admit(quotas, "c", "alice", "lab", now=0.0)
    with pytest.raises(TooManyRequests) as refused:
        await buckets.admit(quotas, "c", "alice", "lab", now=1.0)
    assert refused.value.retry_after == 29  # one request refills every 30 s
    assert "requests per minute for principal 'alice'" in refused.value.message
    await buckets.admit(quotas, "c", "bob", "lab", now=1.0)  # another principal: its own bucket
    await buckets.admit(quotas, "c", "alice", "lab", now=31.0)


async def test_two_gateways_share_one_bucket(client: aioredis.Redis, prefix: str) -> None:
    quotas = Quotas(principal=Limits(requests_per_minute=3))
    first, second = RedisQuotaBuckets(client, prefix), RedisQuotaBuckets(client, prefix)
    for gateway in (first, second, first):
        await gateway.admit(quotas, "c", "alice", "lab", now=0.0)
    with pytest.raises(TooManyRequests):
        await second.admit(quotas, "c", "alice", "lab", now=0.0)


async def test_an_org_limit_is_shared_and_a_refusal_takes_nothing(
    buckets: RedisQuotaBuckets,
) -> None:
    quotas = Quotas(principal=Limits(requests_per_minute=5), org=Limits(requests_per_minute=2))
    await buckets.admit(quotas, "c", "alice", "lab", now=0.0)
    await buckets.admit(quotas, "c", "bob", "lab", now=0.0)
    with pytest.raises(TooManyRequests, match="org 'lab'"):
        await buckets.admit(quotas, "c", "carol", "lab", now=0.0)
    # carol's refused request took nothing from her own bucket: 5 more once the org refills
    for second in range(5):
        await buckets.admit(
            Quotas(principal=Limits(requests_per_minute=5)), "c", "carol", "lab", float(second)
        )
    await buckets.admit(quotas, "c", "victor", "acme", now=0.0)  # another org is untouched


async def test_usage_is_charged_after_the_response_and_may_go_below_zero(
    buckets: RedisQuotaBuckets,
) -> None:
    quotas = Quotas(principal=Limits(tokens_per_hour=100))
    await buckets.admit(quotas, "c", "alice", "lab", now=0.0)
    await buckets.charge(quotas, "c", "alice", "lab", used=150, now=0.0)  # overdraws by 50
    with pytest.raises(TooManyRequests) as refused:
        await buckets.admit(quotas, "c", "alice", "lab", now=1.0)
    assert "LLM tokens per hour" in refused.value.message
    # from -50 at t=0, refilled at 100 an hour (one every 36 s): 1 token again at t=1836
    assert refused.value.retry_after == 1835
    with pytest.raises(TooManyRequests):
        await buckets.admit(quotas, "c", "alice", "lab", now=1800.0)  # back to 0: not yet
    await buckets.admit(quotas, "c", "alice", "lab", now=1837.0)


async def test_buckets_expire_once_they_would_be_full(
    buckets: RedisQuotaBuckets, client: aioredis.Redis, prefix: str
) -> None:
    quotas = Quotas(principal=Limits(requests_per_minute=60))  # one a second
    await buckets.admit(quotas, "c", "alice", "lab", now=0.0)
    key = f"{prefix}:quota:requests:principal:alice:c"
    ttl_ms = await client.pttl(key)
    assert 1000 < ttl_ms <= 2000  # one second to be full again, plus a second of margin
    await buckets.throttle("alice", "lk_1", 1, now=0.0)
    throttle_ttl = await client.pttl(f"{prefix}:throttle:alice:lk_1")
    assert 60_000 < throttle_ttl <= 61_000


async def test_a_changed_limit_starts_a_fresh_bucket(buckets: RedisQuotaBuckets) -> None:
    await buckets.admit(Quotas(principal=Limits(requests_per_minute=1)), "c", "a", "o", 0.0)
    with pytest.raises(TooManyRequests):
        await buckets.admit(Quotas(principal=Limits(requests_per_minute=1)), "c", "a", "o", 0.0)
    await buckets.admit(Quotas(principal=Limits(requests_per_minute=2)), "c", "a", "o", 0.0)


async def test_a_throttle_holds_the_rate_without_bursts(buckets: RedisQuotaBuckets) -> None:
    await buckets.throttle("alice", "lk_1", 2, now=0.0)
    with pytest.raises(Throttled) as refused:
        await buckets.throttle("alice", "lk_1", 2, now=0.0)  # rate 2 is not a burst of 2
    assert (refused.value.retry_after, refused.value.lock) == (30, "lk_1")
    with pytest.raises(Throttled):
        await buckets.throttle("alice", "lk_1", 2, now=29.0)
    await buckets.throttle("alice", "lk_1", 2, now=30.0)  # exactly at Retry-After
    await buckets.throttle("bob", "lk_2", 2, now=30.0)  # another principal is unaffected
    await buckets.throttle("alice", "lk_3", 2, now=30.0)  # a new lock starts full


async def test_a_slow_clock_refills_nothing(buckets: RedisQuotaBuckets) -> None:
    """A gateway whose clock is behind the last writer's must not drain or refill the bucket."""
    quotas = Quotas(principal=Limits(requests_per_minute=1))
    await buckets.admit(quotas, "c", "alice", "lab", now=100.0)
    with pytest.raises(TooManyRequests):
        await buckets.admit(quotas, "c", "alice", "lab", now=40.0)


# --- Redis down ------------------------------------------------------------------------------

LIMITED = Quotas(principal=Limits(requests_per_minute=1))


@pytest.fixture
async def dead_buckets() -> AsyncIterator[RedisQuotaBuckets]:
    dead = async_client(DEAD_REDIS_URL)
    yield RedisQuotaBuckets(dead, "t", budget=1.0)
    await dead.aclose()


async def test_redis_down_refuses_strict_compartments(dead_buckets: RedisQuotaBuckets) -> None:
    with pytest.raises(QuotaUnavailable) as refused:
        await dead_buckets.take(LIMITED, "frontier", "carol", "lab", [], strict=True, now=0.0)
    assert (refused.value.status, refused.value.code) == (503, "quota_unavailable")
    assert "frontier" in refused.value.message
    assert dead_buckets.failures == 1


async def test_redis_down_falls_back_to_this_process_for_other_compartments(
    dead_buckets: RedisQuotaBuckets, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, "bastion.quotas")
    await dead_buckets.take(LIMITED, "general", "alice", "lab", [], strict=False, now=0.0)
    with pytest.raises(TooManyRequests):  # the local bucket still holds the limit
        await dead_buckets.take(LIMITED, "general", "alice", "lab", [], strict=False, now=0.0)
    hold = [ThrottleHold("bob", "lk_1", 1.0)]
    await dead_buckets.take(Quotas(), "general", "bob", "lab", hold, strict=False, now=0.0)
    with pytest.raises(Throttled):
        await dead_buckets.take(Quotas(), "general", "bob", "lab", hold, strict=False, now=0.0)
    await dead_buckets.settle(Quotas(), "general", "bob", "lab", used=10, now=0.0)  # no raise
    assert dead_buckets.failures == 4
    assert len([r for r in caplog.records if "unreachable" in r.message]) == 1  # logged once


async def test_no_quota_and_no_throttle_needs_no_redis(dead_buckets: RedisQuotaBuckets) -> None:
    await dead_buckets.take(Quotas(), "frontier", "carol", "lab", [], strict=True, now=0.0)
    assert dead_buckets.failures == 0


# --- DPoP replay cache -----------------------------------------------------------------------


async def test_replay_cache_accepts_a_key_once_across_instances(
    client: aioredis.Redis, prefix: str
) -> None:
    first, second = RedisReplayCache(client, prefix), RedisReplayCache(client, prefix)
    assert await first.add("jkt:jti-1", 65, now=0.0) is True
    assert await second.add("jkt:jti-1", 65, now=0.0) is False
    assert await first.add("jkt:jti-1", 65, now=0.0) is False
    assert await second.add("jkt:jti-2", 65, now=0.0) is True
    ttl_ms = await client.pttl(first.key("jkt:jti-1"))
    assert 64_000 < ttl_ms <= 65_000


async def test_replay_cache_keys_are_fixed_size_digests(
    client: aioredis.Redis, prefix: str
) -> None:
    cache = RedisReplayCache(client, prefix)
    hostile = "jkt:" + "\x00\r\n*3 FLUSHALL " * 20 + "\udcff"
    assert await cache.add(hostile, 5, now=0.0) is True
    key = cache.key(hostile)
    assert key.startswith(f"{prefix}:jti:")
    assert len(key) == len(prefix) + 5 + 64
    assert await cache.add(hostile, 5, now=0.0) is False


async def test_replay_cache_expires_keys(client: aioredis.Redis, prefix: str) -> None:
    cache = RedisReplayCache(client, prefix)
    assert await cache.add("jkt:short", 0.05, now=0.0) is True
    await client.pexpire(cache.key("jkt:short"), 1)  # let it lapse without waiting a TTL out
    while await client.exists(cache.key("jkt:short")):
        pass
    assert await cache.add("jkt:short", 0.05, now=0.0) is True


async def test_replay_cache_refuses_a_bad_ttl(client: aioredis.Redis, prefix: str) -> None:
    with pytest.raises(ValueError, match="ttl"):
        await RedisReplayCache(client, prefix).add("k", 0, now=0.0)


async def test_replay_cache_down_fails_closed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, "bastion.replay")
    dead = async_client(DEAD_REDIS_URL)
    cache = RedisReplayCache(dead, "t")
    for _ in range(2):
        with pytest.raises(ReplayCacheUnavailable) as refused:
            await cache.add("jkt:jti", 65, now=0.0)
        assert (refused.value.status, refused.value.code) == (503, "replay_cache_unavailable")
    assert cache.failures == 2
    assert len([r for r in caplog.records if "unreachable" in r.message]) == 1
    await dead.aclose()


# -- the console's sign-in limits (every gateway counts into the same buckets) ---------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def gateway(
    client: aioredis.Redis, prefix: str, clock: Clock, total: float = 600.0
) -> SignInLimits:
    local = SignInAttempts(per_minute=6, burst=3, total_per_minute=total)
    return SignInLimits(local, client, prefix, clock=clock)


async def test_sign_in_limits_of_an_address_are_shared_by_gateways(
    client: aioredis.Redis, prefix: str
) -> None:
    clock = Clock()
    first, second = gateway(client, prefix, clock), gateway(client, prefix, clock)
    await first.take("192.0.2.1")
    await second.take("192.0.2.1")
    await first.take("192.0.2.1")
    for limits in (first, second):  # the burst of 3 is spent, whichever gateway is asked
        with pytest.raises(TooManyRequests) as refused:
            await limits.take("192.0.2.1")
        assert refused.value.retry_after == 10  # 6 a minute: one every 10 s
        assert refused.value.message == (
            "too many sign-in attempts from this address: try again in 10 s"
        )
    await second.take("2001:db8::1")  # another address: its own bucket
    assert len(first.local) == len(second.local) == 0  # nothing was counted in memory


async def test_a_refused_sign_in_attempt_costs_nothing(client: aioredis.Redis, prefix: str) -> None:
    clock = Clock()
    limits = gateway(client, prefix, clock)
    for _ in range(3):
        await limits.take("192.0.2.1")
    for _ in range(20):  # hammering while refused does not push the wait further out
        with pytest.raises(TooManyRequests):
            await limits.take("192.0.2.1")
    clock.now += 10
    await limits.take("192.0.2.1")
    with pytest.raises(TooManyRequests):
        await limits.take("192.0.2.1")


async def test_every_address_together_has_one_sign_in_limit(
    client: aioredis.Redis, prefix: str
) -> None:
    clock = Clock()
    first, second = gateway(client, prefix, clock, 4), gateway(client, prefix, clock, 4)
    for number, limits in enumerate((first, second, first, second), start=1):
        await limits.take(f"192.0.2.{number}")
    with pytest.raises(TooManyRequests) as refused:
        await second.take("198.51.100.9")  # a fresh address: the total is spent
    assert refused.value.message == "too many sign-in attempts right now: try again in 15 s"


async def test_sign_in_buckets_expire_when_full_again(client: aioredis.Redis, prefix: str) -> None:
    await gateway(client, prefix, Clock()).take("192.0.2.1")
    ttl = await client.pttl(f"{prefix}:signin:source:192.0.2.1")
    assert 0 < ttl <= 10_000 + 1000  # one attempt refills in 10 s: the key goes with it
    assert 0 < await client.pttl(f"{prefix}:signin:total") <= 100 + 1000


async def test_sign_in_limits_without_redis_fall_back_to_the_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = async_client(DEAD_REDIS_URL)
    try:
        limits = gateway(dead, "t" + secrets.token_hex(6), Clock())
        with caplog.at_level(logging.WARNING, logger="bastion.console"):
            for _ in range(3):
                await limits.take("192.0.2.1")
            with pytest.raises(TooManyRequests) as refused:  # still limited, never waived
                await limits.take("192.0.2.1")
        assert "from this address" in refused.value.message
        assert limits.failures == 4
        outage = [r for r in caplog.records if "sign-in limits (Redis) unreachable" in r.message]
        assert len(outage) == 1  # logged once per outage, not per attempt
        assert len(limits.local) == 1
    finally:
        await dead.aclose()

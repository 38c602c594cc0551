"""Anonymous sign-in attempts, limited per source address and in all.

Two console routes do work for a visitor nobody has identified yet: starting a sign-in with an
identity provider (``GET /console/login/oidc/<issuer>`` keeps a ``state`` row for ten minutes)
and redeeming a login code (``POST /console/login``). Without a limit, one client could fill
the database with states or hammer it with lookups. Each source address (as the guard sees it:
the trusted-proxy rules apply) gets a token bucket of ``burst`` attempts refilled at
``per_minute``; every source together gets ``total_per_minute`` (many addresses cannot do it
either). Over a limit the visitor gets a 429 page saying when to try again, and nothing is
stored.

``SignInAttempts`` keeps the buckets in this process's memory; at most ``max_sources``
addresses are remembered, the least recently seen forgotten first (cycling through more
addresses than that to start afresh still meets the limit on all sources together).
``SignInLimits`` is what the console asks: in cluster mode it keeps the same buckets in Redis
(``gateway/quotas_redis.py``'s script, under ``<prefix>:signin:...``), so the limits hold
across every gateway, not once per process; while Redis does not answer it falls back to this
process's own buckets (still limited, never waived) and logs the outage once.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bastion.errors import TooManyRequests
from bastion.gateway.quotas import Bucket
from bastion.gateway.quotas_redis import BUCKETS_LUA, RedisBucket, run_buckets

log = logging.getLogger("bastion.console")

MAX_SOURCES = 10_000
SOURCE, TOTAL = "from this address", "right now"  # which limit refused, as the page says it
PER_MINUTE = 20.0
BURST = 30.0  # an office behind one NAT signing in at once, in an incident
TOTAL_PER_MINUTE = 600.0


class SignInAttempts:
    def __init__(
        self,
        *,
        per_minute: float = PER_MINUTE,
        burst: float = BURST,
        total_per_minute: float = TOTAL_PER_MINUTE,
        max_sources: int = MAX_SOURCES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_minute, self.burst, self.total = per_minute, burst, total_per_minute
        self._max_sources = max_sources
        self._clock = clock
        self._sources: OrderedDict[str, Bucket] = OrderedDict()
        now = clock()
        self._total = Bucket(total_per_minute, total_per_minute / 60, total_per_minute, now)

    def take(self, source: str) -> None:
        """Count one attempt from ``source``; ``TooManyRequests`` (and nothing counted) when
        that source, or every source together, is over its limit."""
        now = self._clock()
        bucket = self._sources.pop(source, None)
        if bucket is None:
            bucket = Bucket(self.burst, self.per_minute / 60, self.burst, now)
        self._sources[source] = bucket  # the most recently seen last
        bucket.refill(now)
        self._total.refill(now)
        for limited, whose in ((bucket, SOURCE), (self._total, TOTAL)):
            if limited.level < 1:
                self._forget()
                raise refusal(whose, limited.wait(1))
        bucket.level -= 1
        self._total.level -= 1
        self._forget()

    def _forget(self) -> None:
        while len(self._sources) > self._max_sources:  # the least recently seen first
            self._sources.popitem(last=False)

    def __len__(self) -> int:
        return len(self._sources)


def refusal(whose: str, wait: float) -> TooManyRequests:
    seconds = max(1, math.ceil(wait))
    return TooManyRequests(f"too many sign-in attempts {whose}: try again in {seconds} s", seconds)


class SignInLimits:
    """The sign-in limits the console checks: in Redis when ``client`` is given (cluster mode),
    else, and while Redis does not answer, in ``local``."""

    def __init__(
        self,
        local: SignInAttempts | None = None,
        client: aioredis.Redis | None = None,
        prefix: str = "bastion",
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.local = SignInAttempts() if local is None else local
        self._script = client.register_script(BUCKETS_LUA) if client is not None else None
        self._prefix = prefix
        self._clock = clock  # wall time, as every gateway shares it (NTP), like the quotas
        self.failures = 0
        self._down = False

    async def take(self, source: str) -> None:
        """Count one attempt from ``source``; ``TooManyRequests`` (nothing counted) over a limit."""
        if self._script is None:
            self.local.take(source)
            return
        local = self.local
        buckets = [
            RedisBucket(
                f"{self._prefix}:signin:source:{source}",
                local.burst,
                local.per_minute / 60,
                "take",
                1,
                SOURCE,
            ),
            RedisBucket(
                f"{self._prefix}:signin:total", local.total, local.total / 60, "take", 1, TOTAL
            ),
        ]
        try:
            index, wait = await run_buckets(self._script, buckets, self._clock())
        except (RedisError, OSError, TimeoutError):
            self.failures += 1
            if not self._down:
                self._down = True
                log.error("sign-in limits (Redis) unreachable: limiting per process meanwhile")
            local.take(source)
            return
        if self._down:
            self._down = False
            log.warning("sign-in limits (Redis) reachable again")
        if index:
            raise refusal(buckets[index - 1].refusal, wait)

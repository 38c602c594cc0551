"""Quotas in Redis (cluster mode): the same token buckets as ``quotas.py``, shared by every gateway.

Each bucket is a Redis hash (``level``, ``stamp``, ``cap``) under
``<prefix>:quota:<requests|tokens>:<principal|org>:<name>:<compartment>`` or
``<prefix>:throttle:<principal>:<lock>``. One Lua script does the whole decision server-side and
atomically: refill every bucket by the time elapsed, check them all, then take from all or from
none, and say how long to wait when one is spent. So a quota of N requests a minute allows N in
total, however the requests are spread over the gateways. Each write sets the key to expire
when the bucket would be full again: an idle full bucket costs nothing (as in memory).

Time is the gateway's clock (sent with each call), so gateways need synchronized clocks (NTP);
a clock behind the last writer refills nothing rather than a negative amount.

Redis down (or slower than :data:`BUDGET`): a restricted or critical compartment is refused with
503 ``quota_unavailable``, because a limit that cannot be enforced there must not be waived;
lower compartments fall back to this process's own buckets (each gateway then enforces the limit
alone, so N gateways allow at most N times it), counted in ``failures`` and logged once per
outage. Usage charged after a response while Redis is down is charged locally.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from bastion.config.models import Limits, Quotas
from bastion.errors import QuotaUnavailable, Throttled, TooManyRequests

from .quotas import MIN_RATE, QuotaBuckets, ThrottleHold

log = logging.getLogger("bastion.quotas")

BUDGET = 1.0  # seconds for one script call, retries included

# KEYS: buckets. ARGV[1]: now; then per bucket: capacity, rate (per second), mode, amount.
# Modes: "check" refuses when the level is not above zero (LLM tokens: usage is charged after
# the response); "take" refuses below `amount`, else takes it; "debit" takes, never refuses.
# Returns {0, "0"} when every bucket agreed, else {i, wait}: bucket i refused, retry in `wait` s.
BUCKETS_LUA = """
local now = tonumber(ARGV[1])
local levels = {}
for i = 1, #KEYS do
  local a = 2 + (i - 1) * 4
  local cap, rate = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local mode, amount = ARGV[a + 2], tonumber(ARGV[a + 3])
  local state = redis.call('HMGET', KEYS[i], 'level', 'stamp', 'cap')
  local level, stamp = tonumber(state[1]), tonumber(state[2])
  if level == nil or stamp == nil or tonumber(state[3]) ~= cap then
    level, stamp = cap, now
  end
  level = math.min(cap, level + math.max(0, now - stamp) * rate)
  levels[i] = level
  if mode == 'check' and level <= 0 then
    return {i, string.format('%.17g', (1 - level) / rate)}
  end
  if mode == 'take' and level < amount - 1e-9 then
    return {i, string.format('%.17g', (amount - level) / rate)}
  end
end
for i = 1, #KEYS do
  local a = 2 + (i - 1) * 4
  local cap, rate = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local level = levels[i]
  if ARGV[a + 2] ~= 'check' then
    level = level - tonumber(ARGV[a + 3])
  end
  redis.call('HSET', KEYS[i], 'level', string.format('%.17g', level),
             'stamp', string.format('%.17g', now), 'cap', ARGV[a])
  redis.call('PEXPIRE', KEYS[i], math.ceil((cap - level) / rate * 1000) + 1000)
end
return {0, '0'}
"""


class RedisBucket:
    """One bucket of a script call, and what to say if it refuses."""

    __slots__ = ("amount", "capacity", "key", "mode", "rate", "refusal")

    def __init__(
        self, key: str, capacity: float, rate: float, mode: str, amount: float, refusal: str
    ) -> None:
        self.key, self.capacity, self.rate = key, capacity, rate
        self.mode, self.amount, self.refusal = mode, amount, refusal


async def run_buckets(
    script: AsyncScript, buckets: Sequence[RedisBucket], now: float, budget: float = BUDGET
) -> tuple[int, float]:
    """One call of ``BUCKETS_LUA`` (registered as ``script``): ``(0, 0)`` when every bucket
    agreed, else ``(i, wait)`` for the 1-based bucket that refused. Raises ``RedisError``,
    ``OSError`` or ``TimeoutError`` (past ``budget`` seconds) when Redis does not answer."""
    args: list[str | float] = [repr(float(now))]
    for bucket in buckets:
        args += [repr(bucket.capacity), repr(bucket.rate), bucket.mode, repr(float(bucket.amount))]
    async with asyncio.timeout(budget):
        index, wait = await script(keys=[b.key for b in buckets], args=args)
    return int(index), float(wait)


class RedisQuotaBuckets:
    """:class:`~bastion.gateway.quotas.QuotaLedger` in Redis; ``local`` is the fallback."""

    def __init__(self, client: aioredis.Redis, prefix: str, budget: float = BUDGET) -> None:
        self._script = client.register_script(BUCKETS_LUA)
        self._prefix = prefix
        self._budget = budget
        self.local = QuotaBuckets()  # used only while Redis does not answer
        self.failures = 0
        self._down = False

    def _quota_buckets(
        self, quotas: Quotas, compartment: str, principal: str, org: str, mode: str, used: int
    ) -> list[RedisBucket]:
        """The buckets ``quotas`` define, in the order the in-memory buckets check them."""
        found: list[RedisBucket] = []
        scopes: list[tuple[str, str, Limits]] = [
            ("principal", principal, quotas.principal),
            ("org", org, quotas.org),
        ]
        for scope, name, limits in scopes:
            where = f"for {scope} {name!r} in compartment {compartment!r}"
            if limits.tokens_per_hour is not None:
                key = f"{self._prefix}:quota:tokens:{scope}:{name}:{compartment}"
                cap = float(limits.tokens_per_hour)
                found.append(
                    RedisBucket(key, cap, cap / 3600.0, mode, used, f"LLM tokens per hour {where}")
                )
            if limits.requests_per_minute is not None and mode == "check":
                key = f"{self._prefix}:quota:requests:{scope}:{name}:{compartment}"
                cap = float(limits.requests_per_minute)
                found.append(
                    RedisBucket(key, cap, cap / 60.0, "take", 1, f"requests per minute {where}")
                )
        return found

    async def _run(self, buckets: Sequence[RedisBucket], now: float) -> tuple[int, float]:
        return await run_buckets(self._script, buckets, now, self._budget)

    async def take(
        self,
        quotas: Quotas,
        compartment: str,
        principal: str,
        org: str,
        throttles: Sequence[ThrottleHold],
        strict: bool,
        now: float,
    ) -> None:
        """Throttle locks first (each its own call, as in memory), then every quota at once."""
        try:
            for hold in throttles:
                await self.throttle(hold.principal, hold.lock, hold.rate, now)
            await self.admit(quotas, compartment, principal, org, now)
        except (RedisError, OSError, TimeoutError):
            self._failed()
            if strict:
                raise QuotaUnavailable(
                    f"quotas for compartment {compartment!r} cannot be checked right now; "
                    "retry shortly"
                ) from None
            await self.local.take(quotas, compartment, principal, org, throttles, strict, now)
        else:
            self._recovered()

    async def admit(
        self, quotas: Quotas, compartment: str, principal: str, org: str, now: float
    ) -> None:
        """Take one request from every quota or from none; ``TooManyRequests`` if one is spent.
        Raises ``RedisError`` or ``TimeoutError`` when Redis does not answer."""
        buckets = self._quota_buckets(quotas, compartment, principal, org, "check", 0)
        if not buckets:
            return
        index, wait = await self._run(buckets, now)
        if index:
            raise TooManyRequests(
                f"quota exceeded: {buckets[index - 1].refusal}",
                retry_after=max(1, math.ceil(wait)),
            )

    async def throttle(self, principal: str, lock: str, rate: float, now: float) -> None:
        """One request from throttle lock ``lock``'s bucket (capacity 1: no bursts)."""
        key = f"{self._prefix}:throttle:{principal}:{lock}"
        bucket = RedisBucket(key, 1.0, max(rate, MIN_RATE) / 60.0, "take", 1, "")
        index, wait = await self._run([bucket], now)
        if index:
            raise Throttled(
                f"throttled: principal {principal!r} is held to {rate:g} requests per minute",
                retry_after=max(1, math.ceil(wait)),
                lock=lock,
            )

    async def charge(
        self, quotas: Quotas, compartment: str, principal: str, org: str, used: int, now: float
    ) -> None:
        """Debit ``used`` LLM tokens (may leave a bucket below zero)."""
        if used <= 0:
            return
        buckets = self._quota_buckets(quotas, compartment, principal, org, "debit", used)
        if buckets:
            await self._run(buckets, now)

    async def settle(
        self, quotas: Quotas, compartment: str, principal: str, org: str, used: int, now: float
    ) -> None:
        """:class:`QuotaLedger`: :meth:`charge`, locally if Redis does not answer."""
        try:
            await self.charge(quotas, compartment, principal, org, used, now)
        except (RedisError, OSError, TimeoutError):
            self._failed()
            self.local.charge(quotas, compartment, principal, org, used, now)
        else:
            self._recovered()

    def _failed(self) -> None:
        self.failures += 1
        if not self._down:
            self._down = True
            log.error(
                "quota buckets (Redis) unreachable: refusing restricted and critical "
                "compartments, per-process quotas for the others"
            )

    def _recovered(self) -> None:
        if self._down:
            self._down = False
            log.warning("quota buckets (Redis) reachable again")

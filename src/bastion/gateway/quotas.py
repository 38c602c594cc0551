"""Quotas: token buckets per principal and per org, per compartment, in this process's memory.

Two buckets per (scope, name, compartment): requests (refilled at ``requests_per_minute``) and
LLM tokens (refilled at ``tokens_per_hour``). A request takes one request token before it is
forwarded; its usage (tokens in + out) is charged when the response ends, so the token bucket
may go below zero and then refuses until it refills. A refusal says when to retry. Buckets live
in the gateway process (cluster mode keeps them in Redis: ``quotas_redis.py``, the same
semantics behind :class:`QuotaLedger`); idle full buckets are dropped.

A throttle lock (``bastion lock throttle``) adds one more bucket, per principal and lock, across
every model and compartment: ``rate`` requests per minute, one at a time (no bursts: a
throttle placed because of an attack must not let the next few requests straight through).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bastion.config.models import Limits, Quotas
from bastion.errors import Throttled, TooManyRequests

MAX_BUCKETS = 200_000
MIN_RATE = 1e-3  # requests per minute: a throttle never divides by zero
EPSILON = 1e-9


@dataclass(slots=True)
class Bucket:
    capacity: float
    rate: float  # tokens per second
    level: float
    stamp: float

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait(self, need: float) -> float:
        """Seconds until ``need`` tokens are available (0 if they are)."""
        return 0.0 if self.level >= need else (need - self.level) / self.rate


@dataclass(frozen=True, slots=True)
class ThrottleHold:
    """One active throttle lock on a principal: its id and its rate (requests per minute)."""

    principal: str
    lock: str
    rate: float


class QuotaLedger(Protocol):
    """What the gateway asks of its quotas: in this process (:class:`QuotaBuckets`) or in Redis
    (``RedisQuotaBuckets``, cluster mode), hence awaited. ``strict`` marks a restricted or
    critical compartment, where buckets that cannot be reached refuse rather than guess."""

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
        """Throttle locks first, then the quotas; raise ``Throttled`` or ``TooManyRequests``."""
        ...

    async def settle(
        self, quotas: Quotas, compartment: str, principal: str, org: str, used: int, now: float
    ) -> None:
        """Charge the LLM tokens a response used (it may leave a bucket below zero)."""
        ...


class QuotaBuckets:
    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str, str, str], Bucket] = {}

    def _bucket(
        self, key: tuple[str, str, str, str], per_window: int, window: float, now: float
    ) -> Bucket:
        bucket = self._buckets.get(key)
        if bucket is None or bucket.capacity != per_window:
            if len(self._buckets) >= MAX_BUCKETS:
                self._evict(now)
            bucket = Bucket(float(per_window), per_window / window, float(per_window), now)
            self._buckets[key] = bucket
        bucket.refill(now)
        return bucket

    def _evict(self, now: float) -> None:
        """Drop buckets that are full again: forgetting them changes nothing."""
        for key, bucket in list(self._buckets.items()):
            bucket.refill(now)
            if bucket.level >= bucket.capacity:
                del self._buckets[key]
        if len(self._buckets) >= MAX_BUCKETS:  # still full: oldest first
            for key in list(self._buckets)[: MAX_BUCKETS // 10]:
                del self._buckets[key]

    def _scopes(self, quotas: Quotas, principal: str, org: str) -> list[tuple[str, str, Limits]]:
        return [("principal", principal, quotas.principal), ("org", org, quotas.org)]

    def admit(self, quotas: Quotas, compartment: str, principal: str, org: str, now: float) -> None:
        """Take one request; raise ``TooManyRequests`` (with Retry-After) if a limit is spent."""
        taken: list[Bucket] = []
        for scope, name, limits in self._scopes(quotas, principal, org):
            if limits.tokens_per_hour is not None:
                tokens = self._bucket(
                    ("tokens", scope, name, compartment), limits.tokens_per_hour, 3600.0, now
                )
                if tokens.level <= 0:
                    self._refund(taken)
                    raise _refusal(
                        scope, name, compartment, "LLM tokens per hour", tokens.wait(1.0)
                    )
            if limits.requests_per_minute is not None:
                requests = self._bucket(
                    ("requests", scope, name, compartment), limits.requests_per_minute, 60.0, now
                )
                if requests.level < 1:
                    self._refund(taken)
                    raise _refusal(
                        scope, name, compartment, "requests per minute", requests.wait(1.0)
                    )
                requests.level -= 1
                taken.append(requests)

    def throttle(self, principal: str, lock: str, rate: float, now: float) -> None:
        """Take one request from the bucket of throttle lock ``lock`` on ``principal``; raise
        ``Throttled`` (with Retry-After) when it is spent. The bucket is the lock's own, so a
        new lock starts full and a released one leaves nothing behind that matters."""
        key = ("throttle", principal, lock, "")
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._evict(now)
            per_second = max(rate, MIN_RATE) / 60.0
            bucket = self._buckets[key] = Bucket(1.0, per_second, 1.0, now)
        bucket.refill(now)
        if bucket.level < 1 - EPSILON:  # a retry at exactly Retry-After must not miss by 1e-16
            raise Throttled(
                f"throttled: principal {principal!r} is held to {rate:g} requests per minute",
                retry_after=max(1, math.ceil(bucket.wait(1.0))),
                lock=lock,
            )
        bucket.level -= 1

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
        """:class:`QuotaLedger`: :meth:`throttle` for each lock, then :meth:`admit`."""
        for hold in throttles:
            self.throttle(hold.principal, hold.lock, hold.rate, now)
        self.admit(quotas, compartment, principal, org, now)

    async def settle(
        self, quotas: Quotas, compartment: str, principal: str, org: str, used: int, now: float
    ) -> None:
        """:class:`QuotaLedger`: :meth:`charge`."""
        self.charge(quotas, compartment, principal, org, used, now)

    @staticmethod
    def _refund(taken: list[Bucket]) -> None:
        for bucket in taken:
            bucket.level += 1

    def charge(
        self, quotas: Quotas, compartment: str, principal: str, org: str, used: int, now: float
    ) -> None:
        """Debit ``used`` LLM tokens after a response (may leave a bucket below zero)."""
        if used <= 0:
            return
        for scope, name, limits in self._scopes(quotas, principal, org):
            if limits.tokens_per_hour is not None:
                bucket = self._bucket(
                    ("tokens", scope, name, compartment), limits.tokens_per_hour, 3600.0, now
                )
                bucket.level -= used


def _refusal(scope: str, name: str, compartment: str, what: str, wait: float) -> TooManyRequests:
    return TooManyRequests(
        f"quota exceeded: {what} for {scope} {name!r} in compartment {compartment!r}",
        retry_after=max(1, math.ceil(wait)),
    )

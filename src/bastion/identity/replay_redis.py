"""The DPoP ``jti`` replay cache in Redis, shared by every gateway (cluster mode).

One atomic command per proof: ``SET <prefix>:jti:<digest> 1 NX PX <ttl>``. Redis answers
whether the key was new, and forgets it when the proof could no longer be accepted anyway, so
whichever gateway a replayed proof reaches, the second use finds the key. The key is a SHA-256
digest of ``<jkt>:<jti>``: a ``jti`` is attacker-chosen text (up to 256 characters), and a
digest keeps keys short, fixed-size and free of anything but hex.

If Redis does not answer within :data:`BUDGET`, ``add`` raises ``ReplayCacheUnavailable`` (503):
the token endpoint, enrollment and the admin API refuse the proof (fail closed), and so does the
gateway for restricted, critical and ``lock_view.strict`` compartments. For the others the
gateway falls back to its own in-memory cache (``DPoPVerifier.verify_async``): during the
outage a captured proof could be used once more on each other gateway, within its minute.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bastion.errors import ReplayCacheUnavailable

log = logging.getLogger("bastion.replay")

BUDGET = 1.0  # seconds for one check, retries included: a request never waits longer


class RedisReplayCache:
    """A :class:`~bastion.identity.replay.SharedReplayCache` on Redis."""

    def __init__(self, client: aioredis.Redis, prefix: str, budget: float = BUDGET) -> None:
        self._client = client
        self._prefix = f"{prefix}:jti:"
        self._budget = budget
        self.failures = 0  # checks refused because Redis did not answer (for tests, metrics)
        self._down = False  # log an outage once, and its end once

    def key(self, key: str) -> str:
        """The Redis key for a replay-cache key (``<jkt>:<jti>``)."""
        return self._prefix + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()

    async def add(self, key: str, ttl: float, now: float) -> bool:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        try:
            async with asyncio.timeout(self._budget):
                created = await self._client.set(
                    self.key(key), b"1", nx=True, px=max(1, math.ceil(ttl * 1000))
                )
        except (RedisError, OSError, TimeoutError):
            self.failures += 1
            if not self._down:
                self._down = True
                log.error(
                    "DPoP replay cache (Redis) unreachable: strict compartments and the token "
                    "endpoint refuse proofs, others use this process's cache, until it is back"
                )
            raise ReplayCacheUnavailable(
                "the DPoP replay cache is unavailable; retry with a new proof shortly"
            ) from None
        if self._down:
            self._down = False
            log.warning("DPoP replay cache (Redis) reachable again")
        return bool(created)

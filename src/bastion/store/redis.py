"""Redis in cluster mode: the clients a process uses, built once in ``create_app``.

Redis holds only what must be shared and fast (the epoch fan-out, the DPoP replay cache,
token buckets); PostgreSQL stays the truth. Timeouts are short: a Redis that does not answer is
a fault the callers handle (serve from the last snapshot, refuse strict compartments), never a
request left hanging.
"""

from __future__ import annotations

import redis
import redis.asyncio as aioredis

EPOCH_CHANNEL = "epoch"  # "<prefix>:epoch": state changes: the new epoch, published after commit
TIMEOUT = 0.5  # seconds, for connecting and for each command


def async_client(url: str) -> aioredis.Redis:
    """For the event loop: the hot path and the subscriber."""
    return aioredis.Redis.from_url(
        url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT, health_check_interval=5
    )


def sync_client(url: str) -> redis.Redis:
    """For worker threads (a store transaction that just committed publishes from there)."""
    return redis.Redis.from_url(url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)

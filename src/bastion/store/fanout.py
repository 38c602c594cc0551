"""The state epoch over Redis pub/sub: a committed change reaches every gateway at once.

PostgreSQL stays the truth. A transaction that bumped the epoch publishes the new value after it
committed (``EpochPublisher``, hooked on ``Store.on_epoch``); each gateway's ``EpochSubscriber``
turns a message into ``StateSync.nudge`` and the gateway re-reads the epoch from the database.
A message says only "look now": a lost, forged or replayed one costs one cheap read, never a
wrong snapshot. Redis down loses nothing either: every gateway still polls the epoch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import redis
import redis.asyncio as aioredis

from bastion.errors import ConfigError
from bastion.store.redis import EPOCH_CHANNEL, TIMEOUT, async_client, sync_client

log = logging.getLogger("bastion.fanout")

PUBLISH_BACKOFF = 5.0  # seconds without publishing after a failure: a dead Redis costs no stalls
RECONNECT_MIN = 0.25  # subscriber reconnect delay, doubling up to RECONNECT_MAX
RECONNECT_MAX = 5.0
_FAULTS = (redis.exceptions.RedisError, OSError, asyncio.TimeoutError)


def epoch_channel(prefix: str) -> str:
    """The pub/sub channel of one Bastion deployment (several may share a Redis)."""
    return f"{prefix}:{EPOCH_CHANNEL}"


def checked_url(url: str) -> str:
    """Fail at startup, not in a background task, on a URL redis-py cannot use (a bad port);
    the error never shows the URL, which may hold a password."""
    try:
        sync_client(url).close()
    except ValueError:
        raise ConfigError(
            "BASTION_REDIS_URL", ["not a usable Redis URL (not shown here)"]
        ) from None
    return url


class EpochPublisher:
    """``Store.on_epoch`` in cluster mode. Runs in the committing thread, so it is bounded: a
    failure is logged once per outage, counted, and then publishing pauses for
    ``PUBLISH_BACKOFF`` seconds (the gateways' poll carries the change meanwhile)."""

    def __init__(
        self, url: str, prefix: str, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._client = sync_client(checked_url(url))
        self.channel = epoch_channel(prefix)
        self._clock = clock
        self._paused_until = 0.0
        self.down = False  # in an outage: logged when it starts and when it ends, not between
        self.failures = 0
        self.published = 0

    def __call__(self, epoch: int) -> None:
        if self._clock() < self._paused_until:
            self.failures += 1
            return
        try:
            self._client.publish(self.channel, str(epoch))
        except _FAULTS as exc:
            if not self.down:
                log.warning(
                    "could not publish state changes on Redis (%s); gateways will see them "
                    "at their next poll",
                    type(exc).__name__,
                )
            self.down = True
            self.failures += 1
            self._paused_until = self._clock() + PUBLISH_BACKOFF
            return
        if self.down:
            log.info("publishing state changes on Redis again")
            self.down = False
        self.published += 1

    def close(self) -> None:
        self._client.close()


class Subscriber:
    """Listens on one channel and calls ``on_message(data)`` for each message, and
    ``on_connect()`` after each (re)connect, since messages sent while disconnected are gone.
    Reconnects by itself with bounded backoff; an outage is logged once."""

    def __init__(self, url: str, channel: str, what: str = "Redis fan-out") -> None:
        self._url = checked_url(url)
        self.channel = channel
        self._what = what
        self.connected = False
        self.outages = 0

    async def run(
        self, on_connect: Callable[[], object], on_message: Callable[[bytes], object]
    ) -> None:
        delay = RECONNECT_MIN
        while True:
            client = async_client(self._url)
            try:
                await self._listen(client, on_connect, on_message)
            except _FAULTS as exc:
                if self.connected:  # a fresh outage: retry quickly first
                    delay = RECONNECT_MIN
                if self.connected or self.outages == 0:
                    self.outages += 1
                    log.warning("%s unavailable (%s)", self._what, type(exc).__name__)
                self.connected = False
            finally:
                await _close(client)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    async def _listen(
        self,
        client: aioredis.Redis,
        on_connect: Callable[[], object],
        on_message: Callable[[bytes], object],
    ) -> None:
        pubsub = client.pubsub()
        try:
            async with asyncio.timeout(TIMEOUT * 2):
                await pubsub.subscribe(self.channel)
            if self.outages and not self.connected:
                log.info("%s connected again", self._what)
            self.connected = True
            result = on_connect()
            if asyncio.iscoroutine(result):
                await result
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None and message.get("type") == "message":
                    data = message.get("data")
                    on_message(data if isinstance(data, bytes) else b"")
        finally:
            await _close(pubsub)


class EpochSubscriber:
    """The epoch channel: any message, or a reconnect, means "read the epoch now"."""

    def __init__(self, url: str, prefix: str) -> None:
        self._subscriber = Subscriber(
            url, epoch_channel(prefix), "Redis fan-out (polling the epoch meanwhile)"
        )
        self.channel = self._subscriber.channel

    @property
    def connected(self) -> bool:
        return self._subscriber.connected

    @property
    def outages(self) -> int:
        return self._subscriber.outages

    async def run(self, on_message: Callable[[], None]) -> None:
        await self._subscriber.run(on_message, lambda _data: on_message())


async def _close(closable: aioredis.Redis | aioredis.client.PubSub) -> None:
    """Close quietly: a connection to a Redis that went away may fail to close."""
    try:
        async with asyncio.timeout(TIMEOUT):
            await closable.aclose()
    except (*_FAULTS, RuntimeError):
        pass

"""Risk scores in cluster mode: the worker's engine scores, every gateway enforces.

The detection engine runs once per deployment, in the worker; the gateways hand ``context.risk``
to Cedar on every request from their own in-memory board (no I/O on the hot path). The worker
publishes each step's changed entries (``RiskPublisher``): it writes them to the hash
``<prefix>:risk`` (the current board, for gateways that start or reconnect) and announces them on
the channel of the same name; each gateway's ``RiskSubscriber`` loads the hash on connect and
applies announcements as they come. Redis down: the gateways keep the scores they had (decaying
as usual) and the worker publishes again when it is back, its whole board first.

What arrives from Redis is checked like any input: an entry that is not
``[kind, name, score, at]`` with a known kind, a name of at most ``MAX_NAME`` characters and
finite numbers is skipped and counted, never applied.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis

from bastion.detect.risk import KINDS, Entry, RiskBoard
from bastion.store.fanout import PUBLISH_BACKOFF, Subscriber, checked_url
from bastion.store.redis import async_client, sync_client

log = logging.getLogger("bastion.fanout")

RISK_KEY = "risk"  # "<prefix>:risk": the hash of current entries and the channel of changes
MAX_NAME = 256
MAX_MESSAGE = 5_000  # entries in one announcement; a bigger change goes out in several
RESYNC_EVERY = 600.0  # seconds: the worker rewrites the whole hash (drops entries pruned since)
_FAULTS = (redis.exceptions.RedisError, OSError, TimeoutError)


def risk_key(prefix: str) -> str:
    return f"{prefix}:{RISK_KEY}"


def _field(kind: str, name: str) -> str:
    return f"{kind}\x1f{name}"


def parse_entry(raw: Any) -> Entry | None:
    """One ``[kind, name, score, at]`` as published, or None if it is not one."""
    if not isinstance(raw, list) or len(raw) != 4:
        return None
    kind, name, score, at = raw
    if kind not in KINDS or not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
        return None
    numbers = (score, at)
    if not all(isinstance(n, int | float) and not isinstance(n, bool) for n in numbers):
        return None
    if not all(math.isfinite(n) for n in numbers) or not 0 <= score <= 100:
        return None
    return kind, name, float(score), float(at)


class RiskPublisher:
    """Called from the detection engine's thread after each step; bounded like the epoch
    publisher: a failure pauses publishing for ``PUBLISH_BACKOFF`` seconds, and the next
    publish after an outage (or every ``RESYNC_EVERY`` seconds) rewrites the whole board."""

    def __init__(
        self, url: str, prefix: str, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._client = sync_client(checked_url(url))
        self.key = risk_key(prefix)
        self._clock = clock
        self._paused_until = 0.0
        self._synced_at: float | None = None  # when the whole board was last written
        self.down = False
        self.failures = 0
        self.published = 0

    def __call__(self, board: RiskBoard) -> None:
        changed = board.drain()
        now = self._clock()
        whole = self._synced_at is None or now - self._synced_at >= RESYNC_EVERY
        if not changed and not whole:
            return
        if now < self._paused_until:
            self._synced_at = None  # what changed meanwhile goes out with the whole board
            return
        entries = board.entries() if whole else changed
        try:
            self._write(entries, replace=whole)
        except _FAULTS as exc:
            if not self.down:
                log.warning(
                    "could not publish risk scores on Redis (%s); gateways keep their last ones",
                    type(exc).__name__,
                )
            self.down, self._synced_at = True, None
            self.failures += 1
            self._paused_until = now + PUBLISH_BACKOFF
            return
        if self.down:
            log.info("publishing risk scores on Redis again")
            self.down = False
        if whole:
            self._synced_at = now
        self.published += len(entries)

    def _write(self, entries: Sequence[Entry], *, replace: bool) -> None:
        pipe = self._client.pipeline(transaction=True)
        if replace:
            pipe.delete(self.key)
        for start in range(0, len(entries), MAX_MESSAGE):
            chunk = entries[start : start + MAX_MESSAGE]
            fields = {_field(k, name): orjson.dumps([score, at]) for k, name, score, at in chunk}
            pipe.hset(self.key, mapping=fields)  # type: ignore[arg-type]
            pipe.publish(self.key, orjson.dumps([list(entry) for entry in chunk]))
        pipe.execute()

    def close(self) -> None:
        self._client.close()


class RiskSubscriber:
    """Keeps a gateway's board in step with the worker's (see the module docstring)."""

    def __init__(self, url: str, prefix: str) -> None:
        self.key = risk_key(prefix)
        self._url = url
        self._subscriber = Subscriber(url, self.key, "Redis risk feed (keeping the last scores)")
        self.applied = 0
        self.rejected = 0

    @property
    def connected(self) -> bool:
        return self._subscriber.connected

    async def run(self, board: RiskBoard) -> None:
        async def load() -> None:
            client: aioredis.Redis = async_client(self._url)
            try:
                current = await client.hgetall(self.key)
            finally:
                await client.aclose()
            for field, value in current.items():
                text = field.decode(errors="replace") if isinstance(field, bytes) else str(field)
                kind, _, name = text.partition("\x1f")
                try:
                    score, at = orjson.loads(value)
                except (orjson.JSONDecodeError, TypeError, ValueError):
                    self.rejected += 1
                    continue
                self._apply(board, [kind, name, score, at])

        def announced(data: bytes) -> None:
            try:
                entries = orjson.loads(data)
            except orjson.JSONDecodeError:
                self.rejected += 1
                return
            if not isinstance(entries, list) or len(entries) > MAX_MESSAGE:
                self.rejected += 1
                return
            for raw in entries:
                self._apply(board, raw)

        await self._subscriber.run(load, announced)

    def _apply(self, board: RiskBoard, raw: Any) -> None:
        entry = parse_entry(raw)
        if entry is None:
            self.rejected += 1
            return
        board.put(*entry)
        self.applied += 1

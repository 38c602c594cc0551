"""The lifecycle sweep: a small background task, off the hot path.

Once at startup, before the process serves (the lifespan awaits it, so no request or test
races a first sweep), then every ``interval`` seconds, it opens the access reviews that are due and
records principals that went dormant, on a worker thread, against the current snapshot's config.
When it changed anything the gateways must see, it reloads this process's snapshot at once (other
processes follow the state epoch). A failed sweep is logged and retried at the next interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import anyio

from bastion.background import finish_on_cancel
from bastion.policy.holder import SnapshotHolder
from bastion.policy.snapshot import Snapshot

from .dormancy import DormancyService
from .reviews import ReviewService

log = logging.getLogger("bastion.lifecycle")
INTERVAL = 60.0


class LifecycleSweeper:
    def __init__(
        self,
        reviews: ReviewService,
        dormancy: DormancyService,
        holder: SnapshotHolder,
        on_change: Callable[[], Awaitable[object]],
        *,
        interval: float = INTERVAL,
    ) -> None:
        self._reviews = reviews
        self._dormancy = dormancy
        self._holder = holder
        self._on_change = on_change
        self._interval = interval

    async def once(self) -> None:
        """One sweep now (the tests call this to avoid waiting for the interval)."""
        snapshot = self._holder.current
        if snapshot is None:
            return
        if await finish_on_cancel(anyio.to_thread.run_sync(self._sweep, snapshot)):
            await finish_on_cancel(self._on_change())

    def _sweep(self, snapshot: Snapshot) -> bool:
        opened = self._reviews.open_due(snapshot.config)
        for review in opened:
            log.info("opened access review %s for org %s", review.id, review.org)
        # Look ahead three intervals: a stale view is refreshed before it could mislead.
        result = self._dormancy.sweep(snapshot.config, snapshot, lookahead=3 * self._interval)
        for name in result.disabled:
            log.warning("principal %s is dormant and disabled", name)
        return bool(opened) or result.refreshed

    async def safely(self) -> None:
        """One sweep; a failure is logged and left to the next interval."""
        try:
            await self.once()
        except Exception as exc:  # logged without a traceback: it may carry row values
            log.error(
                "lifecycle sweep failed (%s); retrying at the next interval",
                type(exc).__name__,
            )

    async def run(self) -> None:
        """Every interval after the startup sweep (``safely``, awaited by the lifespan)."""
        while True:
            await asyncio.sleep(self._interval)
            await self.safely()

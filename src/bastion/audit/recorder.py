"""The audit recorder: the hot path hands events to a queue; a writer group-commits them.

``record`` never blocks and never does I/O. The writer drains the queue every few milliseconds
and appends the batch in one transaction on a worker thread. Admin actions made outside the
server (the CLI) are written synchronously with ``write_now``. The queue is bounded; when it is
full, events are counted as dropped (and ``audit: required`` compartments — next issue — refuse).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import anyio

from bastion.store import Store
from bastion.store import events as event_rows

from .events import Event

log = logging.getLogger("bastion.audit")


def event_row(event: Event) -> tuple[str, str, float, str]:
    return (event.id, event.event_name, event.time, event.canonical().decode())


def write_now(store: Store, events: Sequence[Event]) -> None:
    """Append events synchronously (CLI and tests)."""
    with store.begin() as conn:
        event_rows.append(conn, [event_row(event) for event in events])


class AuditRecorder:
    def __init__(self, store: Store, *, interval: float = 0.005, max_queue: int = 100_000) -> None:
        self._store = store
        self._interval = interval
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=max_queue)
        self._pending: list[Event] = []  # taken off the queue, not yet written
        self.written = 0
        self.dropped = 0
        self.failures = 0

    def record(self, event: Event) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            log.error("audit queue full; event dropped", extra={"event": event.event_name})

    async def run(self) -> None:
        """Drain forever (cancelled at shutdown, after a final ``flush``)."""
        while True:
            self._pending.append(await self._queue.get())
            await asyncio.sleep(self._interval)  # gather the group commit
            await self.flush()

    async def flush(self) -> None:
        """Write everything recorded so far (also called once more at shutdown)."""
        self._pending.extend(self._drain())
        batch, self._pending = self._pending, []
        if batch:
            await self._write(batch)

    def _drain(self) -> list[Event]:
        batch: list[Event] = []
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    async def _write(self, batch: list[Event]) -> None:
        for attempt in range(3):
            try:
                await anyio.to_thread.run_sync(write_now, self._store, batch)
            except Exception:
                self.failures += 1
                log.exception("audit write failed (attempt %d)", attempt + 1)
                await asyncio.sleep(0.05 * (attempt + 1))
            else:
                self.written += len(batch)
                return
        self.dropped += len(batch)
        log.error("audit batch of %d events lost after retries", len(batch))

"""The audit recorder: the hot path hands events over; one writer group-commits them.

``record`` never blocks and does no I/O (best-effort events). ``commit`` waits until the event is
durable in the log, for compartments marked ``audit: required``: if the log cannot record, it
raises ``AuditUnavailable`` and the caller refuses the request; while the integrity watch holds
the stored log tampered, it raises ``AuditTampered`` at once. It waits at most
``commit_timeout`` seconds: a database that hangs instead of refusing (frozen, partitioned, a
lock held) refuses the caller too, rather than holding it as long as the database hangs; the
event may still be written once the database answers. The writer takes whatever has
queued up, appends it to the Merkle log in one transaction on a worker thread, and meanwhile the
next batch gathers — group commit without a timer. Events made outside the server (the CLI)
are appended synchronously by the services, in the transaction of the change they record.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

import anyio

from bastion.background import finish_on_cancel, wait_set
from bastion.errors import Unavailable
from bastion.logs import Outage
from bastion.store import Store

from .events import Event
from .log import AuditLog

log = logging.getLogger("bastion.audit")

COMMIT_TIMEOUT = 5.0  # seconds ``commit`` waits for its event to be durable before refusing


class AuditUnavailable(Unavailable):
    code = "audit_unavailable"


class AuditTampered(AuditUnavailable):
    """The stored log failed its integrity check: a durable record in it proves nothing."""

    code = "audit_integrity"


class IntegrityState(Protocol):
    """What the recorder asks of the integrity watch (``audit.integrity.IntegrityWatch``)."""

    @property
    def tampered(self) -> bool: ...


class AuditRecorder:
    def __init__(
        self,
        store: Store,
        audit_log: AuditLog,
        *,
        linger: float = 0.0,
        max_queue: int = 100_000,
        max_batch: int = 2_000,
        integrity: IntegrityState | None = None,
        commit_timeout: float = COMMIT_TIMEOUT,
    ) -> None:
        self._store = store
        self._commit_timeout = commit_timeout
        self._integrity = integrity
        self._log = audit_log
        self._linger = linger
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[Event, asyncio.Future[None] | None]] = asyncio.Queue(
            maxsize=max_queue
        )
        self._pending: list[tuple[Event, asyncio.Future[None] | None]] = []
        self._writing = asyncio.Lock()
        self._urgent = asyncio.Event()
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self.healthy = True
        self._outage = Outage(log, "audit write")

    def record(self, event: Event) -> None:
        """Queue a best-effort event."""
        try:
            self._queue.put_nowait((event, None))
        except asyncio.QueueFull:
            self.dropped += 1
            log.error("audit queue full; event dropped", extra={"event": event.event_name})

    async def commit(self, event: Event) -> None:
        """Queue an event and wait until it is durable; ``AuditUnavailable`` if it cannot be."""
        if self._integrity is not None and self._integrity.tampered:
            raise AuditTampered(
                "the audit log failed its integrity check; refusing until an operator "
                "acknowledges it"
            )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((event, future))
        except asyncio.QueueFull:
            raise AuditUnavailable("the audit log is overloaded; refusing") from None
        self._urgent.set()
        try:
            async with asyncio.timeout(self._commit_timeout):
                await asyncio.shield(future)
        except TimeoutError:
            # The write goes on; whatever it ends with is nobody's to raise any more.
            future.add_done_callback(_settled)
            raise AuditUnavailable(
                f"the audit log did not confirm the record within {self._commit_timeout:g}s; "
                "refusing"
            ) from None

    async def run(self) -> None:
        """Write batches forever (cancelled at shutdown, after which ``flush`` runs once more)."""
        while True:
            first = await self._queue.get()
            self._pending.append(first)
            if self._linger and first[1] is None:
                # Best-effort events may wait a little to share a commit; a durable one
                # (``commit``) cuts the wait short, so audit-required latency is unaffected.
                await wait_set(self._urgent, self._linger)
            self._urgent.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write everything queued so far, after any write already in flight."""
        async with self._writing:
            while self._pending or not self._queue.empty():
                while not self._queue.empty() and len(self._pending) < self._max_batch:
                    self._pending.append(self._queue.get_nowait())
                batch, self._pending = self._pending, []
                await self._write(batch)

    def _append(self, events: list[Event]) -> None:
        with self._store.begin() as conn:
            self._log.append(conn, events)

    async def _write(self, batch: list[tuple[Event, asyncio.Future[None] | None]]) -> None:
        events = [event for event, _ in batch]
        for attempt in range(3):
            try:
                await finish_on_cancel(anyio.to_thread.run_sync(self._append, events))
            except Exception as exc:
                self.failures += 1
                self.healthy = False
                self._outage.failed(exc, "retrying each batch three times")
                await asyncio.sleep(0.05 * (attempt + 1))
            else:
                self.written += len(events)
                self._outage.recovered()
                self.healthy = True
                for _, future in batch:
                    if future is not None and not future.done():
                        future.set_result(None)
                return
        lost = sum(1 for _, future in batch if future is None)
        self.dropped += lost
        if lost:  # audit-required events are not lost: their callers are refused below
            log.critical(
                "AUDIT GAP: %d best-effort events could not be recorded",
                lost,
                extra={"count": lost},
            )
        for _, future in batch:
            if future is not None and not future.done():
                future.set_exception(AuditUnavailable("the audit log cannot record; refusing"))


def _settled(future: asyncio.Future[None]) -> None:
    """Retrieve the outcome of a commit its caller stopped waiting for (no "never retrieved")."""
    if not future.cancelled():
        future.exception()

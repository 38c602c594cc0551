"""Signing checkpoints while the log grows: at most one every few seconds, never backwards."""

from __future__ import annotations

import asyncio
import logging

import anyio

from bastion.errors import Conflict
from bastion.store import Store
from bastion.store.events import CheckpointRow

from .log import AuditLog

log = logging.getLogger("bastion.audit")


class Checkpointer:
    def __init__(self, store: Store, audit: AuditLog, *, interval: float = 2.0) -> None:
        self._store = store
        self._audit = audit
        self._interval = interval
        self.refused: str | None = None

    def _sign(self) -> CheckpointRow | None:
        with self._store.begin() as conn:
            return self._audit.checkpoint(conn)

    async def once(self) -> CheckpointRow | None:
        """Sign a checkpoint now if the log grew; refusals are logged loudly, never raised."""
        try:
            return await anyio.to_thread.run_sync(self._sign)
        except Conflict as refusal:
            if refusal.message != self.refused:
                log.critical("AUDIT LOG INCONSISTENT: %s", refusal.message)
            self.refused = refusal.message
        except Exception:
            log.exception("could not sign an audit checkpoint")
        return None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.once()

"""Signing checkpoints while the log grows: at most one every few seconds, never backwards, and
never while the integrity watch holds the log tampered."""

from __future__ import annotations

import asyncio
import logging

import anyio

from bastion.background import finish_on_cancel
from bastion.errors import Conflict
from bastion.logs import Outage
from bastion.store import Store
from bastion.store.events import CheckpointRow

from .log import AuditLog
from .recorder import IntegrityState

log = logging.getLogger("bastion.audit")


class Checkpointer:
    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        *,
        interval: float = 2.0,
        integrity: IntegrityState | None = None,
    ) -> None:
        self._store = store
        self._audit = audit
        self._interval = interval
        self._integrity = integrity
        self.refused: str | None = None
        self._outage = Outage(log, "signing an audit checkpoint")

    def _sign(self) -> CheckpointRow | None:
        with self._store.begin() as conn:
            return self._audit.checkpoint(conn)

    async def once(self) -> CheckpointRow | None:
        """Sign a checkpoint now if the log grew; refusals are logged loudly, never raised. The
        watch's state is asked first: it knows before the database mark is written, and still
        knows if someone clears that mark without acknowledging."""
        if self._integrity is not None and self._integrity.tampered:
            self._refuse("refusing to sign: the audit log failed its integrity check")
            return None
        try:
            signed = await finish_on_cancel(anyio.to_thread.run_sync(self._sign))
        except Conflict as refusal:
            self._refuse(refusal.message)
        except Exception as exc:
            self._outage.failed(exc)
        else:
            self._outage.recovered()
            return signed
        return None

    def _refuse(self, message: str) -> None:
        if message != self.refused:
            log.critical("AUDIT LOG INCONSISTENT: %s", message)
        self.refused = message

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.once()

"""Admin API routes for the audit log: the latest checkpoint, proofs, receipts, event ranges,
and the running server's integrity check (``GET /v1/audit/integrity``).

Sizes and hashes are those of signed checkpoints, so what these routes return can be checked
offline with ``bastion-verify`` and the log's verifier key.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Query

from bastion.audit.integrity import IntegrityWatch
from bastion.audit.log import AuditLog
from bastion.audit.receipt import make_receipt
from bastion.errors import BadRequest, NotFound
from bastion.store import Store
from bastion.store import events as rows
from bastion.store.events import CheckpointRow

MAX_RANGE = 1000


def _b64(items: list[bytes]) -> list[str]:
    return [base64.b64encode(item).decode() for item in items]


class AuditRoutes:
    def __init__(
        self, store: Store, audit: AuditLog, integrity: IntegrityWatch | None = None
    ) -> None:
        self._store = store
        self._audit = audit
        self._integrity = integrity

    def _latest(self) -> CheckpointRow:
        with self._store.read() as conn:
            latest = rows.latest_checkpoint(conn)
        if latest is None:
            raise NotFound("no checkpoint has been signed yet")
        return latest

    def checkpoint(self) -> dict[str, Any]:
        latest = self._latest()
        return {
            "origin": self._audit.origin,
            "size": latest.size,
            "root": base64.b64encode(latest.root).decode(),
            "note": latest.note,
            "verifier_key": self._audit.signer.verifier.text,
        }

    def _tree_size(self, tree_size: int | None) -> CheckpointRow:
        """The checkpoint a proof is made against: the latest, or the one of ``tree_size``."""
        latest = self._latest()
        if tree_size is None or tree_size == latest.size:
            return latest
        with self._store.read() as conn:
            for row in rows.checkpoints(conn):
                if row.size == tree_size:
                    return row
        raise NotFound(f"no signed checkpoint of size {tree_size}")

    def inclusion(self, event_id: str, tree_size: int | None) -> dict[str, Any]:
        cp = self._tree_size(tree_size)
        with self._store.read() as conn:
            row = rows.by_id(conn, event_id)
            if row is None:
                raise NotFound(f"no audit event {event_id[:40]!r}")
            if row.idx >= cp.size:
                raise NotFound(f"event {row.idx} is not yet in checkpoint {cp.size}; retry soon")
            proof = self._audit.inclusion(conn, row.idx, cp.size)
        return make_receipt(
            leaf=row.leaf.encode(),
            index=row.idx,
            tree_size=cp.size,
            inclusion=proof,
            checkpoint=cp.note,
        )

    def consistency(self, first: int, second: int) -> dict[str, Any]:
        if not 0 <= first <= second:
            raise BadRequest("need 0 <= from <= to")
        with self._store.read() as conn:
            proof = self._audit.consistency(conn, first, second)
        return {"from": first, "to": second, "proof": _b64(proof)}

    def events(self, start: int, end: int) -> dict[str, Any]:
        if not 0 <= start < end or end - start > MAX_RANGE:
            raise BadRequest(f"need 0 <= start < end and at most {MAX_RANGE} events per page")
        with self._store.read() as conn:
            found = [row for row in rows.after(conn, start - 1, end - start) if row.idx < end]
        return {
            "start": start,
            "end": end,
            "events": [
                {
                    "index": row.idx,
                    "id": row.id,
                    "name": row.name,
                    "time": row.time,
                    "leaf": row.leaf,
                    "event": orjson.loads(row.body),
                }
                for row in found
            ],
        }

    def register(self, api: FastAPI, reader: Callable[..., Awaitable[Any]]) -> None:
        """Add the routes; every one depends on ``reader`` (authentication + Cedar)."""
        needs = [Depends(reader)]

        @api.get("/v1/audit/checkpoint", summary="The latest signed checkpoint", dependencies=needs)
        def checkpoint() -> dict[str, Any]:
            return self.checkpoint()

        @api.get(
            "/v1/audit/proofs/inclusion",
            summary="A receipt: inclusion proof of one event",
            dependencies=needs,
        )
        def inclusion(
            event_id: Annotated[str, Query(min_length=1, max_length=64)],
            tree_size: Annotated[int | None, Query(ge=1)] = None,
        ) -> dict[str, Any]:
            return self.inclusion(event_id, tree_size)

        @api.get(
            "/v1/audit/proofs/consistency",
            summary="Consistency proof between two sizes",
            dependencies=needs,
        )
        def consistency(
            first: Annotated[int, Query(alias="from", ge=0)],
            second: Annotated[int, Query(alias="to", ge=0)],
        ) -> dict[str, Any]:
            return self.consistency(first, second)

        @api.get(
            "/v1/audit/events", summary="Events by leaf index, [start, end)", dependencies=needs
        )
        def events(
            start: Annotated[int, Query(ge=0)],
            end: Annotated[int, Query(ge=1)],
        ) -> dict[str, Any]:
            return self.events(start, end)

        integrity = self._integrity
        if integrity is not None:

            @api.get(
                "/v1/audit/integrity",
                summary="The running server's tamper check of the stored log",
                dependencies=needs,
            )
            def integrity_status() -> dict[str, Any]:
                return integrity.status()

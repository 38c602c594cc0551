"""The append-only Merkle log over audit events, stored in the database.

``append`` runs inside the caller's transaction, so an admin change and its event commit together.
It serializes appenders (``take_append_lock``), reads the tree size, extends the frontier, and
writes the events with their leaf index, their commitment, and every complete subtree node the
appends completed — history is never rehashed. The frontier is cached per process and reused
only when the append counter shows no other append since, so another process's appends (or a
rolled-back one of ours) are never missed.

Proofs and roots are read from the stored nodes (``NodeSource``); checkpoints are signed C2SP
notes over (origin, size, root), and the log refuses to sign one that goes backwards.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from bastion.errors import Conflict, NotFound
from bastion.store import events as rows
from bastion.store import integrity as tamper_rows
from bastion.store.events import CheckpointRow, EventRow

from .checkpoint import Checkpoint, sign_checkpoint
from .commitment import Committer, canonical
from .events import Event
from .merkle import Frontier, consistency_proof_at, inclusion_proof_at, leaf_hash, subtree_root
from .note import Signer


class StoredNodes:
    """``NodeSource`` over the ``audit_nodes`` table, on one connection."""

    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    def node(self, level: int, index: int) -> bytes:
        digest = rows.node(self._conn, level, index)
        if digest is None:
            raise NotFound(f"audit tree node ({level}, {index}) is missing")
        return digest


def frontier_at(conn: sa.Connection, size: int) -> Frontier:
    """Rebuild the frontier of a tree of ``size`` leaves from its stored nodes (one per set bit)."""
    hashes: list[str] = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            hashes.append(StoredNodes(conn).node(level, start >> level).hex())
            start += 1 << level
    return Frontier.from_state({"size": size, "hashes": hashes})


@dataclass(frozen=True, slots=True)
class TreeHead:
    size: int
    root: bytes


class AuditLog:
    def __init__(self, committer: Committer, signer: Signer, origin: str) -> None:
        self.committer = committer
        self.signer = signer
        self.origin = origin
        self._cache: Frontier | None = None
        self._token = -1
        self._cache_lock = threading.Lock()

    # -- appending ------------------------------------------------------------------------------

    def _frontier(self, conn: sa.Connection, counter: int) -> Frontier:
        """The frontier to extend. The cached one is valid only if the append counter moved by
        exactly our own increment since we cached it: then nobody else appended and our last
        append committed (a rolled-back one leaves the counter behind)."""
        with self._cache_lock:
            cached, token = self._cache, self._token
        if cached is not None and token == counter - 1:
            return Frontier.from_state(cached.to_state())
        return frontier_at(conn, rows.size(conn))

    def append(self, conn: sa.Connection, events: Sequence[Event]) -> list[int]:
        """Append ``events`` in order inside the caller's transaction; returns their indices.

        The process-local frontier cache is updated optimistically; if the transaction is rolled
        back, the next append sees the stored last leaf differ and rebuilds from the table."""
        if not events:
            return []
        counter = rows.take_append_lock(conn)
        frontier = self._frontier(conn, counter)
        new_rows: list[EventRow] = []
        nodes: list[tuple[int, int, bytes]] = []
        for event in events:
            record = event.record()
            leaf = self.committer.leaf(record)
            index = frontier.size
            nodes.extend(frontier.append(leaf_hash(leaf)))
            new_rows.append(
                EventRow(
                    idx=index,
                    id=event.id,
                    name=event.event_name,
                    time=event.time,
                    body=canonical(record).decode(),
                    leaf=leaf.decode(),
                )
            )
        rows.insert(conn, new_rows)
        rows.insert_nodes(conn, nodes)
        with self._cache_lock:
            self._cache, self._token = frontier, counter
        return [row.idx for row in new_rows]

    # -- reading --------------------------------------------------------------------------------

    def head(self, conn: sa.Connection) -> TreeHead:
        size = rows.size(conn)
        return TreeHead(size, subtree_root(StoredNodes(conn), 0, size))

    def root_at(self, conn: sa.Connection, size: int) -> bytes:
        current = rows.size(conn)
        if not 0 <= size <= current:
            raise NotFound(f"the log has {current} entries; no tree of size {size}")
        return subtree_root(StoredNodes(conn), 0, size)

    def inclusion(self, conn: sa.Connection, index: int, size: int) -> list[bytes]:
        current = rows.size(conn)
        if not 0 <= index < size <= current:
            raise NotFound(f"no entry {index} in a tree of size {size} (the log has {current})")
        return inclusion_proof_at(StoredNodes(conn), index, size)

    def consistency(self, conn: sa.Connection, old_size: int, size: int) -> list[bytes]:
        current = rows.size(conn)
        if not 0 <= old_size <= size <= current:
            raise NotFound(f"no consistency proof from {old_size} to {size} (log: {current})")
        return consistency_proof_at(StoredNodes(conn), old_size, size)

    # -- checkpoints ----------------------------------------------------------------------------

    def checkpoint(self, conn: sa.Connection, now: float | None = None) -> CheckpointRow | None:
        """Sign and store a checkpoint of the current tree, unless it is the latest already.

        Refuses (``Conflict``) to sign a smaller tree than the latest checkpoint, or a different
        root for the same size: a checkpoint never goes backwards. Refuses too while the log is
        marked tampered (``audit/integrity.py``): a signature must never vouch for an edit."""
        rows.take_append_lock(conn)  # no append may slip between reading the head and signing
        if tamper_rows.read(conn).tampered:
            raise Conflict(
                "refusing to sign: the audit log is marked tampered and not acknowledged "
                "(see `bastion audit integrity`)"
            )
        size = rows.size(conn)
        latest = rows.latest_checkpoint(conn)
        if latest is not None and size < latest.size:
            raise Conflict(
                f"refusing to sign: the log has {size} entries but checkpoint "
                f"{latest.size} was already signed (entries were removed)"
            )
        try:
            head = self.head(conn)
        except NotFound:
            raise Conflict("refusing to sign: stored tree nodes are missing") from None
        if latest is not None:
            if head.size == latest.size:
                if head.root != latest.root:
                    raise Conflict(
                        f"refusing to sign: the root of size {head.size} differs from the signed "
                        "checkpoint (entries were changed)"
                    )
                return None
            if self.root_at(conn, latest.size) != latest.root:  # nodes exist: head() read them
                raise Conflict(
                    f"refusing to sign: the tree no longer extends checkpoint {latest.size} "
                    "(history was changed)"
                )
        if head.size == 0:
            return None
        note = sign_checkpoint(Checkpoint(self.origin, head.size, head.root), self.signer)
        row = CheckpointRow(head.size, head.root, note, time.time() if now is None else now)
        rows.add_checkpoint(conn, row)
        return row

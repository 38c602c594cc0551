"""``bastion audit verify``: recompute the whole log from the stored events and check it.

Walks every event in index order and checks, in one pass:

- indices are dense from 0 (a deleted or reordered row shows as a missing or unexpected index);
- each event's commitment recomputed from its stored body (with the salt) equals its stored leaf
  (an edited body shows here);
- each recomputed leaf hash equals the leaf node stored at append time (an edit of body and leaf
  together shows here, and names the first bad index);
- each row's ``id``, ``name`` and ``time`` columns are the event's own (those columns are what
  queries filter on, and the leaf does not cover them);
- at every stored checkpoint size, the recomputed root equals the checkpoint's root, and the
  checkpoint's note carries a valid signature by the log key over exactly that size and root
  (a replaced, re-signed or edited checkpoint shows here); the roots all come from one leaf
  sequence, so the consistency chain between checkpoints holds when they all match;
- the log is not shorter than its latest checkpoint (a truncated tail shows here).

The verdict lists what it found; the first bad index is reported where it can be localized.
The pieces (:class:`TreeWalk`, :func:`check_checkpoint`) are shared with the running server's
:class:`~bastion.audit.integrity.IntegrityWatch`, which does the same work a window at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import orjson
import sqlalchemy as sa

from bastion.store import events as rows
from bastion.store import integrity as integrity_rows
from bastion.store.events import CheckpointRow, EventRow

from .checkpoint import open_checkpoint
from .commitment import Committer
from .log import AuditLog
from .merkle import Frontier, leaf_hash
from .note import NoteError

BATCH = 2000


@dataclass
class LogVerdict:
    size: int = 0
    checkpoints: int = 0
    problems: list[str] = field(default_factory=list)
    first_bad_index: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def bad(self, index: int | None, problem: str) -> None:
        if index is not None and (self.first_bad_index is None or index < self.first_bad_index):
            self.first_bad_index = index
        if len(self.problems) < 50:
            self.problems.append(problem)


class TreeWalk:
    """Recomputes the tree over stored events in index order, from ``frontier`` on.

    The frontier is the recomputed right edge of the entries already walked, so a walk can be
    resumed where an earlier one stopped (the running server walks the log a window at a time).
    Roots at the sizes in ``wanted`` are kept in ``roots`` for checking checkpoints.
    """

    def __init__(
        self,
        committer: Committer,
        verdict: LogVerdict,
        frontier: Frontier | None = None,
        wanted: Iterable[int] = (),
    ) -> None:
        self.committer = committer
        self.verdict = verdict
        self.frontier = Frontier() if frontier is None else frontier
        self.wanted = set(wanted)
        self.roots: dict[int, bytes] = {}

    def feed(self, batch: Sequence[EventRow], stored_leaves: Mapping[int, bytes]) -> bool:
        """Check the next events (``stored_leaves``: their level-0 nodes by index). False, with
        the problem recorded, at the first index out of sequence: nothing after it can be
        placed in the tree."""
        for row in batch:
            expected = self.frontier.size
            if row.idx != expected:
                missing = f"entry {expected} is missing (next stored is {row.idx})"
                self.verdict.bad(expected, missing)
                return False
            record = _record(row.body)
            recomputed = self.committer.leaf(record)
            leaf_ok = recomputed == row.leaf.encode()
            if not leaf_ok:
                self.verdict.bad(
                    row.idx, f"entry {row.idx} ({row.id}): event does not match its leaf"
                )
            digest = leaf_hash(recomputed)
            # with leaf_ok, the stored leaf's hash is ``digest``; without, no node can match both
            if not leaf_ok or stored_leaves.get(row.idx) != digest:
                self.verdict.bad(
                    row.idx, f"entry {row.idx} ({row.id}): leaf hash differs from the tree"
                )
            if (record.get("id"), record.get("name"), record.get("time")) != (
                row.id,
                row.name,
                row.time,
            ):
                self.verdict.bad(
                    row.idx,
                    f"entry {row.idx} ({row.id}): its id, name or time column differs from "
                    "the event",
                )
            self.frontier.append(digest)
            if self.frontier.size in self.wanted:
                self.roots[self.frontier.size] = self.frontier.root()
        return True

    def read(self, conn: sa.Connection, end: int | None = None) -> bool:
        """Read and check the stored events from ``frontier.size`` up to ``end`` (exclusive;
        ``None``: the log's size now). False if an entry is missing: every index below ``end``
        must be stored."""
        end = rows.size(conn) if end is None else end
        while self.frontier.size < end:
            start = self.frontier.size
            batch = integrity_rows.events_between(conn, start, min(start + BATCH, end))
            if not batch:
                break
            if not self.feed(batch, rows.leaf_nodes(conn, start, batch[-1].idx + 1)):
                return False
        if self.frontier.size < end:
            self.verdict.bad(self.frontier.size, f"entry {self.frontier.size} is missing")
            return False
        return True


def check_checkpoint(
    row: CheckpointRow, audit: AuditLog, roots: Mapping[int, bytes], verdict: LogVerdict
) -> None:
    """One stored checkpoint against the walked log (``verdict.size`` entries, whose roots at
    the checkpoint sizes are in ``roots``): signed by the log key over exactly its stored size
    and root, not beyond the log, and with the recomputed root."""
    verdict.checkpoints += 1
    try:
        signed = open_checkpoint(row.note, [audit.signer.verifier])
    except NoteError as exc:
        verdict.bad(None, f"checkpoint {row.size}: signature does not verify ({exc})")
        return
    if (signed.size, signed.root, signed.origin) != (row.size, row.root, audit.origin):
        verdict.bad(None, f"checkpoint {row.size}: stored size/root differ from its signed note")
    if signed.size > verdict.size:
        verdict.bad(
            verdict.size,
            f"the log has {verdict.size} entries but checkpoint {signed.size} was signed: "
            f"entries {verdict.size}..{signed.size - 1} are gone",
        )
    elif roots.get(signed.size) != signed.root:
        verdict.bad(
            None,
            f"checkpoint {signed.size}: the recomputed root differs; entries before "
            f"{signed.size} were changed, removed or reordered",
        )


def verify_log(conn: sa.Connection, audit: AuditLog) -> LogVerdict:
    verdict = LogVerdict()
    # Read once, before the events: the log may grow (and be checkpointed) while this runs, and
    # each read here sees the latest commit, so only checkpoints read now are sure to be covered
    # by the events read next and to have their roots computed on the way.
    checkpoints = rows.checkpoints(conn)
    walk = TreeWalk(audit.committer, verdict, wanted=(row.size for row in checkpoints))
    walk.read(conn)
    verdict.size = walk.frontier.size
    for row in checkpoints:
        check_checkpoint(row, audit, walk.roots, verdict)
    return verdict


def _record(body: str) -> dict[str, object]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {"unparseable_body": body}
    return value if isinstance(value, dict) else {"unparseable_body": body}

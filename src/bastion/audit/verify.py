"""``bastion audit verify``: recompute the whole log from the stored events and check it.

Walks every event in index order and checks, in one pass:

- indices are dense from 0 (a deleted or reordered row shows as a missing or unexpected index);
- each event's commitment recomputed from its stored body (with the salt) equals its stored leaf
  (an edited body shows here);
- each recomputed leaf hash equals the leaf node stored at append time (an edit of body and leaf
  together shows here, and names the first bad index);
- at every stored checkpoint size, the recomputed root equals the checkpoint's root, and the
  checkpoint's note carries a valid signature by the log key over exactly that size and root
  (a replaced, re-signed or edited checkpoint shows here); the roots all come from one leaf
  sequence, so the consistency chain between checkpoints holds when they all match;
- the log is not shorter than its latest checkpoint (a truncated tail shows here).

The verdict lists what it found; the first bad index is reported where it can be localized.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
import sqlalchemy as sa

from bastion.store import events as rows
from bastion.store.events import CheckpointRow

from .checkpoint import open_checkpoint
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


def _check_checkpoints(
    checkpoints: list[CheckpointRow],
    audit: AuditLog,
    roots: dict[int, bytes],
    verdict: LogVerdict,
) -> None:
    verifier = audit.signer.verifier
    for row in checkpoints:
        verdict.checkpoints += 1
        try:
            signed = open_checkpoint(row.note, [verifier])
        except NoteError as exc:
            verdict.bad(None, f"checkpoint {row.size}: signature does not verify ({exc})")
            continue
        if (signed.size, signed.root, signed.origin) != (row.size, row.root, audit.origin):
            verdict.bad(
                None, f"checkpoint {row.size}: stored size/root differ from its signed note"
            )
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
    wanted = {row.size for row in checkpoints}
    roots: dict[int, bytes] = {}
    frontier = Frontier()
    cursor = -1
    while True:
        batch = rows.after(conn, cursor, BATCH)
        if not batch:
            break
        stored_leaves = rows.leaf_nodes(conn, batch[0].idx, batch[-1].idx + 1)
        for row in batch:
            expected = frontier.size
            if row.idx != expected:
                verdict.bad(expected, f"entry {expected} is missing (next stored is {row.idx})")
                return _finish(checkpoints, audit, roots, verdict, frontier)
            recomputed = audit.committer.leaf(_record(row.body))
            if recomputed.decode() != row.leaf:
                verdict.bad(row.idx, f"entry {row.idx} ({row.id}): event does not match its leaf")
            digest = leaf_hash(recomputed)
            stored = stored_leaves.get(row.idx, b"")
            if stored != leaf_hash(row.leaf.encode()) or stored != digest:
                verdict.bad(row.idx, f"entry {row.idx} ({row.id}): leaf hash differs from the tree")
            frontier.append(digest)
            if frontier.size in wanted:
                roots[frontier.size] = frontier.root()
        cursor = batch[-1].idx
    return _finish(checkpoints, audit, roots, verdict, frontier)


def _finish(
    checkpoints: list[CheckpointRow],
    audit: AuditLog,
    roots: dict[int, bytes],
    verdict: LogVerdict,
    frontier: Frontier,
) -> LogVerdict:
    verdict.size = frontier.size
    _check_checkpoints(checkpoints, audit, roots, verdict)
    return verdict


def _record(body: str) -> dict[str, object]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {"unparseable_body": body}
    return value if isinstance(value, dict) else {"unparseable_body": body}

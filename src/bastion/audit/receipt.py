"""Receipts and exports, and the offline checks of both: evidence that does not need Bastion.

A receipt proves that one audit event is in the log: the event's exact leaf bytes, its index, the
inclusion proof and the signed checkpoint it leads to, in one JSON object::

    {"format": "bastion-receipt/1", "leaf": "<canonical JSON of the event>", "index": 41,
     "tree_size": 97, "inclusion": ["<base64>", ...], "checkpoint": "<signed note>",
     "consistency": {"from_size": 80, "proof": ["<base64>", ...]}}      (consistency optional)

Anyone holding the log's verifier key can check it offline; someone who also kept an earlier
checkpoint can check, with the optional consistency proof, that the log did not rewrite history
in between. An export is the whole log as JSON lines; checking it recomputes the root and compares
it with a signed checkpoint.

Both checks return a verdict listing every specific problem rather than raising on the first, so
an auditor sees everything wrong with a piece of evidence; malformed input is a finding too.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bastion.audit.checkpoint import Checkpoint, open_checkpoint
from bastion.audit.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    Frontier,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from bastion.audit.note import NoteError, Verifier, strict_b64decode

FORMAT = "bastion-receipt/1"


class Problem(StrEnum):
    """What can be wrong with a receipt or an export (a closed set, for callers to branch on)."""

    MALFORMED = "malformed"
    SIGNATURE = "signature"
    SIZE_MISMATCH = "size_mismatch"
    INCLUSION = "inclusion"
    ORIGIN = "origin"
    TRUSTED_NEWER = "trusted_newer"
    CONSISTENCY_UNPROVEN = "consistency_unproven"
    INCONSISTENT = "inconsistent"
    ORDER = "order"
    ROOT_MISMATCH = "root_mismatch"


@dataclass(frozen=True, slots=True)
class Finding:
    problem: Problem
    detail: str

    def __str__(self) -> str:
        return f"{self.problem}: {self.detail}"


@dataclass(frozen=True, slots=True)
class ReceiptVerdict:
    findings: tuple[Finding, ...]
    checkpoint: Checkpoint | None = None
    """The receipt's checkpoint, when its signature verified."""

    @property
    def ok(self) -> bool:
        return not self.findings


@dataclass(frozen=True, slots=True)
class ExportVerdict:
    findings: tuple[Finding, ...]
    entries: int
    """How many entries were read, in order, before the end or the first problem."""
    root: bytes
    """The root of those entries."""
    checkpoint: Checkpoint | None = None

    @property
    def ok(self) -> bool:
        return not self.findings


def make_receipt(
    *,
    leaf: bytes,
    index: int,
    tree_size: int,
    inclusion: Sequence[bytes],
    checkpoint: str,
    consistency: tuple[int, Sequence[bytes]] | None = None,
) -> dict[str, Any]:
    """The JSON-able receipt for leaf ``index``; ``consistency`` is ``(from_size, proof)``.

    The leaf must be UTF-8 (it is an event's canonical JSON), or this raises ``ValueError``.
    """
    receipt: dict[str, Any] = {
        "format": FORMAT,
        "leaf": leaf.decode("utf-8"),
        "index": index,
        "tree_size": tree_size,
        "inclusion": [base64.b64encode(h).decode() for h in inclusion],
        "checkpoint": checkpoint,
    }
    if consistency is not None:
        from_size, proof = consistency
        receipt["consistency"] = {
            "from_size": from_size,
            "proof": [base64.b64encode(h).decode() for h in proof],
        }
    return receipt


class _Malformed(ValueError):
    pass


def _size(value: object, what: str) -> int:
    if type(value) is not int or value < 0:
        raise _Malformed(f"{what} is not a non-negative integer")
    return value


def _hashes(value: object, what: str) -> list[bytes]:
    if not isinstance(value, list):
        raise _Malformed(f"{what} is not a list")
    hashes = [strict_b64decode(h) if isinstance(h, str) else None for h in value]
    if not all(h is not None and len(h) == HASH_SIZE for h in hashes):
        raise _Malformed(f"{what} holds something other than base64 of 32 bytes")
    return [h for h in hashes if h is not None]


def _leaf(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise _Malformed(f"{what} is not a string")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Malformed(f"{what} is not valid UTF-8 text") from None


@dataclass(frozen=True, slots=True)
class _Receipt:
    leaf: bytes
    index: int
    tree_size: int
    inclusion: list[bytes]
    note: str
    consistency: tuple[int, list[bytes]] | None


def _parse(receipt: object) -> _Receipt:
    if not isinstance(receipt, Mapping):
        raise _Malformed("a receipt is a JSON object")
    if receipt.get("format") != FORMAT:
        raise _Malformed(f"format is not {FORMAT!r}")
    note = receipt.get("checkpoint")
    if not isinstance(note, str):
        raise _Malformed("checkpoint is not a signed note")
    consistency = None
    if "consistency" in receipt:
        block = receipt["consistency"]
        if not isinstance(block, Mapping):
            raise _Malformed("consistency is not an object")
        proof = _hashes(block.get("proof"), "consistency.proof")
        consistency = (_size(block.get("from_size"), "consistency.from_size"), proof)
    return _Receipt(
        leaf=_leaf(receipt.get("leaf"), "leaf"),
        index=_size(receipt.get("index"), "index"),
        tree_size=_size(receipt.get("tree_size"), "tree_size"),
        inclusion=_hashes(receipt.get("inclusion"), "inclusion"),
        note=note,
        consistency=consistency,
    )


def _check_trusted(r: _Receipt, cp: Checkpoint, trusted: Checkpoint) -> Finding | None:
    """Does ``cp`` extend the ``trusted`` checkpoint the verifier kept from before?"""
    if trusted.origin != cp.origin:
        return Finding(Problem.ORIGIN, f"trusted checkpoint is for {trusted.origin!r}")
    if trusted.size > cp.size:
        return Finding(
            Problem.TRUSTED_NEWER,
            f"the trusted checkpoint (size {trusted.size}) is newer than the receipt's "
            f"(size {cp.size}); ask for a receipt against a newer checkpoint",
        )
    proof = r.consistency[1] if r.consistency and r.consistency[0] == trusted.size else None
    if proof is None and trusted.size in (0, cp.size):
        proof = []  # nothing to prove: the empty tree, or the same tree (roots compared below)
    if proof is None:
        return Finding(
            Problem.CONSISTENCY_UNPROVEN,
            f"the receipt carries no consistency proof from the trusted size {trusted.size}",
        )
    if trusted.size == cp.size and trusted.root != cp.root:
        detail = f"the receipt's checkpoint and the trusted one both have size {cp.size} but "
        return Finding(Problem.INCONSISTENT, detail + "different roots: the log forked")
    if not verify_consistency(trusted.size, cp.size, trusted.root, cp.root, proof):
        return Finding(
            Problem.INCONSISTENT,
            f"the receipt's checkpoint (size {cp.size}) is not an extension of the trusted one "
            f"(size {trusted.size}): the log's history differs",
        )
    return None


def verify_receipt(
    receipt: Mapping[str, Any], verifiers: Sequence[Verifier], trusted: Checkpoint | None = None
) -> ReceiptVerdict:
    """Check a receipt offline against the log's verifier keys (and an earlier checkpoint)."""
    try:
        r = _parse(receipt)
    except _Malformed as exc:
        return ReceiptVerdict((Finding(Problem.MALFORMED, str(exc)),))
    try:
        cp = open_checkpoint(r.note, verifiers)
    except NoteError as exc:
        return ReceiptVerdict((Finding(Problem.SIGNATURE, str(exc)),))
    findings: list[Finding] = []
    if cp.size != r.tree_size:
        detail = f"the receipt says tree_size {r.tree_size}, its checkpoint {cp.size}"
        findings.append(Finding(Problem.SIZE_MISMATCH, detail))
    if not verify_inclusion(leaf_hash(r.leaf), r.index, cp.size, r.inclusion, cp.root):
        detail = f"the leaf is not at index {r.index} of the checkpoint's tree of {cp.size}"
        findings.append(Finding(Problem.INCLUSION, detail))
    if r.consistency is not None and r.consistency[0] > cp.size:
        detail = f"consistency.from_size {r.consistency[0]} is beyond the checkpoint"
        findings.append(Finding(Problem.MALFORMED, detail))
    if trusted is not None and (finding := _check_trusted(r, cp, trusted)) is not None:
        findings.append(finding)
    return ReceiptVerdict(tuple(findings), cp)


class _RepeatedKey(ValueError):
    pass


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _RepeatedKey  # two readers could each pick a different value
    return dict(pairs)


def _read_entry(line: str, number: int, expected: int) -> bytes | Finding:
    """The leaf bytes of export line ``number``, or what is wrong with it."""
    try:
        entry = json.loads(line, object_pairs_hook=_object_without_duplicates)
    except _RepeatedKey:
        return Finding(Problem.MALFORMED, f"line {number} repeats a key")
    except ValueError:
        return Finding(Problem.MALFORMED, f"line {number} is not JSON")
    if not isinstance(entry, dict):
        return Finding(Problem.MALFORMED, f"line {number} is not a JSON object")
    index = entry.get("index")
    if type(index) is not int:
        return Finding(Problem.MALFORMED, f"line {number} has no integer index")
    if index != expected:
        what = "missing" if index > expected else "repeated"
        detail = f"line {number}: expected index {expected}, found {index}"
        detail += f" (an entry is {what} or out of order)"
        return Finding(Problem.ORDER, detail)
    try:
        return _leaf(entry.get("leaf"), f"line {number}'s leaf")
    except _Malformed as exc:
        return Finding(Problem.MALFORMED, str(exc))


def verify_export(
    lines: Iterable[str], verifiers: Sequence[Verifier], checkpoint_note: str
) -> ExportVerdict:
    """Recompute the root of an exported log (JSON lines, in index order) and check it.

    Blank lines are skipped; reading stops at the first malformed or out-of-order line, which is
    reported. The export must hold exactly the checkpoint's entries, hashing to its root.
    """
    findings: list[Finding] = []
    cp: Checkpoint | None = None
    try:
        cp = open_checkpoint(checkpoint_note, verifiers)
    except NoteError as exc:
        findings.append(Finding(Problem.SIGNATURE, str(exc)))
    frontier = Frontier()
    root_at_checkpoint = EMPTY_ROOT if cp is not None and cp.size == 0 else None
    complete = True
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        entry = _read_entry(line, number, frontier.size)
        if isinstance(entry, Finding):
            findings.append(entry)
            complete = False
            break
        frontier.append(leaf_hash(entry))
        if cp is not None and frontier.size == cp.size:
            root_at_checkpoint = frontier.root()
    if cp is not None and complete and frontier.size != cp.size:
        detail = f"the export has {frontier.size} entries, the checkpoint covers {cp.size}"
        findings.append(Finding(Problem.SIZE_MISMATCH, detail))
    if cp is not None and root_at_checkpoint is not None and root_at_checkpoint != cp.root:
        detail = f"the first {cp.size} entries do not hash to the checkpoint's root"
        findings.append(Finding(Problem.ROOT_MISMATCH, detail))
    return ExportVerdict(tuple(findings), frontier.size, frontier.root(), cp)

"""Receipts and exports, checked offline: the genuine ones pass, and every tampering is named."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.audit.checkpoint import Checkpoint, sign_checkpoint
from bastion.audit.merkle import (
    EMPTY_ROOT,
    Frontier,
    MemoryNodes,
    consistency_proof_at,
    inclusion_proof_at,
    leaf_hash,
)
from bastion.audit.note import parse_signer_key, signer_key
from bastion.audit.receipt import FORMAT, Problem, make_receipt, verify_export, verify_receipt

ORIGIN = "bastion.example/audit"
SIGNER = parse_signer_key(signer_key(ORIGIN, bytes(range(32))))
OTHER = parse_signer_key(signer_key(ORIGIN, bytes(32)))  # same name, another key
VERIFIERS = [SIGNER.verifier]


def event(i: int, **extra: object) -> bytes:
    record = {"id": f"ev_{i}", "name": "request.decided", "principal": "alice", **extra}
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


class Log:
    """A little log as the real one will keep it: leaves, stored nodes, signed checkpoints."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.leaves, self.frontier, self.nodes = leaves, Frontier(), MemoryNodes()
        self.roots = [EMPTY_ROOT]
        for leaf in leaves:
            self.nodes.add(self.frontier.append(leaf_hash(leaf)))
            self.roots.append(self.frontier.root())

    def checkpoint(self, size: int) -> Checkpoint:
        return Checkpoint(ORIGIN, size, self.roots[size])

    def note(self, size: int) -> str:
        return sign_checkpoint(self.checkpoint(size), SIGNER)

    def receipt(self, index: int, size: int, from_size: int | None = None) -> dict[str, Any]:
        consistency = None
        if from_size is not None:
            consistency = (from_size, consistency_proof_at(self.nodes, from_size, size))
        return make_receipt(
            leaf=self.leaves[index],
            index=index,
            tree_size=size,
            inclusion=inclusion_proof_at(self.nodes, index, size),
            checkpoint=self.note(size),
            consistency=consistency,
        )

    def export(self, size: int) -> list[str]:
        return [
            json.dumps({"index": i, "leaf": leaf.decode(), "recorded_at": 1_800_000_000 + i}) + "\n"
            for i, leaf in enumerate(self.leaves[:size])
        ]


LOG = Log([event(i) for i in range(25)])
FORK = Log([event(i, principal="mallory") if i == 5 else event(i) for i in range(25)])


def problems(verdict: Any) -> list[Problem]:
    return [f.problem for f in verdict.findings]


# -- receipts -----------------------------------------------------------------------------------
def test_a_genuine_receipt_verifies_offline_even_after_a_json_round_trip() -> None:
    receipt = json.loads(json.dumps(LOG.receipt(7, 20)))
    assert receipt["format"] == FORMAT
    assert receipt["leaf"] == event(7).decode()
    verdict = verify_receipt(receipt, VERIFIERS)
    assert verdict.ok, verdict.findings
    assert verdict.checkpoint == LOG.checkpoint(20)


@pytest.mark.parametrize(("index", "size"), [(0, 1), (0, 25), (24, 25), (12, 13)])
def test_receipts_at_the_edges_verify(index: int, size: int) -> None:
    assert verify_receipt(LOG.receipt(index, size), VERIFIERS).ok


def test_an_edited_leaf_fails_inclusion() -> None:
    receipt = LOG.receipt(7, 20)
    receipt["leaf"] = receipt["leaf"].replace("alice", "alicf")
    verdict = verify_receipt(receipt, VERIFIERS)
    assert problems(verdict) == [Problem.INCLUSION]
    assert "not at index 7 of the checkpoint's tree of 20" in str(verdict.findings[0])


def test_another_index_or_a_tampered_proof_fails_inclusion() -> None:
    receipt = LOG.receipt(7, 20)
    assert problems(verify_receipt({**receipt, "index": 6}, VERIFIERS)) == [Problem.INCLUSION]
    proof = list(receipt["inclusion"])
    proof[1] = LOG.receipt(8, 20)["inclusion"][2]
    assert problems(verify_receipt({**receipt, "inclusion": proof}, VERIFIERS)) == [
        Problem.INCLUSION
    ]
    assert problems(verify_receipt({**receipt, "inclusion": proof[:-1]}, VERIFIERS)) == [
        Problem.INCLUSION
    ]


def test_a_tree_size_other_than_the_checkpoints_is_reported() -> None:
    verdict = verify_receipt({**LOG.receipt(7, 20), "tree_size": 19}, VERIFIERS)
    assert problems(verdict) == [Problem.SIZE_MISMATCH]
    assert "tree_size 19, its checkpoint 20" in verdict.findings[0].detail


def test_a_receipt_under_the_wrong_key_or_an_edited_checkpoint_is_refused() -> None:
    receipt = LOG.receipt(7, 20)
    verdict = verify_receipt(receipt, [OTHER.verifier])
    assert problems(verdict) == [Problem.SIGNATURE]
    assert "no known verifier signed this note" in verdict.findings[0].detail
    assert verdict.checkpoint is None
    edited = {**receipt, "checkpoint": receipt["checkpoint"].replace("\n20\n", "\n21\n")}
    verdict = verify_receipt(edited, VERIFIERS)
    assert problems(verdict) == [Problem.SIGNATURE]
    assert "invalid signature" in verdict.findings[0].detail
    # A checkpoint signed by the log over another tree cannot be swapped in either.
    swapped = {**receipt, "checkpoint": LOG.note(21), "tree_size": 21}
    assert problems(verify_receipt(swapped, VERIFIERS)) == [Problem.INCLUSION]


def test_a_trusted_earlier_checkpoint_is_extended_with_the_consistency_proof() -> None:
    trusted = LOG.checkpoint(12)
    assert verify_receipt(LOG.receipt(7, 20, from_size=12), VERIFIERS, trusted).ok
    assert verify_receipt(LOG.receipt(15, 20, from_size=12), VERIFIERS, trusted).ok
    assert verify_receipt(LOG.receipt(7, 20), VERIFIERS, LOG.checkpoint(20)).ok
    assert verify_receipt(LOG.receipt(7, 20), VERIFIERS, LOG.checkpoint(0)).ok


def test_a_forked_log_is_caught_by_a_trusted_checkpoint() -> None:
    forked_earlier = FORK.checkpoint(12)  # the verifier saw a history where leaf 5 differs
    verdict = verify_receipt(LOG.receipt(7, 20, from_size=12), VERIFIERS, forked_earlier)
    assert problems(verdict) == [Problem.INCONSISTENT]
    assert "not an extension of the trusted one (size 12)" in verdict.findings[0].detail
    verdict = verify_receipt(LOG.receipt(7, 20), VERIFIERS, FORK.checkpoint(20))
    assert problems(verdict) == [Problem.INCONSISTENT]
    assert "the log forked" in verdict.findings[0].detail


def test_a_tampered_consistency_proof_is_caught() -> None:
    receipt = LOG.receipt(7, 20, from_size=12)
    proof = receipt["consistency"]["proof"]
    receipt["consistency"] = {"from_size": 12, "proof": [proof[1], proof[0], *proof[2:]]}
    assert problems(verify_receipt(receipt, VERIFIERS, LOG.checkpoint(12))) == [
        Problem.INCONSISTENT
    ]


@pytest.mark.parametrize("from_size", [None, 11])
def test_without_a_proof_from_the_trusted_size_consistency_is_unproven(
    from_size: int | None,
) -> None:
    verdict = verify_receipt(LOG.receipt(7, 20, from_size), VERIFIERS, LOG.checkpoint(12))
    assert problems(verdict) == [Problem.CONSISTENCY_UNPROVEN]
    assert "from the trusted size 12" in verdict.findings[0].detail


def test_a_trusted_checkpoint_newer_than_the_receipts_is_reported() -> None:
    verdict = verify_receipt(LOG.receipt(7, 20), VERIFIERS, LOG.checkpoint(25))
    assert problems(verdict) == [Problem.TRUSTED_NEWER]
    assert "(size 25) is newer than the receipt's (size 20)" in verdict.findings[0].detail


def test_a_trusted_checkpoint_of_another_log_is_reported() -> None:
    elsewhere = Checkpoint("other.example/log", 12, LOG.roots[12])
    verdict = verify_receipt(LOG.receipt(7, 20, from_size=12), VERIFIERS, elsewhere)
    assert problems(verdict) == [Problem.ORIGIN]


def test_findings_accumulate() -> None:
    receipt = {**LOG.receipt(7, 20), "tree_size": 3, "index": 8}
    verdict = verify_receipt(receipt, VERIFIERS, LOG.checkpoint(12))
    assert problems(verdict) == [
        Problem.SIZE_MISMATCH,
        Problem.INCLUSION,
        Problem.CONSISTENCY_UNPROVEN,
    ]


GOOD = LOG.receipt(7, 20, from_size=12)


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"format": "bastion-receipt/2"}, "format is not"),
        ({"leaf": b"bytes"}, "leaf is not a string"),
        ({"leaf": json.loads('"\\ud800"')}, "leaf is not valid UTF-8"),
        ({"index": -1}, "index is not a non-negative integer"),
        ({"index": True}, "index is not"),
        ({"index": "7"}, "index is not"),
        ({"index": 7.0}, "index is not"),
        ({"tree_size": None}, "tree_size is not"),
        ({"inclusion": "abc"}, "inclusion is not a list"),
        ({"inclusion": ["not base64!"]}, "inclusion holds something other than base64"),
        ({"inclusion": ["AAAA"]}, "inclusion holds something other than base64 of 32 bytes"),
        ({"inclusion": [1]}, "inclusion holds"),
        ({"checkpoint": None}, "checkpoint is not a signed note"),
        ({"consistency": []}, "consistency is not an object"),
        ({"consistency": {"from_size": -3, "proof": []}}, "consistency.from_size is not"),
        ({"consistency": {"from_size": 3}}, "consistency.proof is not a list"),
        ({"consistency": {"from_size": 30, "proof": []}}, "from_size 30 is beyond the checkpoint"),
    ],
)
def test_malformed_receipts_say_what_is_wrong(change: dict[str, Any], detail: str) -> None:
    verdict = verify_receipt({**GOOD, **change}, VERIFIERS)
    assert not verdict.ok
    assert Problem.MALFORMED in problems(verdict)
    assert any(detail in f.detail for f in verdict.findings), verdict.findings


def test_a_receipt_that_is_not_an_object_is_malformed() -> None:
    verdict = verify_receipt([GOOD], VERIFIERS)  # type: ignore[arg-type]
    assert problems(verdict) == [Problem.MALFORMED]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 40) | st.text(max_size=60),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=9), children)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(
    changes=st.dictionaries(
        st.sampled_from(sorted(GOOD)),
        json_values,
    ),
    drop=st.sets(st.sampled_from(sorted(GOOD))),
)
def test_any_receipt_yields_a_verdict_and_only_the_genuine_one_passes(
    changes: dict[str, Any], drop: set[str]
) -> None:
    receipt = {k: v for k, v in {**GOOD, **changes}.items() if k not in drop}
    verdict = verify_receipt(receipt, VERIFIERS, LOG.checkpoint(12))
    assert verdict.ok == (receipt == GOOD)


# -- exports ------------------------------------------------------------------------------------
def test_a_genuine_export_recomputes_the_checkpoint_root() -> None:
    verdict = verify_export([*LOG.export(20), "\n", ""], VERIFIERS, LOG.note(20))
    assert verdict.ok, verdict.findings
    assert (verdict.entries, verdict.root) == (20, LOG.roots[20])
    assert verdict.checkpoint == LOG.checkpoint(20)


def test_an_empty_export_matches_the_empty_checkpoint() -> None:
    assert verify_export([], VERIFIERS, LOG.note(0)).ok


def test_an_edited_leaf_changes_the_root() -> None:
    lines = LOG.export(20)
    lines[9] = lines[9].replace("alice", "alicf")
    verdict = verify_export(lines, VERIFIERS, LOG.note(20))
    assert problems(verdict) == [Problem.ROOT_MISMATCH]
    assert verdict.entries == 20


def test_a_dropped_line_is_reported_where_it_is_missing() -> None:
    lines = LOG.export(20)
    del lines[7]
    verdict = verify_export(lines, VERIFIERS, LOG.note(20))
    assert problems(verdict) == [Problem.ORDER]
    assert verdict.findings[0].detail.startswith("line 8: expected index 7, found 8")
    assert verdict.entries == 7


def test_swapped_lines_are_caught_whether_or_not_renumbered() -> None:
    lines = LOG.export(20)
    lines[3], lines[4] = lines[4], lines[3]
    verdict = verify_export(lines, VERIFIERS, LOG.note(20))
    assert problems(verdict) == [Problem.ORDER]
    assert "line 4: expected index 3, found 4" in verdict.findings[0].detail
    renumbered = LOG.export(20)
    renumbered[3] = renumbered[3].replace('"index": 3', '"index": 4')
    renumbered[4] = renumbered[4].replace('"index": 4', '"index": 3')
    renumbered[3], renumbered[4] = renumbered[4], renumbered[3]
    assert problems(verify_export(renumbered, VERIFIERS, LOG.note(20))) == [Problem.ROOT_MISMATCH]


def test_a_repeated_line_is_reported() -> None:
    lines = LOG.export(20)
    lines.insert(5, lines[4])
    verdict = verify_export(lines, VERIFIERS, LOG.note(20))
    assert problems(verdict) == [Problem.ORDER]
    assert "expected index 5, found 4 (an entry is repeated or out of order)" in str(
        verdict.findings[0]
    )


def test_an_export_under_the_wrong_key_is_still_recomputed_but_not_trusted() -> None:
    verdict = verify_export(LOG.export(20), [OTHER.verifier], LOG.note(20))
    assert problems(verdict) == [Problem.SIGNATURE]
    assert (verdict.entries, verdict.root, verdict.checkpoint) == (20, LOG.roots[20], None)


@pytest.mark.parametrize(("entries", "size"), [(19, 20), (21, 20), (0, 20), (20, 0)])
def test_an_export_of_another_size_is_reported(entries: int, size: int) -> None:
    verdict = verify_export(LOG.export(entries), VERIFIERS, LOG.note(size))
    assert problems(verdict) == [Problem.SIZE_MISMATCH]  # the covered prefix still matches
    assert f"the export has {entries} entries, the checkpoint covers {size}" in str(
        verdict.findings[0]
    )


@pytest.mark.parametrize(
    ("bad", "detail"),
    [
        ("not json\n", "line 3 is not JSON"),
        ("[2]\n", "line 3 is not a JSON object"),
        ('{"leaf": "x"}\n', "line 3 has no integer index"),
        ('{"index": "2", "leaf": "x"}\n', "line 3 has no integer index"),
        ('{"index": 2}\n', "line 3's leaf is not a string"),
        ('{"index": 2, "leaf": {"id": 1}}\n', "line 3's leaf is not a string"),
        ('{"index": 2, "leaf": "\\ud800"}\n', "line 3's leaf is not valid UTF-8 text"),
        ('{"index": 2, "leaf": "x", "leaf": "y"}\n', "line 3 repeats a key"),
    ],
)
def test_malformed_export_lines_are_reported_by_number(bad: str, detail: str) -> None:
    lines = LOG.export(5)
    lines[2] = bad
    verdict = verify_export(lines, VERIFIERS, LOG.note(5))
    assert problems(verdict) == [Problem.MALFORMED]
    assert verdict.findings[0].detail == detail
    assert verdict.entries == 2


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.text(max_size=80) | json_values.map(json.dumps), max_size=8))
def test_any_export_yields_a_verdict(lines: list[str]) -> None:
    assert not verify_export(lines, VERIFIERS, LOG.note(3)).ok

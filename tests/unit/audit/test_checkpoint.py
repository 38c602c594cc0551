"""Checkpoints: real ones from sum.golang.org open and round-trip; the format is parsed strictly.

External vectors: the sum.golang.org checkpoint of transparency-dev/formats ``log/note_test.go``
(``TestSumDBNoteParsing``) and the Go checksum database's published verifier key; a sum.golang.org
checkpoint cosigned by a test witness, from an "Addressable witness" README; the example of the
C2SP tlog-checkpoint spec; the invalid cases of transparency-dev/formats ``log/checkpoint_test.go``
(``TestUnmarshalLogState``).
"""

from __future__ import annotations

import base64

import pytest

from bastion.audit.checkpoint import (
    MAX_SIZE,
    Checkpoint,
    CheckpointError,
    open_checkpoint,
    parse_checkpoint,
    sign_checkpoint,
)
from bastion.audit.merkle import EMPTY_ROOT
from bastion.audit.note import (
    NoteError,
    generate_key,
    parse_signer_key,
    parse_verifier_key,
    sign_note,
)

SUMDB = parse_verifier_key("sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8")
SUMDB_TEXT = "go.sum database tree\n6476701\nmb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=\n"
SUMDB_NOTE = SUMDB_TEXT + (
    "\n— sum.golang.org "
    "Az3grsLX85Gz+s1SiTbgkuqxgItqFq7gsMUEyVnrsa9LM7Us9S+1xbFIGu95949rj4nPRYfvimWEPWL+o3GeoWwOoAw=\n"
)
COSIGNED_NOTE = (
    "go.sum database tree\n15067302\ngJyioq6dwR9n+NjEWORfYmH+ubeYm3kH42BBQ0bTpYI=\n\n"
    "— sum.golang.org "
    "Az3grp1rvWOs5NKlr/xR4GLN/CDyzzakmt1o61uSxYKpK1SerqOP2ClbX/peKUZjYnyomH5Xz7GZG3TpB7OeKn4E2ww=\n"
    "— test.example.com "
    "qTGhC/xIPQ0AXKHK6Y+9ypRfuvMZWPjRXM8NiOg5M1WREn07VQXyuIXM3NRNav3ieVFLUqDRK77PWDmL6w8w84UqeAw=\n"
)
SPEC_TEXT = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
LOG = parse_signer_key("PRIVATE+KEY+Log+2271c621+AdEIq9FLRQni54Wg68T96VJO+iayOaulswav2DUMKgvQ")
ROOT = bytes(range(32))
ROOT_B64 = base64.b64encode(ROOT).decode()


def test_a_real_sum_golang_org_checkpoint_opens_and_round_trips() -> None:
    cp = open_checkpoint(SUMDB_NOTE, [SUMDB], origin="go.sum database tree")
    assert cp == Checkpoint(
        "go.sum database tree",
        6476701,
        base64.b64decode("mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk="),
    )
    assert cp.body() == SUMDB_TEXT
    with pytest.raises(CheckpointError, match="not 'Go rocks"):
        open_checkpoint(SUMDB_NOTE, [SUMDB], origin="Go rocks but I might have the wrong ID")


def test_a_witness_cosignature_by_an_unknown_key_is_ignored() -> None:
    cp = open_checkpoint(COSIGNED_NOTE.encode(), [SUMDB])
    assert (cp.origin, cp.size) == ("go.sum database tree", 15067302)


def test_the_spec_example_round_trips() -> None:
    cp = parse_checkpoint(SPEC_TEXT)
    assert (cp.origin, cp.size, len(cp.root)) == ("example.com/behind-the-sofa", 20852163, 32)
    assert cp.body() == SPEC_TEXT


def test_signed_checkpoints_round_trip_with_extensions() -> None:
    cp = Checkpoint("bastion.example/audit", 42, ROOT, ("time 1800000000",))
    assert cp.body() == f"bastion.example/audit\n42\n{ROOT_B64}\ntime 1800000000\n"
    note = sign_checkpoint(cp, LOG)
    assert note.startswith(cp.body() + "\n— Log ")
    assert open_checkpoint(note, [LOG.verifier]) == cp


def test_the_empty_tree_has_a_checkpoint() -> None:
    cp = Checkpoint("log", 0, EMPTY_ROOT)
    assert parse_checkpoint(cp.body()) == cp
    assert cp.body().split("\n")[1] == "0"


def test_a_checkpoint_signed_only_by_others_is_not_trusted() -> None:
    witness = parse_signer_key(generate_key("witness.example")[0])
    note = sign_checkpoint(Checkpoint("Log", 1, ROOT), witness)
    with pytest.raises(NoteError, match="no known verifier"):
        open_checkpoint(note, [LOG.verifier])


def test_a_signed_note_that_is_not_a_checkpoint_is_refused() -> None:
    note = sign_note("if this is a valid checkpoint then I'll eat my hat\n", LOG)
    with pytest.raises(CheckpointError, match="fewer than three lines"):
        open_checkpoint(note, [LOG.verifier])


@pytest.mark.parametrize(
    ("text", "message"),
    [  # transparency-dev TestUnmarshalLogState's invalid cases first, then ours
        ("Head\n9944\n", "fewer than three lines"),
        (f"\n9944\n{ROOT_B64}\n", "empty origin"),
        (f"Log\n123\n{ROOT_B64}", "must end in a newline"),
        (f"Log\nbananas\n{ROOT_B64}\n", "'bananas' is not a decimal"),
        (f"Log\n-34\n{ROOT_B64}\n", "is not a decimal"),
        (f"Log\n3438945738945739845734895735\n{ROOT_B64}\n", "is not a decimal uint64"),
        ("Log\n123\nThisIsn'tBase64\n", "not base64 of 32 bytes"),
        (f"Log\n9944\n{ROOT_B64}\n\n\n\n", "empty extension line"),  # they accept; the spec not
        (f"Log\n0123\n{ROOT_B64}\n", "'0123' is not a decimal"),
        (f"Log\n+5\n{ROOT_B64}\n", "is not a decimal"),
        (f"Log\n 5\n{ROOT_B64}\n", "is not a decimal"),
        (f"Log\n\u0665\n{ROOT_B64}\n", "is not a decimal"),  # ARABIC-INDIC DIGIT FIVE
        (f"Log\n{2**64}\n{ROOT_B64}\n", "is not a decimal uint64"),
        ("Log\n5\nYmFuYW5hcw==\n", "not base64 of 32 bytes"),  # transparency-dev's 'bananas'
        (f"Log\n5\n{ROOT_B64[:-1]}\n", "not base64 of 32 bytes"),
        (f"Log\n5\n{ROOT_B64[:-2]}9=\n", "not base64 of 32 bytes"),  # non-canonical spelling
        (f"Log\n5\n{ROOT_B64}\next\x01\n", "control character in extension"),
    ],
)
def test_malformed_checkpoints_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        parse_checkpoint(text)


def test_the_largest_size_parses() -> None:
    assert parse_checkpoint(f"Log\n{MAX_SIZE}\n{ROOT_B64}\n").size == 2**64 - 1


@pytest.mark.parametrize(
    ("origin", "size", "root", "extensions", "message"),
    [
        ("", 1, ROOT, (), "empty origin"),
        ("a\nb", 1, ROOT, (), "control character in origin"),
        ("log", -1, ROOT, (), "out of range"),
        ("log", True, ROOT, (), "out of range"),
        ("log", 2**64, ROOT, (), "out of range"),
        ("log", 1, ROOT[:31], (), "not 32 bytes"),
        ("log", 1, ROOT_B64, (), "not 32 bytes"),
        ("log", 1, ROOT, ("",), "empty extension line"),
        ("log", 1, ROOT, ("two\nlines",), "control character in extension"),
    ],
)
def test_a_checkpoint_that_cannot_be_written_cannot_be_made(
    origin: str, size: int, root: bytes, extensions: tuple[str, ...], message: str
) -> None:
    with pytest.raises(CheckpointError, match=message):
        Checkpoint(origin, size, root, extensions)

"""C2SP transparency-log checkpoints (https://c2sp.org/tlog-checkpoint): the signed tree head.

A checkpoint is a signed note whose text is the origin (which log), the tree size in decimal and
the base64 root hash, one per line, then optional extension lines. It is what Bastion publishes
and what a receipt or an export is checked against; the format is shared with sum.golang.org,
Sigsum and transparency-dev logs, so their witnesses and verifiers can check ours.

Parsing is strict where the spec is: the size is decimal without leading zeros (and fits in 64
bits, as everywhere in the ecosystem), the root is canonical base64 of exactly 32 bytes, the
origin and every extension line are non-empty. The origin may contain spaces (the Go checksum
database's is ``go.sum database tree``): the spec only recommends a URL-like name.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass

from bastion.audit.merkle import HASH_SIZE
from bastion.audit.note import NoteError, Signer, Verifier, open_note, sign_note, strict_b64decode

MAX_SIZE = 2**64 - 1
_SIZE = re.compile("0|[1-9][0-9]{0,19}")
_CONTROL = re.compile("[\x00-\x1f]")


class CheckpointError(NoteError):
    """A note verified, but its text is not a well-formed checkpoint (or not the expected log's)."""


def _check_line(line: str, what: str) -> None:
    if not line:
        raise CheckpointError(f"malformed checkpoint: empty {what}")
    if _CONTROL.search(line):
        raise CheckpointError(f"malformed checkpoint: control character in {what}")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A tree head: ``root`` is the RFC 9162 root of the first ``size`` leaves of ``origin``."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line(self.origin, "origin")
        if type(self.size) is not int or not 0 <= self.size <= MAX_SIZE:
            raise CheckpointError(f"malformed checkpoint: size {self.size} is out of range")
        if not isinstance(self.root, bytes) or len(self.root) != HASH_SIZE:
            raise CheckpointError("malformed checkpoint: the root hash is not 32 bytes")
        for line in self.extensions:
            _check_line(line, "extension line")

    def body(self) -> str:
        """The note text: origin, size, base64 root and extension lines, each ending in newline."""
        root = base64.b64encode(self.root).decode()
        lines = (self.origin, str(self.size), root, *self.extensions)
        return "".join(f"{line}\n" for line in lines)


def parse_checkpoint(text: str) -> Checkpoint:
    """The checkpoint in a note's text (already verified by :func:`open_checkpoint`'s caller)."""
    if not text.endswith("\n"):
        raise CheckpointError("malformed checkpoint: the text must end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError("malformed checkpoint: fewer than three lines")
    origin, size, root_b64, *extensions = lines
    _check_line(origin, "origin")
    if not _SIZE.fullmatch(size) or int(size) > MAX_SIZE:
        raise CheckpointError(f"malformed checkpoint: size {size!r} is not a decimal uint64")
    root = strict_b64decode(root_b64)
    if root is None or len(root) != HASH_SIZE:
        raise CheckpointError("malformed checkpoint: the root is not base64 of 32 bytes")
    return Checkpoint(origin, int(size), root, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> str:
    """The checkpoint as a note signed by ``signer`` (whose name should be the origin)."""
    return sign_note(checkpoint.body(), signer)


def open_checkpoint(
    note: str | bytes, verifiers: Sequence[Verifier], *, origin: str | None = None
) -> Checkpoint:
    """Verify a signed checkpoint and parse it; ``origin``, if given, must match.

    Any one of ``verifiers`` is enough (pass only the log's key to require the log's signature).
    Raises :class:`NoteError` (or its :class:`CheckpointError`) with the reason.
    """
    text, _ = open_note(note, verifiers)
    checkpoint = parse_checkpoint(text)
    if origin is not None and checkpoint.origin != origin:
        raise CheckpointError(f"checkpoint is for {checkpoint.origin!r}, not {origin!r}")
    return checkpoint

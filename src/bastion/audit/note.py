"""C2SP signed notes (https://c2sp.org/signed-note), Ed25519 only: how checkpoints travel.

A signed note is a text ending in a newline, a blank line, then lines ``— <key name>
base64(key ID || signature)``. Using this format rather than one of our own means a checkpoint
signed here can be checked by Go's ``golang.org/x/mod/sumdb/note``, by witnesses and by
transparency-dev tooling, and the tests pin that against Go's published example byte for byte.

Keys are written the way Go writes them: ``<name>+<hex key ID>+base64(0x01 || public key)`` for a
verifier and ``PRIVATE+KEY+<name>+<hex key ID>+base64(0x01 || seed)`` for a signer, where the key ID
is ``SHA-256(name || 0x0A || 0x01 || public key)[:4]``.

Where the spec leaves room, this module takes the stricter reading, and says so:

* base64 must be canonical (it re-encodes to the same text), so a signature line has exactly
  one spelling;
* a key ID in a verifier or signer key is 8 lowercase hex digits (what Go writes);
* every signature by a known key is checked and any failure rejects the note (the spec's SHOULD;
  Go skips a known key's later signatures once one verified);
* more than 100 signature lines reject the note before any signature is checked (Go's limit);
* a verifier key that is a small-order point or a non-canonical encoding is refused (Go loads it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ED25519 = 0x01
"""The signature type byte of Ed25519 signatures (the only one Bastion signs or accepts)."""
MAX_SIGNATURES = 100
_P = 2**255 - 19
_SMALL_ORDER_Y = frozenset(  # y of the 8 points of order dividing 8 (libsodium blocks the same)
    {
        0,
        1,
        _P - 1,
        0x05FC536D880238B13933C6D305ACDFD5F098EFF289F4C345B027B2C28F95E826,
        0x7A03AC9277FDC74EC6CC392CFA53202A0F67100D760B3CBA4FD84D3D706A17C7,
    }
)
_SIG_PREFIX = "\N{EM DASH} "
_KEY_ID = re.compile("[0-9a-f]{8}")
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f]")


class NoteError(ValueError):
    """A key or note is malformed, or no trusted signature on a note verifies."""


def strict_b64decode(text: str) -> bytes | None:
    """Standard base64 (RFC 4648 §4) in its one canonical spelling, or None."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == text else None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def is_valid_name(name: str) -> bool:
    """Key names are non-empty UTF-8 with no Unicode space, no '+' and no control character."""
    if not name or "+" in name or _CONTROL.search(name) or any(c.isspace() for c in name):
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: not text a note can carry
        return False
    return True


def _check_name(name: str) -> None:
    if not is_valid_name(name):
        raise NoteError(f"invalid key name {name!r}: it must be non-empty, without spaces or '+'")


def key_id(name: str, public_key: bytes) -> bytes:
    """SHA-256(name || 0x0A || 0x01 || public key)[:4]: names a key in signature lines."""
    _check_name(name)
    if len(public_key) != 32:
        raise NoteError("an Ed25519 public key is 32 bytes")
    return hashlib.sha256(name.encode() + b"\n" + bytes([ED25519]) + public_key).digest()[:4]


def verifier_key(name: str, public_key: bytes) -> str:
    """The text form a verifier is configured with: ``name+keyid+base64(0x01||key)``."""
    return f"{name}+{key_id(name, public_key).hex()}+{_b64(bytes([ED25519]) + public_key)}"


def _public_from_seed(seed: bytes) -> bytes:
    if len(seed) != 32:
        raise NoteError("an Ed25519 private key seed is 32 bytes")
    private = Ed25519PrivateKey.from_private_bytes(seed)
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def signer_key(name: str, private_seed: bytes) -> str:
    """The secret text form of a signer, as Go writes it: ``PRIVATE+KEY+name+keyid+base64(...)``."""
    kid = key_id(name, _public_from_seed(private_seed))
    return f"PRIVATE+KEY+{name}+{kid.hex()}+{_b64(bytes([ED25519]) + private_seed)}"


def generate_key(name: str) -> tuple[str, str]:
    """A fresh key pair as ``(signer key, verifier key)`` texts, like Go's ``note.GenerateKey``."""
    seed = Ed25519PrivateKey.generate().private_bytes_raw()
    return signer_key(name, seed), verifier_key(name, _public_from_seed(seed))


def _check_public_key(public_key: bytes) -> None:
    """Refuse keys no one holds the private half of, which OpenSSL would still verify against.

    Under a small-order public key (the all-zero placeholder is one) signatures can be forged
    without any private key; a non-canonical encoding gives one point several key IDs. Go's
    ``NewVerifier`` accepts both; a configured verifier key here must not.
    """
    if len(public_key) != 32:
        raise NoteError("an Ed25519 public key is 32 bytes")
    y = int.from_bytes(public_key, "little") & ((1 << 255) - 1)
    if y >= _P:
        raise NoteError("unsafe Ed25519 public key: not canonically encoded")
    if y in _SMALL_ORDER_Y:
        raise NoteError(
            "unsafe Ed25519 public key: a small-order point, so signatures are forgeable"
        )


@dataclass(frozen=True, slots=True, repr=False)
class Verifier:
    """A trusted Ed25519 public key under a name; constructing one checks the key ID matches."""

    name: str
    key_id: bytes
    public_key: bytes

    def __post_init__(self) -> None:
        _check_public_key(self.public_key)
        if key_id(self.name, self.public_key) != self.key_id:
            raise NoteError(f"key ID {self.key_id.hex()} does not match key {self.name!r}")

    def __repr__(self) -> str:
        return f"Verifier({self.name}+{self.key_id.hex()})"

    @property
    def text(self) -> str:
        """The verifier key text (``name+keyid+base64``) to hand to whoever checks our notes."""
        return verifier_key(self.name, self.public_key)

    def verify(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != 64:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


class Signer:
    """An Ed25519 private key under a name. Its repr names the key and never shows the seed."""

    __slots__ = ("_private", "key_id", "name", "public_key")

    def __init__(self, name: str, seed: bytes) -> None:
        self.public_key = _public_from_seed(seed)
        self.key_id = key_id(name, self.public_key)
        self.name = name
        self._private = Ed25519PrivateKey.from_private_bytes(seed)

    def __repr__(self) -> str:
        return f"Signer({self.name}+{self.key_id.hex()})"

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, self.key_id, self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)


def _parse_key(text: str, what: str) -> tuple[str, bytes, bytes]:
    """Split ``name+keyid+base64(type||key)``; checks everything but the key ID's value."""
    name, _, rest = text.partition("+")
    kid_hex, _, b64 = rest.partition("+")
    _check_name(name)
    if not _KEY_ID.fullmatch(kid_hex):
        raise NoteError(f"malformed {what} key: the key ID is not 8 lowercase hex digits")
    raw = strict_b64decode(b64)
    if not raw:
        raise NoteError(f"malformed {what} key: the key is not canonical base64")
    if raw[0] != ED25519:
        raise NoteError(f"unsupported {what} key: signature type {raw[0]:#04x} is not Ed25519")
    if len(raw) != 33:
        raise NoteError(f"malformed {what} key: an Ed25519 key is 32 bytes")
    return name, bytes.fromhex(kid_hex), raw[1:]


def parse_verifier_key(text: str) -> Verifier:
    """A :class:`Verifier` from ``name+keyid+base64(0x01||public key)``, checked strictly."""
    name, kid, public = _parse_key(text, "verifier")
    return Verifier(name, kid, public)


def parse_signer_key(text: str) -> Signer:
    """A :class:`Signer` from ``PRIVATE+KEY+name+keyid+base64(0x01||seed)``, checked strictly."""
    if not text.startswith("PRIVATE+KEY+"):
        raise NoteError("malformed signer key: it starts with PRIVATE+KEY+")
    name, kid, seed = _parse_key(text.removeprefix("PRIVATE+KEY+"), "signer")
    signer = Signer(name, seed)
    if signer.key_id != kid:
        raise NoteError(f"key ID {kid.hex()} does not match signer key {name!r}")
    return signer


def _check_text(text: str) -> bytes:
    """The UTF-8 bytes of note text (or a whole note), refusing what the spec forbids."""
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raise NoteError("malformed note: not valid UTF-8") from None
    if _CONTROL.search(text):
        raise NoteError("malformed note: control character other than newline")
    return raw


def sign_note(text: str, signer: Signer) -> str:
    """``text`` signed by ``signer`` as a note; the text must end in a newline."""
    if not text.endswith("\n"):
        raise NoteError("malformed note: the text must end in a newline")
    signature = signer.key_id + signer.sign(_check_text(text))
    return f"{text}\n{_SIG_PREFIX}{signer.name} {_b64(signature)}\n"


def _verifier_table(verifiers: Sequence[Verifier]) -> dict[tuple[str, bytes], list[Verifier]]:
    table: dict[tuple[str, bytes], list[Verifier]] = {}
    for v in verifiers:
        same = table.setdefault((v.name, v.key_id), [])
        if v not in same:
            same.append(v)
    return table


def open_note(note: str | bytes, verifiers: Sequence[Verifier]) -> tuple[str, list[str]]:
    """Check a signed note; return its text and the names of the known keys that signed it.

    Signatures by unknown keys (those whose name and key ID do not both match a verifier) are
    ignored, as the spec requires; a signature by a known key that fails rejects the note.
    """
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("malformed note: not valid UTF-8") from None
    _check_text(note)
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("malformed note: no blank line before the signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block:
        raise NoteError("malformed note: no signature lines")
    if not block.endswith("\n"):
        raise NoteError("malformed note: the last signature line does not end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"malformed note: more than {MAX_SIGNATURES} signatures")
    table, message, signed_by = _verifier_table(verifiers), text.encode("utf-8"), []
    for line in lines:
        if not line.startswith(_SIG_PREFIX):
            raise NoteError("malformed note: a signature line does not start with '— '")
        name, _, b64 = line.removeprefix(_SIG_PREFIX).partition(" ")
        if not is_valid_name(name):
            raise NoteError("malformed note: a signature line has an invalid key name")
        raw = strict_b64decode(b64)
        if raw is None:
            raise NoteError(f"malformed note: the signature by {name} is not canonical base64")
        if len(raw) < 5:
            raise NoteError(f"malformed note: the signature by {name} is too short")
        candidates, key = table.get((name, raw[:4]), []), f"{name}+{raw[:4].hex()}"
        if len(candidates) > 1:
            raise NoteError(f"ambiguous key {key}: several verifiers share it")
        if not candidates:
            continue
        if len(raw) != 4 + 64:
            raise NoteError(f"the signature by known key {key} has the wrong length")
        if not candidates[0].verify(message, raw[4:]):
            raise NoteError(f"invalid signature by known key {key}")
        if name not in signed_by:
            signed_by.append(name)
    if not signed_by:
        raise NoteError("no known verifier signed this note")
    return text, signed_by

"""The audit log's secrets, kept in the state directory (mode 0600):

- ``audit-log.key``: the Ed25519 signer key in Go's ``PRIVATE+KEY+name+keyid+key`` text form; its
  name is the log's origin (the first line of every checkpoint).
- ``audit.salt``: the HMAC key for sensitive fields in leaves (32 random bytes, hex).

``audit-log.pub`` holds the verifier key (``name+keyid+key``) to hand to auditors.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from bastion.errors import ConfigError
from bastion.identity.keys import read_private_file, write_private_file

from .note import NoteError, Signer, generate_key, is_valid_name, parse_signer_key

KEY_FILE = "audit-log.key"
PUB_FILE = "audit-log.pub"
SALT_FILE = "audit.salt"


@dataclass(frozen=True, slots=True)
class LogKeys:
    signer: Signer
    salt: bytes = b""

    @property
    def origin(self) -> str:
        return self.signer.name

    @property
    def verifier_key(self) -> str:
        return self.signer.verifier.text


def default_origin() -> str:
    host = "".join(c for c in socket.gethostname().lower() if c.isalnum() or c in ".-") or "host"
    origin = f"{host}/bastion-audit-{secrets.token_hex(4)}"
    return origin if is_valid_name(origin) else f"bastion-audit-{secrets.token_hex(4)}"


def load_or_create(state_dir: Path) -> LogKeys:
    """Read the log's key and salt, creating them (0600) on first use."""
    key_path, salt_path = state_dir / KEY_FILE, state_dir / SALT_FILE
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not key_path.exists():
        signer_text, verifier_text = generate_key(default_origin())
        try:
            write_private_file(key_path, signer_text.encode() + b"\n", exclusive=True)
            (state_dir / PUB_FILE).write_text(verifier_text + "\n", encoding="utf-8")
        except FileExistsError:
            pass  # another process created it first: use theirs
    if not salt_path.exists():
        with contextlib.suppress(FileExistsError):  # another process created it first
            write_private_file(salt_path, secrets.token_hex(32).encode() + b"\n", exclusive=True)
    try:
        signer = parse_signer_key(read_private_file(key_path).decode().strip())
    except (NoteError, UnicodeDecodeError) as exc:
        raise ConfigError(str(key_path), [f"is not a signer key: {exc}"]) from None
    try:
        salt = bytes.fromhex(read_private_file(salt_path).decode().strip())
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(str(salt_path), ["is not a hex salt"]) from None
    if len(salt) < 16:
        raise ConfigError(str(salt_path), ["the salt must be at least 16 bytes"])
    return LogKeys(signer, salt)

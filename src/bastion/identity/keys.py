"""Keys as JWKs: device keys (Ed25519 or P-256), the token issuer's key, and their files on disk.

Bastion accepts exactly two key types, Ed25519 (``OKP``, alg ``EdDSA``) and P-256 (``EC``, alg
``ES256``): small, fast, and with no parameters an attacker can choose. Keys are named by their
RFC 7638 thumbprint (``jkt``), which is what access tokens bind to (``cnf.jkt``).

Private keys live in files created with mode 0600 from the first byte (``O_CREAT|O_EXCL`` with the
mode, then an atomic rename), and a private key file that group or others can read is refused:
a key that may have been copied is not a device key any more.

Functions given a malformed JWK raise ``ValueError``; callers turn it into the error of their
entry point. File problems are ``ConfigError`` naming the file.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from joserfc import jwk as joserfc_jwk

from bastion.errors import ConfigError

from . import jws
from .jws import PrivateKey, PublicKey, b64url_decode, b64url_encode

#: (kty, crv) → JWS alg, for the only key types Bastion accepts.
KEY_ALGS: Mapping[tuple[object, object], str] = {
    ("OKP", "Ed25519"): "EdDSA",
    ("EC", "P-256"): "ES256",
}
#: JWK members that only a private (or symmetric) key has (RFC 7518 §6, RFC 8037 §2).
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_PUBLIC_MEMBERS = ("kty", "crv", "x", "y", "n", "e")
# RFC 7638 §3.2: the required members of each key type, and nothing else.
_THUMBPRINT_MEMBERS: Mapping[object, tuple[str, ...]] = {
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "RSA": ("e", "kty", "n"),
    "oct": ("k", "kty"),
}
_COORDINATE_SIZE = 32  # Ed25519 public/private keys and P-256 coordinates are all 32 bytes
_MAX_KEY_FILE = 64 * 1024


def generate_private_jwk(alg: str = "EdDSA") -> dict[str, str]:
    """A new private key as a plain JWK dict: Ed25519 for ``EdDSA``, P-256 for ``ES256``."""
    if alg == "EdDSA":
        key: joserfc_jwk.Key = joserfc_jwk.generate_key("OKP", "Ed25519")
    elif alg == "ES256":
        key = joserfc_jwk.generate_key("EC", "P-256")
    else:
        raise ValueError("alg must be EdDSA or ES256")
    return {name: str(value) for name, value in key.as_dict(private=True).items()}


def public_jwk(jwk: Mapping[str, Any]) -> dict[str, str]:
    """The public part of a JWK: only the key-type and public-value members are kept."""
    return {name: jwk[name] for name in _PUBLIC_MEMBERS if name in jwk}


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint: required members only, sorted, no whitespace, base64url."""
    members = _THUMBPRINT_MEMBERS.get(jwk.get("kty"))
    if members is None:
        raise ValueError("JWK kty is missing or unknown")
    required = {name: jwk.get(name) for name in members}
    if not all(isinstance(value, str) for value in required.values()):
        raise ValueError("JWK lacks a required member")
    return b64url_encode(hashlib.sha256(orjson.dumps(required)).digest())


def jwk_alg(jwk: Mapping[str, Any]) -> str:
    """The one JWS alg a key may sign with: ``EdDSA`` for Ed25519, ``ES256`` for P-256."""
    alg = KEY_ALGS.get((jwk.get("kty"), jwk.get("crv")))
    if alg is None:
        raise ValueError("only Ed25519 (OKP) and P-256 (EC) keys are supported")
    return alg


def _coordinate(jwk: Mapping[str, Any], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise ValueError(f"JWK member {name} is missing")
    raw = b64url_decode(value)
    if len(raw) != _COORDINATE_SIZE:
        raise ValueError(f"JWK member {name} has the wrong length")
    return raw


def load_public_key(jwk: Mapping[str, Any]) -> PublicKey:
    """The ``cryptography`` public key of a JWK; the point is validated (on the curve)."""
    if jwk_alg(jwk) == "EdDSA":
        return Ed25519PublicKey.from_public_bytes(_coordinate(jwk, "x"))
    x = int.from_bytes(_coordinate(jwk, "x"), "big")
    y = int.from_bytes(_coordinate(jwk, "y"), "big")
    try:
        return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    except ValueError:
        raise ValueError("JWK x and y are not a point on P-256") from None


def load_private_key(jwk: Mapping[str, Any]) -> PrivateKey:
    """The ``cryptography`` private key of a JWK whose public members must match ``d``."""
    key: PrivateKey
    if jwk_alg(jwk) == "EdDSA":
        key = Ed25519PrivateKey.from_private_bytes(_coordinate(jwk, "d"))
    else:
        key = ec.derive_private_key(int.from_bytes(_coordinate(jwk, "d"), "big"), ec.SECP256R1())
    if public_jwk(_export_public(key.public_key())) != public_jwk(jwk):
        raise ValueError("JWK public members do not match its private key")
    return key


def _export_public(key: PublicKey) -> dict[str, str]:
    if isinstance(key, Ed25519PublicKey):
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(key.public_bytes_raw())}
    numbers = key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url_encode(numbers.x.to_bytes(_COORDINATE_SIZE, "big")),
        "y": b64url_encode(numbers.y.to_bytes(_COORDINATE_SIZE, "big")),
    }


def write_private_file(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write a secret file with mode 0600 from its creation on; atomically (temp file + rename).

    With ``exclusive`` an existing file is never replaced (``FileExistsError``): the complete
    temp file is hard-linked into place, so a concurrent reader never sees a partial key.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_private_file(path: Path) -> bytes:
    """Read a secret file, refusing one that group or others may access (like ``ssh`` does)."""
    fd = os.open(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as file:
        mode = stat.S_IMODE(os.fstat(file.fileno()).st_mode)
        if os.name == "posix" and mode & 0o077:
            raise ConfigError(
                str(path),
                [f"is accessible by group or others (mode {mode:04o}): run `chmod 600 {path}`"],
            )
        data = file.read(_MAX_KEY_FILE + 1)
    if len(data) > _MAX_KEY_FILE:
        raise ConfigError(str(path), ["is too large to be a key file"])
    return data


def write_private_jwk(path: Path, jwk: Mapping[str, Any], *, exclusive: bool = False) -> None:
    """Save a private JWK as JSON, mode 0600, creating parent directories (mode 0700)."""
    write_private_file(
        path, orjson.dumps(dict(jwk), option=orjson.OPT_INDENT_2), exclusive=exclusive
    )


def read_private_jwk(path: Path) -> dict[str, str]:
    """Load a private JWK saved by :func:`write_private_jwk`; ``ConfigError`` if unusable."""
    data = read_private_file(path)
    try:
        jwk = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ConfigError(str(path), ["is not valid JSON"]) from None
    if not isinstance(jwk, dict) or not all(isinstance(v, str) for v in jwk.values()):
        raise ConfigError(str(path), ["is not a JWK (a JSON object of strings)"])
    if "d" not in jwk:
        raise ConfigError(str(path), ["holds a public key; a private key (with d) is needed"])
    try:
        load_private_key(jwk)
    except ValueError as exc:
        raise ConfigError(str(path), [f"is not a usable private key: {exc}"]) from None
    return jwk


class SigningKey:
    """A private JWK loaded once for signing: its key object, alg, public JWK and thumbprint."""

    def __init__(self, private_jwk: Mapping[str, Any]) -> None:
        self._key = load_private_key(private_jwk)
        self.alg = jwk_alg(private_jwk)
        self.public_jwk = public_jwk(private_jwk)
        self.kid = thumbprint(self.public_jwk)

    def __repr__(self) -> str:  # never the private key
        return f"SigningKey(alg={self.alg!r}, kid={self.kid!r})"

    @property
    def public_key(self) -> PublicKey:
        return self._key.public_key()

    def sign(self, header: Mapping[str, Any], claims: Mapping[str, Any]) -> str:
        """A compact JWS of ``claims``; ``alg`` is set from the key (a conflicting one raises)."""
        if header.get("alg", self.alg) != self.alg:
            raise ValueError(f"this key signs with {self.alg}, not {header.get('alg')}")
        return jws.sign(self._key, {"alg": self.alg, **header}, dict(claims))


class IssuerKey:
    """Bastion's own Ed25519 signing key for access tokens, kept in the state directory.

    Its ``kid`` is its thumbprint, so a rotated key is a new ``kid`` and verifiers can tell the
    keys apart; ``jwks()`` publishes the public half for resource servers and auditors.
    """

    def __init__(self, private_jwk: Mapping[str, Any]) -> None:
        if jwk_alg(private_jwk) != "EdDSA":
            raise ValueError("the issuer key must be an Ed25519 key")
        self._signer = SigningKey(private_jwk)
        verify_key = self._signer.public_key
        if not isinstance(verify_key, Ed25519PublicKey):  # pragma: no cover - alg checked above
            raise ValueError("the issuer key must be an Ed25519 key")
        self.verify_key: Ed25519PublicKey = verify_key

    def __repr__(self) -> str:
        return f"IssuerKey(kid={self.kid!r})"

    @classmethod
    def generate(cls) -> IssuerKey:
        """A fresh in-memory key (tests, ephemeral deployments)."""
        return cls(generate_private_jwk("EdDSA"))

    @classmethod
    def load_or_create(cls, path: Path) -> IssuerKey:
        """Load the key at ``path``, or create it (mode 0600) if there is none yet.

        Two processes starting together agree on one key: creation never replaces a file, and
        the loser of the race loads the winner's key.
        """
        try:
            return cls._load(path)
        except FileNotFoundError:
            pass
        jwk = generate_private_jwk("EdDSA")
        try:
            write_private_jwk(path, jwk, exclusive=True)
        except FileExistsError:
            return cls._load(path)
        return cls(jwk)

    @classmethod
    def _load(cls, path: Path) -> IssuerKey:
        jwk = read_private_jwk(path)
        try:
            return cls(jwk)
        except ValueError as exc:
            raise ConfigError(str(path), [str(exc)]) from None

    @property
    def kid(self) -> str:
        return self._signer.kid

    def sign_jwt(self, header: Mapping[str, Any], claims: Mapping[str, Any]) -> str:
        """Sign ``claims`` with ``alg: EdDSA`` and this key's ``kid`` added to ``header``."""
        return self._signer.sign({**header, "kid": self.kid}, claims)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public JWK Set (RFC 7517 §5): public members, ``kid``, ``alg`` and ``use`` only."""
        key = {**self._signer.public_jwk, "kid": self.kid, "alg": "EdDSA", "use": "sig"}
        return {"keys": [key]}

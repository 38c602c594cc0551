"""Compact JWS (RFC 7515) for the two signature algorithms Bastion accepts: EdDSA and ES256.

Access tokens, DPoP proofs and client assertions are all compact JWS strings verified on a hot
path, so this module parses them with a strict base64url check, orjson and ``cryptography``
directly instead of a general JOSE library: there is no algorithm negotiation here, only the two
allow-listed asymmetric algorithms, which makes ``alg: none`` and HMAC-with-a-public-key attacks
impossible by construction. Functions raise ``ValueError``; callers turn that into their own
error class with a message naming what was wrong (never the input itself).
"""

from __future__ import annotations

import base64
import re
from typing import Any, NamedTuple

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

PublicKey = Ed25519PublicKey | ec.EllipticCurvePublicKey
PrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey

#: Every algorithm this module can sign or verify; all asymmetric.
ALGORITHMS = frozenset({"EdDSA", "ES256"})

# Three base64url segments (each may be empty so that a forged ``alg: none`` token with no
# signature is reported as a bad ``alg``, not as garbage).
_COMPACT = re.compile(r"[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_ES256_SIZE = 32


class MalformedJWS(ValueError):
    """Not a compact JWS: wrong number of parts, or a part that is not base64url."""


class MalformedHeader(MalformedJWS):
    """The protected header is not a base64url-encoded JSON object."""


class Compact(NamedTuple):
    """A compact JWS split into its parts; nothing in it is verified yet."""

    header: dict[str, Any]
    payload: str
    signing_input: bytes
    signature: bytes


def b64url_encode(data: bytes) -> str:
    """Base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(data: str) -> bytes:
    """Strict base64url without padding: any character outside the alphabet is an error."""
    if not _B64URL.fullmatch(data):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def json_object(segment: str) -> dict[str, Any]:
    """Decode one base64url segment holding a JSON object."""
    value = orjson.loads(b64url_decode(segment))
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def split(token: str) -> tuple[str, str, str]:
    """The three base64url segments of a compact JWS; :class:`MalformedJWS` if it is not one."""
    if not _COMPACT.fullmatch(token):
        raise MalformedJWS("not a compact JWS")
    header, payload, signature = token.split(".")
    return header, payload, signature


def parse(token: str) -> Compact:
    """Split a compact JWS and decode its header and signature (the payload stays encoded until
    the signature is checked). Raises :class:`MalformedHeader` or :class:`MalformedJWS`."""
    header_b64, payload_b64, signature_b64 = split(token)
    try:
        header = json_object(header_b64)
    except ValueError:
        raise MalformedHeader("header") from None
    try:
        signature = b64url_decode(signature_b64)
    except ValueError:
        raise MalformedJWS("signature") from None
    signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
    return Compact(header, payload_b64, signing_input, signature)


def sign(key: PrivateKey, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """Serialize and sign; ``header["alg"]`` must name the algorithm that fits ``key``."""
    alg = header.get("alg")
    signing_input = (
        b64url_encode(orjson.dumps(header)) + "." + b64url_encode(orjson.dumps(claims))
    ).encode("ascii")
    if alg == "EdDSA" and isinstance(key, Ed25519PrivateKey):
        signature = key.sign(signing_input)
    elif alg == "ES256" and isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(_ES256_SIZE, "big") + s.to_bytes(_ES256_SIZE, "big")
    else:
        raise ValueError(f"cannot sign alg {alg!r} with this key")
    return signing_input.decode("ascii") + "." + b64url_encode(signature)


def verify(key: PublicKey, alg: str, signing_input: bytes, signature: bytes) -> bool:
    """True if ``signature`` is a valid ``alg`` signature by ``key``; never raises for bad input."""
    try:
        if alg == "EdDSA" and isinstance(key, Ed25519PublicKey):
            key.verify(signature, signing_input)
            return True
        if alg == "ES256" and isinstance(key, ec.EllipticCurvePublicKey):
            if len(signature) != 2 * _ES256_SIZE:
                return False
            r = int.from_bytes(signature[:_ES256_SIZE], "big")
            s = int.from_bytes(signature[_ES256_SIZE:], "big")
            key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(hashes.SHA256()))
            return True
    except InvalidSignature:
        return False
    return False

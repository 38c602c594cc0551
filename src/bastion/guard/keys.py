"""Bastion's public signing keys, as the guard sees them: a JWKS fetched from Bastion's
``/.well-known/jwks.json`` (or read from a file), cached.

The keys are the guard's trust anchor, so the URL must be https (plain http only on loopback),
redirects are not followed, and only Ed25519 public keys with a ``kid`` are kept: anything else in
the set (private members, other key types) is dropped. Keys are loaded on first use, reloaded
after ``ttl`` seconds, and reloaded early when an assertion names a ``kid`` the guard does not
know (Bastion rotated its key) — at most once every ``min_interval`` seconds, so assertions with
made-up ``kid`` values cannot turn the guard into a flood of requests at Bastion. A failed reload
keeps the last good keys; with no keys at all every request is refused with 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bastion.config.urls import endpoint_url
from bastion.errors import Unavailable
from bastion.identity.keys import PRIVATE_MEMBERS, load_public_key
from bastion.tls import client_context

log = logging.getLogger("bastion.guard")
MAX_JWKS_BYTES = 256 * 1024
MAX_KID = 200


class _LoadFailed(Exception):
    """Why a load failed, for the log (never the document itself)."""


class GuardKeys:
    """Ed25519 keys by ``kid`` from exactly one of ``url`` or ``file``."""

    def __init__(
        self,
        *,
        url: str | None = None,
        file: Path | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        ttl: float = 300.0,
        min_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (url is None) == (file is None):
            raise ValueError("give exactly one of a JWKS URL and a JWKS file")
        if url is not None:
            endpoint_url(url)  # ValueError says what is wrong with it
        self._url = url
        self._file = file
        self._transport = transport
        self._ttl = ttl
        self._min_interval = min_interval
        self._clock = clock
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._loaded_at: float | None = None
        self._tried_at: float | None = None
        self._lock = asyncio.Lock()

    @property
    def source(self) -> str:
        return self._url or f"file {self._file}"

    async def get(self, kid: str) -> Ed25519PublicKey | None:
        """The key named ``kid``, or None if Bastion does not publish one by that name;
        :class:`Unavailable` if no keys could be loaded at all."""
        if self._due(kid):
            async with self._lock:
                if self._due(kid):  # another request may have reloaded while this one waited
                    await self._reload()
        if not self._keys:
            raise Unavailable("the guard has no Bastion signing keys yet (see the guard's log)")
        return self._keys.get(kid)

    def _due(self, kid: str) -> bool:
        now = self._clock()
        stale = self._loaded_at is None or now - self._loaded_at >= self._ttl
        if not stale and kid in self._keys:
            return False
        return self._tried_at is None or now - self._tried_at >= self._min_interval

    async def _reload(self) -> None:
        self._tried_at = self._clock()
        try:
            keys = parse_jwks(await self._load())
        except _LoadFailed as failure:
            kept = f"; keeping {len(self._keys)} known keys" if self._keys else ""
            log.warning("cannot load Bastion's keys from %s: %s%s", self.source, failure, kept)
            return
        self._keys, self._loaded_at = keys, self._tried_at

    async def _load(self) -> bytes:
        if self._file is not None:
            return await anyio.to_thread.run_sync(_read_file, self._file)
        assert self._url is not None
        try:
            async with httpx.AsyncClient(
                transport=self._transport,
                timeout=5.0,
                trust_env=False,
                follow_redirects=False,
                verify=client_context(),
            ) as client:
                response = await client.get(self._url, headers={"accept": "application/json"})
        except httpx.HTTPError as exc:
            raise _LoadFailed(type(exc).__name__) from None
        if response.status_code != 200:
            raise _LoadFailed(f"HTTP {response.status_code}")
        return response.content


def _read_file(path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            return file.read(MAX_JWKS_BYTES + 1)
    except OSError as exc:
        raise _LoadFailed(f"cannot read the file ({exc.strerror})") from None


def parse_jwks(raw: bytes) -> dict[str, Ed25519PublicKey]:
    """The usable keys of a JWKS document by ``kid``; :class:`_LoadFailed` if there are none."""
    if len(raw) > MAX_JWKS_BYTES:
        raise _LoadFailed(f"the JWKS is larger than {MAX_JWKS_BYTES} bytes")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _LoadFailed("the JWKS is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise _LoadFailed("the JWKS has no 'keys' list")
    keys: dict[str, Ed25519PublicKey] = {}
    for jwk in document["keys"]:
        key = _usable(jwk)
        if key is not None:
            keys[jwk["kid"]] = key
    if not keys:
        raise _LoadFailed("the JWKS holds no Ed25519 signing key with a kid")
    return keys


def _usable(jwk: Any) -> Ed25519PublicKey | None:
    if not isinstance(jwk, Mapping) or PRIVATE_MEMBERS & jwk.keys():
        return None
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID:
        return None
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        return None
    if jwk.get("use", "sig") != "sig" or jwk.get("alg", "EdDSA") != "EdDSA":
        return None
    try:
        key = load_public_key(jwk)
    except ValueError:
        return None
    return key if isinstance(key, Ed25519PublicKey) else None

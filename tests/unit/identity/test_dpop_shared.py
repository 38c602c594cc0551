"""DPoP with a shared replay cache (cluster mode): ``verify_async`` awaits it, only proofs that
passed every other check reach it, and the in-memory path behaves exactly as ``verify``."""

from __future__ import annotations

import pytest

from bastion.errors import InvalidDPoPProof, ReplayCacheUnavailable
from bastion.identity.dpop import DPoPVerifier, sign_proof
from bastion.identity.keys import SigningKey, generate_private_jwk
from bastion.identity.replay import MemoryReplayCache

pytestmark = pytest.mark.anyio
URL = "https://gw.test/v1/chat/completions"
NOW = 1_800_000_000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeShared:
    """A shared cache in a dict (what Redis would hold), or one that cannot answer."""

    def __init__(self, down: bool = False) -> None:
        self.keys: dict[str, float] = {}
        self.down = down

    async def add(self, key: str, ttl: float, now: float) -> bool:
        if self.down:
            raise ReplayCacheUnavailable("the DPoP replay cache is unavailable")
        if key in self.keys:
            return False
        self.keys[key] = ttl
        return True


@pytest.fixture
def key() -> SigningKey:
    return SigningKey(generate_private_jwk("EdDSA"))


def proof(key: SigningKey) -> str:
    return sign_proof(key, method="POST", url=URL, now=NOW)


async def test_verify_async_without_a_shared_cache_is_verify(key: SigningKey) -> None:
    cache = MemoryReplayCache()
    verifier = DPoPVerifier(cache)
    one = proof(key)
    verified = await verifier.verify_async(one, method="POST", url=URL, access_token=None, now=NOW)
    assert verified.jkt == key.kid
    assert len(cache) == 1
    with pytest.raises(InvalidDPoPProof, match="replayed"):
        verifier.verify(one, method="POST", url=URL, access_token=None, now=NOW)


async def test_a_shared_cache_sees_each_proof_once(key: SigningKey) -> None:
    shared = FakeShared()
    local = MemoryReplayCache()
    verifier = DPoPVerifier(local, max_age=60, clock_skew=5, shared=shared)
    one = proof(key)
    verified = await verifier.verify_async(one, method="POST", url=URL, access_token=None, now=NOW)
    assert shared.keys == {f"{key.kid}:{verified.jti}": 65}
    assert len(local) == 0  # a local memory would let the proof through once per gateway
    with pytest.raises(InvalidDPoPProof, match="replayed"):
        await verifier.verify_async(one, method="POST", url=URL, access_token=None, now=NOW)


async def test_a_refused_proof_never_reaches_the_shared_cache(key: SigningKey) -> None:
    shared = FakeShared()
    verifier = DPoPVerifier(MemoryReplayCache(), shared=shared)
    with pytest.raises(InvalidDPoPProof, match="htm"):
        await verifier.verify_async(proof(key), method="GET", url=URL, access_token=None, now=NOW)
    with pytest.raises(InvalidDPoPProof, match="well-formed"):
        await verifier.verify_async("a.b", method="POST", url=URL, access_token=None, now=NOW)
    assert shared.keys == {}


async def test_a_shared_cache_that_cannot_answer_refuses_with_503(key: SigningKey) -> None:
    verifier = DPoPVerifier(MemoryReplayCache(), shared=FakeShared(down=True))
    with pytest.raises(ReplayCacheUnavailable) as refused:
        await verifier.verify_async(proof(key), method="POST", url=URL, access_token=None, now=NOW)
    assert (refused.value.status, refused.value.code) == (503, "replay_cache_unavailable")


def test_the_sync_check_is_refused_when_the_cache_is_shared(key: SigningKey) -> None:
    verifier = DPoPVerifier(MemoryReplayCache(), shared=FakeShared())
    with pytest.raises(RuntimeError, match="verify_async"):
        verifier.verify(proof(key), method="POST", url=URL, access_token=None, now=NOW)


async def test_a_local_fallback_is_marked_and_still_single_use(key: SigningKey) -> None:
    """The gateway's fallback while Redis is down: this process's cache, the proof marked so
    that strict compartments can refuse it."""
    local = MemoryReplayCache()
    verifier = DPoPVerifier(local, shared=FakeShared(down=True))
    one = proof(key)
    verified = await verifier.verify_async(
        one, method="POST", url=URL, access_token=None, now=NOW, local_fallback=True
    )
    assert verified.replay_local is True
    assert len(local) == 1
    with pytest.raises(InvalidDPoPProof, match="replayed"):
        await verifier.verify_async(
            one, method="POST", url=URL, access_token=None, now=NOW, local_fallback=True
        )


async def test_a_shared_answer_is_not_marked_local(key: SigningKey) -> None:
    verifier = DPoPVerifier(MemoryReplayCache(), shared=FakeShared())
    verified = await verifier.verify_async(
        proof(key), method="POST", url=URL, access_token=None, now=NOW, local_fallback=True
    )
    assert verified.replay_local is False

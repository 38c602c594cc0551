"""Bastion's keys as the guard loads them: cached, reloaded on rotation but not on every made-up
kid, only Ed25519 public keys kept, the last good set kept through an outage."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from bastion.errors import Unavailable
from bastion.guard import GuardKeys
from bastion.identity.keys import IssuerKey, generate_private_jwk

from .conftest import Clock

pytestmark = pytest.mark.anyio
URL = "https://bastion.test/.well-known/jwks.json"


class Bastion:
    """A JWKS endpoint that counts its fetches and can be changed or broken."""

    def __init__(self, *keys: IssuerKey) -> None:
        self.document: object = {"keys": [k for key in keys for k in key.jwks()["keys"]]}
        self.status = 200
        self.fetches = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        return httpx.Response(self.status, json=self.document)

    def keys(self, clock: Clock) -> GuardKeys:
        return GuardKeys(
            url=URL, transport=httpx.MockTransport(self.handler), clock=clock, min_interval=10
        )


async def test_keys_load_once_and_are_cached() -> None:
    issuer = IssuerKey.generate()
    bastion, clock = Bastion(issuer), Clock(0)
    keys = bastion.keys(clock)
    for _ in range(5):
        key = await keys.get(issuer.kid)
        assert key is not None
        assert key.public_bytes_raw() == issuer.verify_key.public_bytes_raw()
    assert bastion.fetches == 1
    clock.now = 301  # past the ttl: loaded again
    await keys.get(issuer.kid)
    assert bastion.fetches == 2


async def test_a_rotated_key_is_found_but_made_up_kids_do_not_flood_bastion() -> None:
    old, new = IssuerKey.generate(), IssuerKey.generate()
    bastion, clock = Bastion(old), Clock(0)
    keys = bastion.keys(clock)
    assert await keys.get(old.kid) is not None
    for _ in range(20):
        assert await keys.get("made-up") is None
    assert bastion.fetches == 1  # within min_interval of the last load: no fetch
    bastion.document = {"keys": [*new.jwks()["keys"], *old.jwks()["keys"]]}
    clock.now = 10
    assert await keys.get(new.kid) is not None  # rotation: reloaded once
    assert await keys.get(old.kid) is not None
    assert bastion.fetches == 2


async def test_only_ed25519_public_keys_with_a_kid_are_kept() -> None:
    good = IssuerKey.generate()
    private = {**generate_private_jwk("EdDSA"), "kid": "leaked"}
    p256 = {**generate_private_jwk("ES256"), "kid": "p256"}
    p256.pop("d")
    no_kid = dict(IssuerKey.generate().jwks()["keys"][0])
    no_kid.pop("kid")
    enc = {**IssuerKey.generate().jwks()["keys"][0], "kid": "enc", "use": "enc"}
    bastion = Bastion()
    bastion.document = {"keys": [private, p256, no_kid, enc, "junk", *good.jwks()["keys"]]}
    keys = bastion.keys(Clock(0))
    assert await keys.get(good.kid) is not None
    for kid in ("leaked", "p256", "enc"):
        assert await keys.get(kid) is None


@pytest.mark.parametrize(
    "document", [{"keys": []}, {"nokeys": 1}, [1, 2], {"keys": [{"kty": "oct", "k": "AA"}]}]
)
async def test_a_jwks_without_usable_keys_means_503(document: object) -> None:
    bastion = Bastion()
    bastion.document = document
    with pytest.raises(Unavailable):
        await bastion.keys(Clock(0)).get("any")


async def test_bastion_down_at_start_is_503_then_recovers_after_the_interval() -> None:
    issuer = IssuerKey.generate()
    bastion, clock = Bastion(issuer), Clock(0)
    bastion.status = 503
    keys = bastion.keys(clock)
    with pytest.raises(Unavailable):
        await keys.get(issuer.kid)
    bastion.status = 200
    with pytest.raises(Unavailable):
        await keys.get(issuer.kid)  # retried only after min_interval
    clock.now = 10
    assert await keys.get(issuer.kid) is not None


async def test_an_outage_keeps_the_last_good_keys() -> None:
    issuer = IssuerKey.generate()
    bastion, clock = Bastion(issuer), Clock(0)
    keys = bastion.keys(clock)
    assert await keys.get(issuer.kid) is not None
    bastion.status = 500
    clock.now = 1000
    assert await keys.get(issuer.kid) is not None
    assert bastion.fetches == 2


async def test_keys_from_a_file(tmp_path: Path) -> None:
    issuer = IssuerKey.generate()
    path = tmp_path / "jwks.json"
    path.write_bytes(orjson.dumps(issuer.jwks()))
    assert await GuardKeys(file=path).get(issuer.kid) is not None
    with pytest.raises(Unavailable):
        await GuardKeys(file=tmp_path / "missing.json").get(issuer.kid)
    path.write_bytes(b" " * (256 * 1024 + 1))
    with pytest.raises(Unavailable):
        await GuardKeys(file=path).get(issuer.kid)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://bastion.example.com/.well-known/jwks.json", "https"),
        ("https://user:pw@bastion.test/jwks", "credentials"),
        ("https:///jwks", "host"),
    ],
)
def test_a_jwks_url_that_could_be_tampered_with_is_refused(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        GuardKeys(url=url)


def test_exactly_one_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        GuardKeys()
    with pytest.raises(ValueError, match="exactly one"):
        GuardKeys(url=URL, file=tmp_path / "jwks.json")

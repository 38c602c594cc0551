"""The generated bastion.yaml validates, and the IP databases say what the world says."""

from __future__ import annotations

import random
from pathlib import Path

import httpx
import pytest

from bastion.config import load_config
from bastion.detect.signals import SignalsLoader
from bastion.simulate.files import config_text, write_databases
from bastion.simulate.plan import START
from bastion.simulate.upstream import StandInUpstream
from bastion.simulate.world import ACME, GLOBEX, HONEYTOKEN, INITECH, build_world

pytestmark = pytest.mark.anyio


def test_the_generated_config_is_a_valid_bastion_config(tmp_path: Path) -> None:
    world = build_world(random.Random(1), 7)
    write_databases(world, tmp_path / "ipintel")
    path = tmp_path / "bastion.yaml"
    path.write_text(config_text(world, {INITECH: 86400.0}, tmp_path / "ipintel"))
    config = load_config(path)
    assert set(config.orgs) == {"lab", ACME, GLOBEX, INITECH}
    assert config.orgs[INITECH].contract is not None
    assert config.orgs[INITECH].contract.end.timestamp() == START.timestamp() + 86400
    assert config.orgs[INITECH].allowed_networks
    assert config.orgs[ACME].working_hours
    assert config.orgs["lab"].allowed_origins == ("hosting",)
    assert {c.level for c in config.compartments.values()} == {
        "open",
        "internal",
        "restricted",
        "critical",
    }
    assert config.detection.honeytokens.principals == (HONEYTOKEN,)
    declared = {p.name for p in world.people.values() if p.declared}
    assert declared <= set(config.principals)
    assert not {p.name for p in world.people.values() if not p.declared} & set(config.principals)
    signals = SignalsLoader(path).load(config)  # the databases open as the gateway opens them
    nets = world.nets
    tor = signals.origin(nets["tor-exit"].host(1))
    assert (tor.asn, tor.country, tor.origin) == (64802, "DE", "anonymizer")
    cloud = signals.origin(nets["lab-cloud"].host(1))
    assert (cloud.asn, cloud.country, cloud.origin) == (64602, "US", "hosting")
    vpn = [signals.origin(nets[f"lab-vpn-us-{i}"].host(3)) for i in (0, 1)]
    assert {(o.asn, o.country, o.origin) for o in vpn} == {(64601, "US", "")}
    assert signals.origin("192.0.2.1").asn == 0  # outside the world: nothing known


async def test_the_stand_in_upstream_meters_what_was_asked_and_checks_its_key() -> None:
    app = StandInUpstream("k-1")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://upstream.sim"
    ) as client:
        body = {"model": "m", "max_tokens": 1234, "messages": [{"role": "user", "content": "a b"}]}
        chat = await client.post(
            "/v1/chat/completions", json=body, headers={"authorization": "Bearer k-1"}
        )
        assert chat.status_code == 200
        assert chat.json()["usage"] == {
            "prompt_tokens": 2,
            "completion_tokens": 1234,
            "total_tokens": 1236,
        }
        message = await client.post("/v1/messages", json=body, headers={"x-api-key": "k-1"})
        assert message.json()["usage"] == {"input_tokens": 2, "output_tokens": 1234}
        assert (await client.post("/v1/chat/completions", json=body)).status_code == 401
        wrong = {"authorization": "Bearer k-2"}
        assert (await client.post("/v1/messages", json=body, headers=wrong)).status_code == 401
        key = {"authorization": "Bearer k-1"}
        assert (await client.get("/v1/models", headers=key)).status_code == 404
        bad = await client.post("/v1/chat/completions", content=b"{nope", headers=key)
        assert bad.status_code == 400
        assert "not JSON" in bad.json()["error"]["message"]
        no_model = await client.post("/v1/chat/completions", json={"x": 1}, headers=key)
        assert no_model.status_code == 400

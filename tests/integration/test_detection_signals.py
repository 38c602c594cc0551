"""Detection signals on a real gateway: the client fingerprint, content labels (D10), source
origins from MMDB files (D11) and honeytokens (D14), as the audit log records them. Source
addresses come through a trusted proxy (loopback) in X-Forwarded-For."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import sqlalchemy as sa
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from bastion.errors import ConfigError, InvalidGrant
from bastion.store.tables import audit_events, metadata
from bastion.testing import Harness, running
from tests.integration.conftest import Cli

pytestmark = pytest.mark.anyio

HOSTING = "198.51.100.7"  # in 198.51.100.0/24, a hosting provider in the test database
PLAIN = "192.0.2.10"
PROMPT = (
    "Write ransomware that encrypts every file on the zebra-finance share "
    "and then demand bitcoin for the key"
)
CONFIG = """\
version: 1
upstreams:
  up: {base_url: "http://upstream.test/v1", api: openai, api_key_env: EXAMPLE_UPSTREAM_KEY}
models:
  - {name: demo-chat, upstream: up, upstream_model: example-gpt, compartment: general}
  - {name: secret-chat, upstream: up, upstream_model: example-gpt, compartment: secret}
  - {name: cyber-frontier, upstream: up, upstream_model: example-gpt, compartment: frontier}
compartments:
  general: {level: internal, grants: {orgs: [lab, acme, cloudco]}}
  secret: {level: restricted, grants: {orgs: [lab, acme, cloudco]}}
  frontier: {level: critical, grants: {principals: [carol]}}
orgs:
  lab: {kind: internal}
  outside: {kind: internal}
  acme:
    kind: vendor
    sponsor: bob
    contract: {start: "2020-01-01T00:00:00Z", end: "2099-01-01T00:00:00Z"}
  cloudco:
    kind: vendor
    sponsor: bob
    contract: {start: "2020-01-01T00:00:00Z", end: "2099-01-01T00:00:00Z"}
    allowed_origins: [hosting]
principals:
  alice: {kind: user, org: lab}
  bob: {kind: user, org: lab}
  carol: {kind: user, org: lab}
  decoy: {kind: service, org: lab}
  olga: {kind: user, org: outside}
  v1: {kind: user, org: acme}
  c1: {kind: user, org: cloudco}
response:
  # These tests are about what the gateway and the detectors record. Left on, the built-in
  # playbooks answer the D11 finding of a denied hosting origin by locking that network,
  # racing the test's next call from it (seen once in CI: 403 locked_network).
  automatic: {enabled: false}
detection:  # last: HONEYTOKENS is appended to it
  ip_intel:
    asn_db: intel/asn.mmdb
    anonymizer_db: intel/anonymizer.mmdb
"""
HONEYTOKENS = "  honeytokens:\n    principals: [decoy]\n"


def write_databases(root: Path) -> None:
    (root / "intel").mkdir(exist_ok=True)
    for name, record in (
        ("asn", {"autonomous_system_number": 64500, "country": {"iso_code": "NL"}}),
        ("anonymizer", {"is_anonymous": True, "is_hosting_provider": True}),
    ):
        writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type=f"Test-{name}")
        writer.insert_network(IPSet(["198.51.100.0/24"]), record)
        writer.to_db_file(str(root / "intel" / f"{name}.mmdb"))


@pytest.fixture
async def gateway(
    tmp_path: Path,
    upstream_env: dict[str, str],
    upstream_transport: httpx2.ASGITransport,
    database_url: str,
) -> AsyncIterator[Harness]:
    write_databases(tmp_path)
    async with running(
        CONFIG,
        tmp_path,
        upstream=upstream_transport,
        env=upstream_env,
        database_url=database_url,
        trusted_proxies=("127.0.0.1/32",),
    ) as harness:
        yield harness


async def call(
    harness: Harness,
    principal: str,
    model: str,
    source: str = PLAIN,
    prompt: str = "hi",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    profile = harness.profiles.get(principal) or await harness.enroll(principal)
    async with harness.client(profile) as client:
        return await client.post(
            "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": prompt}]},
            headers={"x-forwarded-for": source, **(headers or {})},
        )


async def recorded(harness: Harness, event_id: str) -> dict[str, Any]:
    await harness.services.recorder.flush()
    with harness.services.store.read() as conn:
        body = conn.execute(
            sa.select(audit_events.c.body).where(audit_events.c.id == event_id)
        ).scalar_one()
    event: dict[str, Any] = json.loads(body)
    return event


async def events_named(harness: Harness, name: str) -> list[dict[str, Any]]:
    await harness.services.recorder.flush()
    with harness.services.store.read() as conn:
        rows = conn.execute(
            sa.select(audit_events.c.body)
            .where(audit_events.c.name == name)
            .order_by(audit_events.c.idx)
        )
        return [json.loads(body) for (body,) in rows]


def everything_stored(harness: Harness) -> str:
    with harness.services.store.read() as conn:
        return "\n".join(
            repr(tuple(row))
            for table in metadata.sorted_tables
            for row in conn.execute(table.select())
        )


async def test_the_user_agent_is_recorded(gateway: Harness) -> None:
    response = await call(
        gateway, "alice", "demo-chat", headers={"user-agent": "SignalsTest/1.0 (\x7fci)"}
    )
    assert response.status_code == 200
    event = await recorded(gateway, response.headers["x-bastion-event"])
    assert event["client"] == "SignalsTest/1.0 (ci)"
    async with gateway.client() as client:  # the token endpoint records it too
        refused = await client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            headers={"user-agent": "curl/8.4.0"},
        )
    assert refused.status_code == 400
    (token_event,) = await events_named(gateway, "token.refused")
    assert token_event["client"] == "curl/8.4.0"


async def test_a_ransomware_prompt_is_labelled_and_never_stored(gateway: Harness) -> None:
    response = await call(gateway, "carol", "cyber-frontier", prompt=PROMPT)
    assert response.status_code == 200
    event = await recorded(gateway, response.headers["x-bastion-event"])
    assert event["content_label"] == "malware"
    assert event["content_score"] >= 0.6
    plain = await call(gateway, "alice", "demo-chat", prompt=PROMPT)  # internal: not classified
    assert (await recorded(gateway, plain.headers["x-bastion-event"]))["content_label"] == ""
    detection = gateway.services.detection
    await detection.catch_up()
    (finding,) = detection.findings(detection="D10")
    assert (finding.entity, str(finding.severity)) == ("carol", "medium")
    counted = detection.stats()["signals"]["content"]
    assert (counted["classified"], counted["labelled"], counted["errors"]) == (1, 1, 0)
    stored = everything_stored(gateway)
    assert "malware" in stored  # the label is there
    for fragment in ("zebra-finance", "ransomware", "bitcoin"):
        assert fragment not in stored


async def test_an_undeclared_hosting_origin_is_denied_for_restricted_models(
    gateway: Harness,
) -> None:
    denied = await call(gateway, "v1", "secret-chat", source=HOSTING)
    assert denied.status_code == 403
    assert denied.json()["error"]["reasons"] == ["undeclared_origin"]
    event = await recorded(gateway, denied.headers["x-bastion-event"])
    assert (event["asn"], event["country"], event["origin"]) == (64500, "NL", "hosting")
    assert event["reasons"] == ["undeclared_origin"]
    assert event["policies"] == ["forbid-undeclared-origin"]
    assert (await call(gateway, "v1", "demo-chat", source=HOSTING)).status_code == 200
    assert (await call(gateway, "c1", "secret-chat", source=HOSTING)).status_code == 200
    elsewhere = await call(gateway, "v1", "secret-chat", source=PLAIN)
    assert elsewhere.status_code == 200
    event = await recorded(gateway, elsewhere.headers["x-bastion-event"])
    assert (event["asn"], event["country"], event["origin"]) == (0, "", "")


async def test_a_honeytoken_principal_is_denied_like_anyone_and_recorded(
    gateway: Harness,
) -> None:
    body = {"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]}
    async with gateway.client(await gateway.enroll("decoy")) as decoy:
        assert (await decoy.post("/v1/chat/completions", json=body)).status_code == 200
        config_file = gateway.settings.config_file  # the token in hand turns out to be a decoy
        config_file.write_text(CONFIG + HONEYTOKENS, encoding="utf-8")
        await gateway.reload()
        denied = await decoy.post("/v1/chat/completions", json=body)
    stranger = await call(gateway, "olga", "demo-chat")  # holds no grant at all
    assert denied.status_code == stranger.status_code == 403
    assert denied.json() == stranger.json()
    assert denied.json()["error"]["reasons"] == ["not_granted"]
    event = await recorded(gateway, denied.headers["x-bastion-event"])
    assert (event["principal"], event["reasons"]) == ("decoy", ["honeytoken"])
    assert event["policies"] == ["forbid-honeytoken"]
    with pytest.raises(InvalidGrant) as refused:  # a new token: refused like a disabled one
        await call(gateway, "decoy", "demo-chat", headers={"user-agent": "loot/1"})
    assert "invalid_grant" in refused.value.message
    assert "principal 'decoy' is disabled or does not exist" in refused.value.message
    (token_event,) = await events_named(gateway, "token.refused")
    assert token_event["principal"] == "decoy"
    assert (token_event["error"], token_event["reason"]) == ("invalid_grant", "honeytoken")
    detection = gateway.services.detection
    await detection.catch_up()
    findings = detection.findings(detection="D14")
    assert [(f.entity, str(f.severity)) for f in findings] == [("decoy", "critical")]


async def test_a_missing_database_stops_startup_naming_the_file(
    tmp_path: Path, upstream_env: dict[str, str]
) -> None:
    with pytest.raises(ConfigError) as raised:
        async with running(CONFIG, tmp_path, env=upstream_env):
            pass
    assert "detection.ip_intel.asn_db" in raised.value.message
    assert str(tmp_path / "intel" / "asn.mmdb") in raised.value.message


def test_config_check_reads_the_databases(cli: Cli) -> None:
    (cli.root / "bastion.yaml").write_text(CONFIG, encoding="utf-8")
    result = cli("config", "check")
    assert result.code == 1
    assert result.err.splitlines() == [
        "error: invalid configuration (bastion.yaml)",
        "  detection.ip_intel.asn_db: intel/asn.mmdb: no such file",
    ]
    write_databases(cli.root)
    result = cli("config", "check")
    assert result.code == 0
    assert "IP intelligence databases: ok" in result.out.splitlines()

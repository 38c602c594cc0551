"""Incidents on a real gateway: official SDK clients make the traffic (from several networks,
through a trusted proxy hop), findings on it are attached the way the response service does,
and the admin API and the CLI show, resolve and assign them."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import orjson
import pytest
import sqlalchemy as sa

from bastion.audit.events import RequestDecided
from bastion.detect.findings import Finding, Severity
from bastion.respond.entities import implicated
from bastion.respond.incidents import IncidentService
from bastion.store import Store
from bastion.store import findings as finding_rows
from bastion.store.incidents import IncidentRow
from bastion.store.tables import audit_events
from bastion.testing import BASE_URL, Harness, running
from tests.conftest import CONFIG
from tests.integration.conftest import Cli

pytestmark = pytest.mark.anyio

INCIDENT_CONFIG = (
    CONFIG.replace(
        "  audrey: {kind: user, org: lab, roles: [auditor]}\n",
        "  audrey: {kind: user, org: lab, roles: [auditor]}\n"
        "  root: {kind: user, org: lab, roles: [admin]}\n"
        "  vera: {kind: user, org: acme}\n",
    )
    # these tests attach findings themselves; playbooks must not act on the detector's own
    + "response:\n  automatic:\n    enabled: false\n"
)
BOB_NET, CAROL_IP, VICTOR_IP = "203.0.113.5", "198.51.100.7", "192.0.2.10"


@pytest.fixture
async def gateway(
    tmp_path: Path,
    upstream_env: dict[str, str],
    upstream_transport: httpx2.ASGITransport,
    database_url: str,
) -> AsyncIterator[Harness]:
    async with running(
        INCIDENT_CONFIG,
        tmp_path,
        upstream=upstream_transport,
        env=upstream_env,
        database_url=database_url,
        trusted_proxies=("127.0.0.1/32",),
    ) as harness:
        yield harness


async def chat(harness: Harness, principal: str, model: str, source: str) -> int:
    """One chat completion through the gateway from ``source``; the output tokens (or -status)."""
    profile = harness.profiles.get(principal) or await harness.enroll(principal)
    http = harness.sdk_client(profile)
    sdk = openai.AsyncOpenAI(
        base_url=BASE_URL + "/v1", api_key="unused", http_client=http, max_retries=0
    )
    async with http:
        try:
            reply = await sdk.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "hello there"}],
                extra_headers={"x-forwarded-for": source},
            )
        except openai.APIStatusError as error:
            return -error.status_code
    assert reply.usage is not None
    return reply.usage.completion_tokens


def request_ids(store: Store, principal: str) -> list[str]:
    with store.read() as conn:
        rows = conn.execute(
            sa.select(audit_events.c.id, audit_events.c.body)
            .where(audit_events.c.name == "request.decided")
            .order_by(audit_events.c.idx)
        )
        return [row.id for row in rows if json.loads(row.body)["principal"] == principal]


def make_finding(
    n: int,
    entity: str,
    *,
    detection: str = "D1",
    entity_type: str = "principal",
    org: str = "lab",
    evidence: tuple[str, ...] = (),
    severity: Severity = Severity.MEDIUM,
    explanation: str = "new environment",
) -> Finding:
    now = time.time()
    return Finding(
        id=f"fd_{n:016x}",
        detection=detection,
        severity=severity,
        confidence=0.8,
        techniques=("T1078",),
        entity_type=entity_type,
        entity=entity,
        principal=entity if entity_type == "principal" else "",
        org=org,
        explanation=explanation,
        evidence=evidence,
        first_seen=now,
        last_seen=now,
    )


def attach(store: Store, service: IncidentService, finding: Finding) -> IncidentRow:
    """What the response service does: store, resolve what it implicates, attach, one commit."""
    with store.begin() as conn:
        finding_rows.upsert(conn, [finding])
        row, _ = service.attach(conn, finding, implicated(conn, finding), time.time())
    return row


@dataclass
class World:
    bob: IncidentRow
    carol: IncidentRow
    victor: IncidentRow
    vera: IncidentRow
    bob_served: list[int]  # output tokens of each of bob's allowed requests


async def make_world(harness: Harness) -> World:
    """bob: two allowed requests and one refused from 203.0.113.0/24; alice shares that /24;
    carol and victor elsewhere. Findings: two on bob, one on carol, one on victor, an org-wide
    one on acme, and one on vera (acme, nothing else shared)."""
    served = [await chat(harness, "bob", "demo-chat", BOB_NET) for _ in range(2)]
    assert all(tokens > 0 for tokens in served)
    assert await chat(harness, "bob", "cyber-frontier", BOB_NET) == -403
    assert await chat(harness, "alice", "demo-chat", "203.0.113.77") > 0
    assert await chat(harness, "carol", "demo-chat", CAROL_IP) > 0
    assert await chat(harness, "victor", "demo-chat", VICTOR_IP) == -403
    assert await chat(harness, "vera", "demo-chat", "100.64.1.1") == -403
    await harness.services.recorder.flush()
    store, service = harness.services.store, harness.services.incidents
    bob_events = request_ids(store, "bob")
    assert len(bob_events) == 3
    bob = attach(store, service, make_finding(1, "bob", evidence=(bob_events[0],)))
    again = attach(
        store,
        service,
        make_finding(2, "bob", detection="D6", severity=Severity.HIGH, evidence=(bob_events[2],)),
    )
    assert again.id == bob.id
    carol = attach(
        store, service, make_finding(3, "carol", evidence=tuple(request_ids(store, "carol")))
    )
    victor_events = tuple(request_ids(store, "victor"))
    victor = attach(store, service, make_finding(4, "victor", org="acme", evidence=victor_events))
    campaign = make_finding(5, "acme", detection="D12", entity_type="org", org="acme")
    assert attach(store, service, campaign).id == victor.id
    vera_events = tuple(request_ids(store, "vera"))
    vera = attach(store, service, make_finding(6, "vera", org="acme", evidence=vera_events))
    return World(service.get(bob.id), carol, service.get(victor.id), vera, served)


async def test_findings_group_by_entity_and_the_incident_shows_timeline_and_blast_radius(
    gateway: Harness,
) -> None:
    world = await make_world(gateway)
    ids = {world.bob.id, world.carol.id, world.victor.id, world.vera.id}
    assert len(ids) == 4  # bob's two findings, victor's and acme's campaign each grouped
    assert world.bob.severity == Severity.HIGH
    assert world.bob.entities.networks == {"203.0.113.0/24"}
    assert world.victor.severity == Severity.MEDIUM
    assert "acme" in world.victor.entities.orgs

    detail = gateway.services.incidents.detail(world.bob.id)
    assert [f.id for f in detail.findings] == [f"fd_{1:016x}", f"fd_{2:016x}"]
    summaries = [entry.summary for entry in detail.timeline.entries]
    bob_requests = [s for s in summaries if s.startswith("request.decided bob")]
    assert bob_requests == [
        *(
            f"request.decided bob → model demo-chat allowed (completed, {tokens} tokens out) "
            f"from {BOB_NET}"
            for tokens in world.bob_served
        ),
        f"request.decided bob → model cyber-frontier DENIED not_granted from {BOB_NET}",
    ]
    assert any(s.startswith("request.decided alice") for s in summaries)  # same /24
    assert any(s.startswith("token.issued bob") for s in summaries)  # his login, by principal
    assert not any("carol" in s or "victor" in s for s in summaries)
    assert [e.name for e in detail.timeline.entries if e.kind == "admin"] == [
        "key.enrolled",  # his device key, by the harness
        "incident.opened",
        "incident.finding_added",
    ]
    assert detail.timeline.start == detail.incident.first_signal_at - 3600
    assert not detail.timeline.truncated

    blast = detail.blast_radius
    assert [(m.model, m.compartment, m.requests) for m in blast.models] == [
        ("demo-chat", "general", 2)
    ]
    assert (blast.requests_served, blast.requests_denied) == (2, 1)
    assert blast.tokens_out == sum(world.bob_served)
    assert [(s.principal, s.via) for s in blast.shared_infrastructure] == [
        ("alice", ("network 203.0.113.0/24",))
    ]
    # each SDK client above logged in afresh: three families, none revoked
    assert [f.principal for f in blast.live_families] == ["bob"] * 3
    assert [(g.compartment, g.kind, g.via) for g in blast.grants] == [
        ("general", "standing", "org lab")
    ]

    carol = gateway.services.incidents.detail(world.carol.id)
    assert carol.blast_radius.shared_infrastructure == ()
    assert not any("bob" in e.summary for e in carol.timeline.entries)


async def admin_call(
    harness: Harness, who: str, method: str, path: str, body: Any = None, **params: Any
) -> httpx.Response:
    profile = harness.profiles.get(who) or await harness.enroll(who)
    async with harness.client(profile) as client:
        return await client.request(method, path, json=body, params=params or None)


async def test_the_admin_api_reads_for_auditors_and_changes_for_admins_only(
    gateway: Harness,
) -> None:
    world = await make_world(gateway)
    listed = await admin_call(gateway, "audrey", "GET", "/admin/v1/incidents")
    assert listed.status_code == 200, listed.text
    rows = listed.json()["incidents"]
    assert {row["id"] for row in rows} == {
        world.bob.id,
        world.carol.id,
        world.victor.id,
        world.vera.id,
    }
    bob_row = next(row for row in rows if row["id"] == world.bob.id)
    assert (bob_row["status"], bob_row["severity"], bob_row["owner"]) == ("open", "high", None)
    assert bob_row["entities"]["principals"] == ["bob"]
    shown = await admin_call(gateway, "audrey", "GET", f"/admin/v1/incidents/{world.bob.id}")
    assert shown.status_code == 200, shown.text
    detail = shown.json()
    assert detail["incident"]["id"] == world.bob.id
    assert [f["id"] for f in detail["findings"]] == [f"fd_{1:016x}", f"fd_{2:016x}"]
    assert detail["blast_radius"]["requests_served"] == 2
    assert detail["blast_radius"]["tokens_out"] == sum(world.bob_served)
    assert any(e["kind"] == "request" for e in detail["timeline"]["entries"])

    # who may do what
    for who in ("victor", "alice"):
        refused = await admin_call(gateway, who, "GET", "/admin/v1/incidents")
        assert refused.status_code == 403, refused.text
    resolve = f"/admin/v1/incidents/{world.bob.id}/resolve"
    assign = f"/admin/v1/incidents/{world.bob.id}/assign"
    auditor = await admin_call(gateway, "audrey", "POST", resolve, {"reason": "fine"})
    assert auditor.status_code == 403
    async with gateway.client() as anonymous:
        assert (await anonymous.get("/admin/v1/incidents")).status_code == 401
        spec = (await anonymous.get("/admin/openapi.json")).json()
    assert set(spec["paths"]["/v1/incidents/{incident_id}/resolve"]) == {"post"}
    for name in ("IncidentResolution", "IncidentAssignment"):
        assert spec["components"]["schemas"][name]["additionalProperties"] is False

    # bad input changes nothing
    for body in ({"reason": ""}, {"reason": "r" * 1001}, {"reason": "ok", "extra": 1}, {}):
        bad = await admin_call(gateway, "root", "POST", resolve, body)
        assert bad.status_code == 400, (body, bad.text)
        assert bad.json()["error"]["code"] == "invalid_request"
    for owner in ("", "[red]x[/]", "sam smith", "o" * 129):
        bad = await admin_call(gateway, "root", "POST", assign, {"owner": owner})
        assert bad.status_code == 400, (owner, bad.text)
    for path, params in (
        ("/admin/v1/incidents", {"status": "closed"}),
        ("/admin/v1/incidents", {"limit": 0}),
    ):
        assert (await admin_call(gateway, "root", "GET", path, **params)).status_code == 400
    missing = await admin_call(gateway, "root", "GET", "/admin/v1/incidents/in_nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "no incident 'in_nope'"
    gone = await admin_call(
        gateway, "root", "POST", "/admin/v1/incidents/in_nope/resolve", {"reason": "x"}
    )
    assert gone.status_code == 404
    assert gateway.services.incidents.get(world.bob.id).status == "open"

    assigned = await admin_call(gateway, "root", "POST", assign, {"owner": "audrey"})
    assert assigned.status_code == 200, assigned.text
    assert assigned.json()["owner"] == "audrey"
    done = await admin_call(gateway, "root", "POST", resolve, {"reason": "laptop reimaged"})
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["resolved_by"]) == ("resolved", "principal:root")
    twice = await admin_call(gateway, "root", "POST", resolve, {"reason": "again"})
    assert twice.status_code == 409
    still_open = await admin_call(gateway, "audrey", "GET", "/admin/v1/incidents", status="open")
    assert world.bob.id not in {row["id"] for row in still_open.json()["incidents"]}
    with gateway.services.store.read() as conn:
        bodies = [
            json.loads(row.body)
            for row in conn.execute(
                sa.select(audit_events.c.body)
                .where(audit_events.c.name.in_(["incident.assigned", "incident.resolved"]))
                .order_by(audit_events.c.idx)
            )
        ]
    assert [(b["name"], b["actor"], b["target"]) for b in bodies] == [
        ("incident.assigned", "principal:root", world.bob.id),
        ("incident.resolved", "principal:root", world.bob.id),
    ]


# -- the CLI ------------------------------------------------------------------------------------


def test_the_cli_lists_shows_resolves_and_assigns_with_text_as_written(admin_cli: Cli) -> None:
    store, audit = admin_cli.store, admin_cli.audit
    now = time.time()
    event = RequestDecided(
        time=now - 30,
        principal="bob",
        org="lab",
        model="demo-chat",
        compartment="general",
        route="/v1/chat/completions",
        allowed=True,
        reasons=(),
        policies=(),
        epoch=1,
        source_ip="203.0.113.5",
        family="fam_cli",
        jkt="jkt_cli",
        status=200,
        outcome="completed",
        tokens_out=42,
    )
    with store.begin() as conn:
        audit.append(conn, [event])
    service = IncidentService(store, audit)
    finding = make_finding(7, "bob", evidence=(event.id,), explanation="odd [b]x[/b] [/y]")
    incident = attach(store, service, finding)

    listed = admin_cli("incident", "list")
    assert listed.code == 0, listed.err
    assert incident.id in listed.out
    as_json = [
        orjson.loads(line) for line in admin_cli("incident", "list", "--json").out.splitlines()
    ]
    assert [(row["id"], row["status"]) for row in as_json] == [(incident.id, "open")]

    shown = admin_cli("incident", "show", incident.id)
    assert shown.code == 0, shown.err
    flat = " ".join(shown.out.split())
    assert "[b]x[/b] [/y]" in flat  # markup-like text is shown, not interpreted
    assert "status open · severity medium · owner -" in flat
    for needle in ("Findings", "Timeline", "request.decided", "Blast radius", "T-30s"):
        assert needle in shown.out, needle
    assert "requests: 1 served, 0 denied; output tokens served: 42" in flat
    assert "grants held: bob → general (standing, org lab)" in flat
    detail = orjson.loads(admin_cli("incident", "show", incident.id, "--json").out)
    assert detail["blast_radius"]["tokens_out"] == 42
    assert detail["timeline"]["entries"][0]["id"] == event.id

    assigned = admin_cli("incident", "assign", incident.id, "--owner", "sam")
    assert (assigned.code, assigned.out.strip()) == (0, f"{incident.id} assigned to sam")
    resolved = admin_cli("incident", "resolve", incident.id, "--reason", "[/x] pentest")
    assert (resolved.code, resolved.out.strip()) == (0, f"resolved {incident.id}: [/x] pentest")
    assert str(service.get(incident.id).resolved_by).startswith("cli:")

    for args, message in (
        (("resolve", incident.id, "--reason", "again"), "already resolved"),
        (("resolve", "in_nope", "--reason", "x"), "no incident 'in_nope'"),
        (("assign", incident.id, "--owner", "two words"), "an owner is a name"),
        (("show", "in_nope"), "no incident 'in_nope'"),
        (("list", "--status", "closed"), "unknown incident status"),
    ):
        failed = admin_cli("incident", *args)
        assert failed.code == 1, args
        assert message in failed.err, (args, failed.err)

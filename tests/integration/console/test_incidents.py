"""The Incidents pages, in-process on SQLite and PostgreSQL, on an incident made for real: alice's
token family used from a second network (D2, through a trusted proxy hop), which the built-in
``token-replay`` playbook answers by revoking the family and opening an incident.

Each action (lock, unlock, revoke, resolve) is checked for its effect (the next SDK call), its
audit event with the signed-in actor, its reason rules and its refusals; markup put into an
incident's title, a principal's name and reasons is shown as text."""

from __future__ import annotations

import html
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
import sqlalchemy as sa
from markupsafe import escape

from bastion.errors import InvalidClient, InvalidGrant
from bastion.respond.entities import Implicated
from bastion.store import incidents as incident_rows
from bastion.store.tables import audit_events
from bastion.testing import BASE_URL, running

from .conftest import CONSOLE_CONFIG, Browser, Clock, Console

pytestmark = pytest.mark.anyio

HOME, ELSEWHERE = "203.0.113.5", "198.51.100.7"


class Replay:
    """The console, and an incident opened by a token replay."""

    def __init__(self, console: Console, incident: str, alice: httpx2.AsyncClient) -> None:
        self.console = console
        self.incident = incident
        self._clients = {"alice": alice}
        self.path = f"/console/incidents/{incident}"

    @property
    def services(self) -> Any:
        return self.console.harness.services

    async def call(self, principal: str, *, fresh: bool = False) -> int:
        """One chat completion with the official SDK (a fresh login when asked)."""
        harness = self.console.harness
        profile = harness.profiles[principal]
        http = harness.sdk_client(profile) if fresh else self._clients[principal]
        sdk = openai.AsyncOpenAI(
            base_url=BASE_URL + "/v1", api_key="unused", http_client=http, max_retries=0
        )
        try:
            await sdk.chat.completions.create(
                model="demo-chat",
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-forwarded-for": HOME},
            )
        except openai.APIStatusError as error:
            return error.status_code
        except (InvalidGrant, InvalidClient):  # a new login refused (locked, key revoked)
            return 401
        finally:
            if fresh:
                await http.aclose()
        return 200

    def audited(self, action: str) -> list[dict[str, Any]]:
        with self.services.store.read() as conn:
            bodies = conn.execute(
                sa.select(audit_events.c.body).where(audit_events.c.name == action)
            )
            return [json.loads(body) for (body,) in bodies]

    async def post(self, browser: Browser, action: str, **fields: str) -> Any:
        return await browser.post(f"{self.path}/{action}", {"csrf": browser.csrf, **fields})


@pytest.fixture
async def replay(
    tmp_path: Path,
    upstream_env: dict[str, str],
    upstream_transport: httpx2.ASGITransport,
    database_url: str,
    clock: Clock,
) -> AsyncIterator[Replay]:
    async with running(
        CONSOLE_CONFIG,
        tmp_path,
        upstream=upstream_transport,
        env=upstream_env,
        database_url=database_url,
        clock=clock,
        trusted_proxies=("127.0.0.1/32",),
    ) as harness:
        console = Console(harness, clock)
        profile = await harness.enroll("alice")
        http = harness.sdk_client(profile)
        sdk = openai.AsyncOpenAI(
            base_url=BASE_URL + "/v1", api_key="unused", http_client=http, max_retries=0
        )
        messages: Any = [{"role": "user", "content": "hi"}]
        for source in (HOME, ELSEWHERE):
            await sdk.chat.completions.create(
                model="demo-chat", messages=messages, extra_headers={"x-forwarded-for": source}
            )
        await harness.services.detection.catch_up()
        await harness.reload()
        (incident,) = harness.services.incidents.list()
        try:
            yield Replay(console, incident.id, http)
        finally:
            await http.aclose()
            await console.close()


async def test_an_auditor_reads_the_list_and_the_incident(replay: Replay) -> None:
    audrey = await replay.console.signed_in("audrey")
    listing = await audrey.get("/console/incidents")
    assert listing.status_code == 200
    assert replay.incident in listing.text
    assert "D2 on family" in listing.text
    assert "alice" in listing.text
    contained = await audrey.get("/console/incidents?status=contained")
    assert replay.incident in contained.text  # the playbook revoked the family
    resolved = await audrey.get("/console/incidents?status=resolved")
    assert replay.incident not in resolved.text
    assert "no resolved incidents" in resolved.text

    page = await audrey.get(replay.path)
    assert page.status_code == 200
    text = page.text
    finding = replay.services.detection.findings(detection="D2")[0]
    # the timeline links each event to the Audit page; the finding links its evidence
    for event in finding.evidence:
        assert f'href="/console/audit/events/{event}"' in text
    followed = await audrey.get(f"/console/audit/events/{finding.evidence[0]}")  # the Audit page
    assert followed.status_code == 200
    assert finding.evidence[0] in followed.text
    assert "finding.raised D2" in text
    assert "response.revoke_family" in text
    assert "revoke_family" in text
    assert "done (enforce)" in text
    # blast radius: the model touched, requests served, the family still listed, entitlements
    assert "<td>demo-chat</td><td>general</td><td>2</td>" in text
    assert "org lab" in text  # the standing grant of alice's org
    assert "203.0.113.0/24" in text
    assert "198.51.100.0/24" in text
    assert "1 locked</span>" in text  # the replayed family is still unexpired, but locked
    assert ", locked</li>" in text
    # an auditor reads; the forms are for admins
    assert 'id="lock-form"' not in text
    assert "Unlock</button>" not in text


async def test_an_auditor_may_not_act(replay: Replay) -> None:
    audrey = await replay.console.signed_in("audrey")
    before = await replay.console.audit_names()
    for action, fields in (
        ("lock", {"target": "principal:alice", "reason": "x"}),
        ("revoke", {"target": "key:x", "reason": "x"}),
        ("resolve", {"reason": "x"}),
        ("unlock", {"lock": "lk_00", "reason": "x"}),
        ("assign", {"owner": "audrey"}),
    ):
        response = await replay.post(audrey, action, **fields)
        assert response.status_code == 403, action
        assert "lock_admin" in response.text
    # nothing changed; each refusal is on record for detection (D13), once
    assert await replay.console.audit_names() == [*before, *["admin.denied"] * 5]


async def test_lock_the_principal_then_unlock_it(replay: Replay) -> None:
    root = await replay.console.signed_in("root")
    page = await root.get(replay.path)
    assert '<option value="principal:alice">principal alice</option>' in page.text
    assert await replay.call("alice", fresh=True) == 200  # a new login works before the lock

    done = await replay.post(root, "lock", target="principal:alice", reason="replayed token")
    assert done.status_code == 303
    assert done.headers["location"] == f"{replay.path}?done=locked"
    assert await replay.call("alice", fresh=True) in (401, 403)  # at once, no wait
    (event,) = replay.audited("lock.created")[-1:]
    assert event["actor"] == "principal:root"
    assert event["target_type"] == "principal"
    assert event["target"] == "alice"
    assert event["reason"] == "replayed token"

    shown = await root.get(done.headers["location"])
    assert "Locked. The change is in force" in shown.text
    lock = next(row for row in replay.services.locks.active() if row.target_type == "principal")
    assert f'data-lock="{lock.id}"' in shown.text

    released = await replay.post(root, "unlock", lock=lock.id, reason="false alarm")
    assert released.status_code == 303
    assert released.headers["location"] == f"{replay.path}?done=unlocked"
    event = replay.audited("lock.released")[-1]
    assert event["actor"] == "principal:root"
    assert event["reason"] == "false alarm"
    assert event["detail"]["locks"] == [lock.id]
    assert await replay.call("alice", fresh=True) == 200


async def test_revoke_the_family_and_the_device_key(replay: Replay) -> None:
    root = await replay.console.signed_in("root")
    assert await replay.call("alice", fresh=True) == 200  # a second family, live
    detail = replay.services.incidents.detail(replay.incident)
    family = detail.blast_radius.live_families[-1].id
    page = await root.get(replay.path)
    assert f'value="family:{family}"' in page.text

    done = await replay.post(root, "revoke", target=f"family:{family}", reason="ends the family")
    assert done.status_code == 303
    assert done.headers["location"].endswith("?done=revoked")
    event = replay.audited("lock.created")[-1]
    assert event["actor"] == "principal:root"
    assert (event["target_type"], event["target"]) == ("family", family)

    (jkt,) = replay.services.incidents.get(replay.incident).entities.keys
    done = await replay.post(root, "revoke", target=f"key:{jkt}", reason="key copied")
    assert done.status_code == 303
    event = replay.audited("key.revoked")[-1]
    assert event["actor"] == "principal:root"
    assert event["target"] == jkt
    assert event["reason"] == "key copied"
    assert await replay.call("alice", fresh=True) in (400, 401, 403)  # the key is gone

    again = await replay.post(root, "revoke", target=f"key:{jkt}", reason="twice")
    assert again.status_code == 404
    assert "no active device key" in again.text


async def test_resolve_once(replay: Replay) -> None:
    root = await replay.console.signed_in("root")
    done = await replay.post(root, "resolve", reason="  contained and explained  ")
    assert done.status_code == 303
    row = replay.services.incidents.get(replay.incident)
    assert row.status == "resolved"
    assert row.resolved_by == "principal:root"
    assert row.resolution == "contained and explained"
    event = replay.audited("incident.resolved")[-1]
    assert event["actor"] == "principal:root"
    assert event["reason"] == "contained and explained"
    page = await root.get(done.headers["location"])
    assert "Incident resolved." in page.text
    assert 'id="resolve-form"' not in page.text
    again = await replay.post(root, "resolve", reason="again")
    assert again.status_code == 409
    assert "already resolved" in again.text


async def test_assign_an_owner(replay: Replay) -> None:
    root = await replay.console.signed_in("root")
    page = await root.get(replay.path)
    assert 'id="assign-owner" required maxlength="128" autocomplete="off" value="root"' in page.text
    done = await replay.post(root, "assign", owner="  bob  ")
    assert done.status_code == 303
    assert done.headers["location"] == f"{replay.path}?done=assigned"
    assert replay.services.incidents.get(replay.incident).owner == "bob"
    event = replay.audited("incident.assigned")[-1]
    assert event["actor"] == "principal:root"
    assert event["detail"] == {"owner": "bob", "previous": None}
    shown = await root.get(done.headers["location"])
    assert "Owner set." in shown.text
    assert 'value="bob"' in shown.text  # the form now offers the current owner


@pytest.mark.parametrize(
    ("action", "fields", "message"),
    [
        ("lock", {"target": "principal:alice"}, "a reason is required"),
        ("lock", {"target": "principal:alice", "reason": "   "}, "a reason is required"),
        ("lock", {"target": "principal:alice", "reason": "x" * 501}, "longer than 500"),
        ("lock", {"target": "principal:alice", "reason": "a\nb"}, "one line of printable"),
        ("lock", {"target": "principal:alice", "reason": "a\x1b[31mb"}, "one line of printable"),
        ("lock", {"reason": "why"}, "choose a target"),
        ("lock", {"target": "principal:", "reason": "why"}, "choose a target"),
        ("lock", {"target": "compartment:general", "reason": "why"}, "choose a target"),
        ("lock", {"target": "principal:bob", "reason": "why"}, "does not name that principal"),
        ("lock", {"target": "org:acme", "reason": "why"}, "does not name that org"),
        ("revoke", {"target": "principal:alice", "reason": "why"}, "choose a target"),
        ("revoke", {"target": "family:fam_nope", "reason": "why"}, "does not name that family"),
        ("revoke", {"target": "key:nope", "reason": "why"}, "does not name that key"),
        ("unlock", {"lock": "", "reason": "why"}, "choose a lock"),
        ("unlock", {"lock": "<b>", "reason": "why"}, "choose a lock"),
        ("unlock", {"lock": "lk_0123", "reason": "why"}, "not an active lock"),
        ("unlock", {"lock": "lk_0123"}, "a reason is required"),
        ("resolve", {"reason": ""}, "a reason is required"),
        ("resolve", {"reason": "x" * 1001}, "longer than 1000"),
        ("assign", {}, "an owner is a name of 1 to 128"),
        ("assign", {"owner": "   "}, "an owner is a name of 1 to 128"),
        ("assign", {"owner": "<b>x</b>"}, "an owner is a name of 1 to 128"),
        ("assign", {"owner": "a" * 129}, "an owner is a name of 1 to 128"),
        ("assign", {"owner": "bob\nmallory"}, "an owner is a name of 1 to 128"),
    ],
)
async def test_bad_input_is_refused_and_changes_nothing(
    replay: Replay, action: str, fields: dict[str, str], message: str
) -> None:
    root = await replay.console.signed_in("root")
    before = await replay.console.audit_names()
    locks = {row.id for row in replay.services.locks.active()}
    response = await replay.post(root, action, **fields)
    assert response.status_code == 400, response.text
    assert message in html.unescape(response.text)
    assert await replay.console.audit_names() == before
    assert {row.id for row in replay.services.locks.active()} == locks
    assert replay.services.incidents.get(replay.incident).status == "contained"


async def test_a_lock_the_incident_did_not_place_cannot_be_released_here(replay: Replay) -> None:
    bob_lock, _ = replay.services.locks.lock("principal", "bob", reason="other", author="test")
    root = await replay.console.signed_in("root")
    response = await replay.post(root, "unlock", lock=bob_lock.id, reason="why")
    assert response.status_code == 400
    assert bob_lock.id in {row.id for row in replay.services.locks.active()}


async def test_unknown_and_malformed_incidents_are_404_pages(replay: Replay) -> None:
    root = await replay.console.signed_in("root")
    for path in ("/console/incidents/in_0000000000000000", "/console/incidents/%3Cb%3E"):
        response = await root.get(path)
        assert response.status_code == 404, path
        assert "<h1>Not found</h1>" in response.text
        assert "<b>" not in response.text
    posted = await root.post(
        "/console/incidents/in_0000000000000000/resolve", {"csrf": root.csrf, "reason": "x"}
    )
    assert posted.status_code == 404
    bad = await root.get("/console/incidents?status=%3Cscript%3E")
    assert bad.status_code == 400
    assert "unknown incident status" in bad.text
    assert "<script>" not in bad.text


async def test_markup_in_titles_names_and_reasons_is_shown_as_text(replay: Replay) -> None:
    evil = '<img src=x onerror="alert(1)">'
    with replay.services.store.begin() as conn:  # hostile data, as a poisoned event could carry
        entities = replay.services.incidents.get(replay.incident).entities
        incident_rows.update(
            conn,
            replay.incident,
            title=f"title {evil}",
            entities=entities | Implicated(principals=frozenset({f"n{evil}"})),
        )
    root = await replay.console.signed_in("root")
    locked = await replay.post(root, "lock", target="principal:alice", reason=f"r {evil}")
    assert locked.status_code == 303
    resolved = await replay.post(root, "resolve", reason=f"done {evil}")
    assert resolved.status_code == 303
    for path in (replay.path, "/console/incidents"):
        page = await root.get(path)
        assert page.status_code == 200
        assert evil not in page.text, path
        assert "&lt;img src=x onerror=" in page.text, path
    page = await root.get(replay.path)
    assert str(escape(f"r {evil}")) in page.text  # the lock's reason
    assert str(escape(f"done {evil}")) in page.text  # the resolution
    assert str(escape(f"principal:n{evil}")) in page.text  # the option value, escaped

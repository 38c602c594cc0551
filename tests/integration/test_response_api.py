"""The admin API for automatic response: who may read the actions playbooks took, who may
approve, reject or undo them, what each bad request is told (and that it changes nothing), and
which playbooks are in force. A real D5 finding (victor probing models) sets the actions off."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest

from bastion.store.actions import ActionRow
from bastion.testing import Harness, running
from tests.integration.conftest import People
from tests.integration.test_response import audited, chat, probe, vendor_config, wait_for

pytestmark = pytest.mark.anyio

ADMIN = "  audrey: {kind: user, org: lab, roles: [auditor]}\n"
PLAYBOOKS = """\
version: 1
playbooks:
  - name: probe-watch
    match: {detections: [D5]}
    actions:
      - {action: throttle, rate: 600, ttl: 1h}
      - suspend_org
      - notify
"""
ACTIONS = "/admin/v1/response/actions"


def config(response: str = "response:\n  playbooks: playbooks.yaml\n") -> str:
    text = vendor_config(response)
    assert ADMIN in text
    return text.replace(ADMIN, ADMIN + "  root: {kind: user, org: lab, roles: [admin]}\n")


@pytest.fixture
async def start(
    tmp_path: Path,
    upstream_env: dict[str, str],
    upstream_transport: httpx2.ASGITransport,
    database_url: str,
) -> AsyncIterator[Callable[..., Any]]:
    stack: list[Any] = []

    async def started(text: str, playbooks: str = PLAYBOOKS) -> Harness:
        (tmp_path / "playbooks.yaml").write_text(playbooks, encoding="utf-8")
        context = running(
            text, tmp_path, upstream=upstream_transport, env=upstream_env, database_url=database_url
        )
        stack.append(context)
        harness: Harness = await context.__aenter__()
        return harness

    yield started
    for context in reversed(stack):
        await context.__aexit__(None, None, None)


class Probed:
    """A running Bastion after victor's probing: one throttle done, one org suspension waiting
    for approval, one notification sent."""

    def __init__(self, harness: Harness, people: People, rows: dict[str, ActionRow]) -> None:
        self.harness = harness
        self.people = people
        self.rows = rows

    def statuses(self) -> dict[str, str]:
        response = self.harness.services.response
        return {row.id: row.status for row in response.actions()}


@pytest.fixture
async def probed(start: Callable[..., Any]) -> AsyncIterator[Probed]:
    harness: Harness = await start(config())
    assert await chat(harness, "victor", "demo-chat") == 200
    await probe(harness, "victor", range(3))
    response = harness.services.response
    assert response is not None
    await wait_for(lambda: [row for row in response.actions() if row.action == "notify"])
    rows = {row.action: row for row in response.actions()}
    assert {a: r.status for a, r in rows.items()} == {
        "throttle": "done",
        "suspend_org": "pending_approval",
        "notify": "done",
    }
    people = People(harness)
    yield Probed(harness, people, rows)
    await people.close()


def refused(response: httpx.Response, status: int, needle: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error"
    assert needle in body["error"]["message"], body


async def test_admins_and_auditors_read_the_actions(probed: Probed) -> None:
    expected = {row.id: row for row in probed.rows.values()}
    for who in ("root", "audrey"):
        client = await probed.people(who)
        listed = await client.get(ACTIONS)
        assert listed.status_code == 200, listed.text
        assert {a["id"]: a["action"] for a in listed.json()["actions"]} == {
            i: r.action for i, r in expected.items()
        }
        waiting = (await client.get(ACTIONS, params={"status": "pending_approval"})).json()
        assert [a["action"] for a in waiting["actions"]] == ["suspend_org"]
        throttle = probed.rows["throttle"]
        one = await client.get(f"{ACTIONS}/{throttle.id}")
        assert one.status_code == 200, one.text
        assert one.json() == {**asdict(throttle), "detail": one.json()["detail"]}
        assert one.json()["detail"]["rate"] == 600
        assert one.json()["detail"]["locks"] == [throttle.lock]


async def test_a_vendor_is_refused_and_the_refusal_is_audited(probed: Probed) -> None:
    victor = await probed.people("victor")
    throttle = probed.rows["throttle"]
    for path in (ACTIONS, f"{ACTIONS}/{throttle.id}", "/admin/v1/response/playbooks"):
        refused(await victor.get(path), 403, "audit_read denied")
    approve = await victor.post(
        f"{ACTIONS}/{probed.rows['suspend_org'].id}/approve", json={"reason": "mine"}
    )
    refused(approve, 403, "lock_admin denied")
    await probed.harness.services.recorder.flush()
    denied = [e for e in audited(probed.harness, "admin.denied") if e["actor"] == "victor"]
    assert {e["target"] for e in denied} >= {
        f"GET {ACTIONS}",
        f"POST {ACTIONS}/{probed.rows['suspend_org'].id}/approve",
    }
    assert probed.rows["suspend_org"].status == probed.statuses()[probed.rows["suspend_org"].id]


@pytest.mark.parametrize("verb", ["approve", "reject", "undo"])
async def test_an_auditor_may_not_change_actions(probed: Probed, verb: str) -> None:
    before = probed.statuses()
    audrey = await probed.people("audrey")
    target = probed.rows["throttle" if verb == "undo" else "suspend_org"]
    response = await audrey.post(f"{ACTIONS}/{target.id}/{verb}", json={"reason": "audit"})
    refused(response, 403, "lock_admin denied")
    assert response.json()["error"]["reasons"] == ["not_granted"]
    assert probed.statuses() == before


async def test_an_admin_approves_then_undoes_an_org_suspension(probed: Probed) -> None:
    root = await probed.people("root")
    pending = probed.rows["suspend_org"]
    approved = await root.post(f"{ACTIONS}/{pending.id}/approve", json={"reason": "SOC agrees"})
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "done"
    assert approved.json()["detail"]["approved_by"] == "principal:root"
    assert await chat(probed.harness, "victor", "demo-chat") == 401  # acme is suspended
    assert await chat(probed.harness, "alice", "demo-chat") == 200
    undone = await root.post(f"{ACTIONS}/{pending.id}/undo", json={"reason": "false alarm"})
    assert undone.status_code == 200, undone.text
    assert (undone.json()["status"], undone.json()["undone_by"]) == ("undone", "principal:root")
    assert await chat(probed.harness, "victor", "demo-chat") == 200
    events = {e["action"]: e for e in audited(probed.harness, "response.")}
    approval, undo = events["response.approved"], events["response.undone"]
    assert (approval["actor"], approval["reason"]) == ("principal:root", "SOC agrees")
    assert (undo["actor"], undo["reason"]) == ("principal:root", "false alarm")
    assert undo["detail"]["action_id"] == approval["detail"]["action_id"] == pending.id


async def test_an_admin_rejects_a_waiting_action(probed: Probed) -> None:
    root = await probed.people("root")
    pending = probed.rows["suspend_org"]
    rejected = await root.post(f"{ACTIONS}/{pending.id}/reject", json={"reason": "not enough"})
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["status"] == "rejected"
    assert rejected.json()["lock"] is None
    assert await chat(probed.harness, "victor", "demo-chat") == 200
    again = await root.post(f"{ACTIONS}/{pending.id}/approve", json={"reason": "changed my mind"})
    refused(again, 400, "is rejected, not waiting for approval")
    (event,) = audited(probed.harness, "response.rejected")
    assert (event["actor"], event["reason"]) == ("principal:root", "not enough")


async def test_an_admin_undoes_a_throttle(probed: Probed) -> None:
    root = await probed.people("root")
    throttle = probed.rows["throttle"]
    assert [lock.id for lock in probed.harness.services.locks.active()] == [throttle.lock]
    undone = await root.post(f"{ACTIONS}/{throttle.id}/undo", json={"reason": "drill"})
    assert undone.status_code == 200, undone.text
    assert undone.json()["status"] == "undone"
    assert probed.harness.services.locks.active() == []


BAD = [
    ("post", "ra_0123456789abcdef/approve", {"reason": "x"}, 404, "no response action"),
    ("get", "ra_0123456789abcdef", None, 404, "no response action 'ra_0123456789abcdef'"),
    ("get", "r" * 33, None, 400, "action_id"),
    ("post", "r" * 33 + "/approve", {"reason": "x"}, 400, "action_id"),
    ("post", "SUSPEND/approve", {"reason": ""}, 400, "body.reason"),
    ("post", "SUSPEND/approve", {"reason": "   "}, 400, "a reason of 1 to 500 characters"),
    ("post", "SUSPEND/reject", {"reason": "r" * 501}, 400, "body.reason"),
    ("post", "SUSPEND/approve", {}, 400, "body.reason"),
    ("post", "SUSPEND/approve", {"reason": "x", "by": "someone-else"}, 400, "body.by"),
    ("post", "SUSPEND/approve", {"reason": 5}, 400, "body.reason"),
    ("post", "NOTIFY/undo", {"reason": "x"}, 400, "notify changes no access"),
    ("post", "THROTTLE/approve", {"reason": "x"}, 400, "is done, not waiting for approval"),
    ("post", "THROTTLE/reject", {"reason": "x"}, 400, "is done, not waiting for approval"),
    ("post", "SUSPEND/undo", {"reason": "x"}, 400, "only a done action can be undone"),
    ("post", "SUSPEND/cancel", {"reason": "x"}, 404, "no such admin API route"),
    ("delete", "SUSPEND", None, 405, "DELETE is not allowed"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "needle"), BAD)
async def test_bad_requests_get_specific_errors_and_change_nothing(
    probed: Probed,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    status: int,
    needle: str,
) -> None:
    before = probed.statuses()
    locks = probed.harness.services.locks.active()
    ids = {"SUSPEND": "suspend_org", "NOTIFY": "notify", "THROTTLE": "throttle"}
    for placeholder, action in ids.items():
        path = path.replace(placeholder, probed.rows[action].id)
    root = await probed.people("root")
    refused(await root.request(method.upper(), f"{ACTIONS}/{path}", json=body), status, needle)
    assert probed.statuses() == before
    assert probed.harness.services.locks.active() == locks


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"status": "exploded"}, "status"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"finding": "f" * 41}, "finding"),
    ],
)
async def test_bad_filters_are_refused(probed: Probed, params: dict[str, Any], needle: str) -> None:
    auditor = await probed.people("audrey")
    refused(await auditor.get(ACTIONS, params=params), 400, needle)


async def test_the_built_in_playbooks_are_shown_when_no_file_is_named(
    start: Callable[..., Any],
) -> None:
    harness: Harness = await start(config(""))
    people = People(harness)
    try:
        shown = await (await people("audrey")).get("/admin/v1/response/playbooks")
    finally:
        await people.close()
    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert (body["source"], body["error"]) == ("built-in", "")
    assert body["automatic"] == {"enabled": True, "max_actions": 20, "window": 300}
    books = {book["name"]: book for book in body["playbooks"]}
    assert {"token-replay", "enumeration-vendor", "after-contract", "org-campaign"} <= set(books)
    steps = [step["action"] for step in books["enumeration-vendor"]["actions"]]
    assert steps.index("throttle") < steps.index("suspend_principal")


async def test_a_broken_playbooks_file_is_reported_and_the_last_good_one_runs(
    start: Callable[..., Any], tmp_path: Path
) -> None:
    harness: Harness = await start(config())
    people = People(harness)
    try:
        auditor = await people("audrey")
        first = (await auditor.get("/admin/v1/response/playbooks")).json()
        assert (first["source"], first["error"]) == ("playbooks.yaml", "")
        assert [book["name"] for book in first["playbooks"]] == ["probe-watch"]
        path = tmp_path / "playbooks.yaml"
        path.write_text(PLAYBOOKS.replace("suspend_org", "suspend_everyone"), encoding="utf-8")
        later = path.stat().st_mtime + 2
        os.utime(path, (later, later))
        broken = (await auditor.get("/admin/v1/response/playbooks")).json()
    finally:
        await people.close()
    assert [book["name"] for book in broken["playbooks"]] == ["probe-watch"]
    assert broken["error"].startswith(f"{path}:7: playbooks[0].actions[1].action: Input should be")
    assert "'suspend_everyone'" in broken["error"]

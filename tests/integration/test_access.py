"""Just-in-time access through the admin API: a critical compartment needs two approvals from
its approvers, never the requester's own; the grant works at once, expires to the second, and
can be revoked."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import httpx2
import pytest

from bastion.store import events as event_rows
from bastion.testing import Harness, running
from tests.conftest import CONFIG
from tests.integration.conftest import People

pytestmark = pytest.mark.anyio

ACCESS_CONFIG = CONFIG.replace(
    """      approvers: [bob, audrey]
""",
    """      approvers: [bob, dave, erin]
      max_duration_hours: 4
""",
).replace(
    "  audrey: {kind: user, org: lab, roles: [auditor]}\n",
    "  audrey: {kind: user, org: lab, roles: [auditor]}\n"
    "  dave: {kind: user, org: lab}\n"
    "  erin: {kind: user, org: lab}\n"
    "  mallory: {kind: user, org: lab}\n"
    "  root: {kind: user, org: lab, roles: [admin]}\n",
)
FRONTIER = {"model": "cyber-frontier", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def jit(
    tmp_path: Path, upstream_env: dict[str, str], upstream_transport: httpx2.ASGITransport
) -> AsyncIterator[Harness]:
    assert "approvals: 2" in ACCESS_CONFIG
    assert "root:" in ACCESS_CONFIG
    async with running(ACCESS_CONFIG, tmp_path, upstream=upstream_transport, env=upstream_env) as h:
        yield h


@pytest.fixture
async def people(jit: Harness) -> AsyncIterator[People]:
    crowd = People(jit)
    yield crowd
    await crowd.close()


async def ask(people: People, who: str, duration: float = 3600) -> str:
    response = await (await people(who)).post(
        "/admin/v1/access/requests",
        json={"target": "cyber-frontier", "reason": "incident 42", "duration_seconds": duration},
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "pending"
    return str(response.json()["id"])


async def decide(
    people: People, who: str, request_id: str, verb: str = "approve"
) -> httpx.Response:
    client = await people(who)
    return await client.post(
        f"/admin/v1/access/requests/{request_id}/{verb}", json={"reason": "ok"}
    )


async def use(people: People, who: str) -> int:
    response = await (await people(who)).post("/v1/chat/completions", json=FRONTIER)
    return response.status_code


async def test_two_person_rule_then_grant_then_revoke(jit: Harness, people: People) -> None:
    request_id = await ask(people, "alice")
    assert await use(people, "alice") == 403

    own = await decide(people, "alice", request_id)
    assert own.status_code == 403
    assert own.json()["error"]["reasons"] == ["self_approval"]
    stranger = await decide(people, "mallory", request_id)
    assert stranger.json()["error"]["reasons"] == ["not_an_approver"]

    first = await decide(people, "bob", request_id)
    assert first.json()["status"] == "pending"  # one approval of two: still no access
    assert await use(people, "alice") == 403
    assert (await decide(people, "bob", request_id)).status_code == 409  # no double vote

    second = await decide(people, "dave", request_id)
    assert second.json()["status"] == "approved"
    assert await use(people, "alice") == 200

    grants = (await (await people("root")).get("/admin/v1/access/grants")).json()["grants"]
    [grant] = [g for g in grants if g["principal"] == "alice"]
    assert (await (await people("alice")).get("/admin/v1/access/grants")).status_code == 403
    revoked = await (await people("root")).post(
        f"/admin/v1/access/grants/{grant['id']}/revoke", json={"reason": "done"}
    )
    assert revoked.status_code == 200
    assert await use(people, "alice") == 403

    await jit.services.recorder.flush()
    with jit.services.store.read() as conn:
        names = [row.name for row in event_rows.last(conn, 200)]
    for name in ("access.requested", "access.approved", "grant.created", "grant.revoked"):
        assert name in names


async def test_a_grant_expires_to_the_second(
    tmp_path: Path, upstream_env: dict[str, str], upstream_transport: httpx2.ASGITransport
) -> None:
    now = [time.time()]  # the server's and the clients' time, moved only by the test
    async with running(
        ACCESS_CONFIG, tmp_path, upstream=upstream_transport, env=upstream_env, clock=lambda: now[0]
    ) as harness:
        people = People(harness)
        try:
            request_id = await ask(people, "alice", duration=1.0)
            await decide(people, "bob", request_id)
            assert (await decide(people, "erin", request_id)).json()["status"] == "approved"
            assert await use(people, "alice") == 200
            now[0] += 0.95
            assert await use(people, "alice") == 200
            now[0] += 0.1
            assert await use(people, "alice") == 403
        finally:
            await people.close()


async def test_a_denial_ends_the_request(people: People) -> None:
    request_id = await ask(people, "alice")
    assert (await decide(people, "bob", request_id, "deny")).json()["status"] == "denied"
    assert (await decide(people, "dave", request_id)).status_code == 409
    assert await use(people, "alice") == 403


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"target": "nowhere", "reason": "x", "duration_seconds": 60}, 404, "no compartment"),
        ({"target": "demo-chat", "reason": "x", "duration_seconds": 60}, 400, "no access requests"),
        ({"target": "cyber-frontier", "reason": "x", "duration_seconds": 5 * 3600}, 400, "4 hours"),
        ({"target": "cyber-frontier", "reason": "", "duration_seconds": 60}, 400, "reason"),
        ({"target": "cyber-frontier", "reason": "x", "duration_seconds": 60, "x": 1}, 400, "x"),
    ],
)
async def test_bad_requests_change_nothing(
    jit: Harness, people: People, body: dict[str, object], status: int, needle: str
) -> None:
    response = await (await people("alice")).post("/admin/v1/access/requests", json=body)
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]["message"]
    assert jit.services.access.pending() == []


async def test_vendors_cannot_decide_and_not_above_their_ceiling(
    jit: Harness, people: People
) -> None:
    request_id = await ask(people, "alice")
    vendor = await decide(people, "victor", request_id)
    assert vendor.status_code == 403
    assert vendor.json()["error"]["reasons"] == ["vendor_control_plane"]

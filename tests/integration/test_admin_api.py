"""The admin API's audit routes: only auditors (never vendors) read checkpoints and proofs, and
what they get verifies offline."""

from __future__ import annotations

import base64

import httpx
import pytest

from bastion.audit.checkpoint import open_checkpoint
from bastion.audit.merkle import verify_consistency
from bastion.audit.note import parse_verifier_key
from bastion.audit.receipt import verify_receipt
from bastion.testing import Harness

pytestmark = pytest.mark.anyio


async def checkpoint_now(harness: Harness) -> None:
    await harness.services.recorder.flush()
    with harness.services.store.begin() as conn:
        harness.services.audit.checkpoint(conn)


async def get(harness: Harness, principal: str, path: str, **params: object) -> httpx.Response:
    profile = harness.profiles.get(principal) or await harness.enroll(principal)
    async with harness.client(profile) as client:
        return await client.get(path, params=params)


async def test_auditor_reads_checkpoint_and_verifiable_proofs(harness: Harness) -> None:
    await harness.enroll("alice")
    await checkpoint_now(harness)
    first = (await get(harness, "audrey", "/admin/v1/audit/checkpoint")).json()
    harness.services.locks.lock("principal", "bob", reason="api test", author="test")
    await checkpoint_now(harness)
    response = await get(harness, "audrey", "/admin/v1/audit/checkpoint")
    assert response.status_code == 200, response.text
    second = response.json()
    verifier = parse_verifier_key(second["verifier_key"])
    signed = open_checkpoint(second["note"], [verifier])
    assert (signed.size, base64.b64encode(signed.root).decode()) == (second["size"], second["root"])
    assert second["size"] > first["size"]

    events = (await get(harness, "audrey", "/admin/v1/audit/events", start=0, end=50)).json()
    lock_event = next(e for e in events["events"] if e["name"] == "lock.created")
    receipt = (
        await get(harness, "audrey", "/admin/v1/audit/proofs/inclusion", event_id=lock_event["id"])
    ).json()
    assert verify_receipt(receipt, [verifier]).ok

    proof = (
        await get(
            harness,
            "audrey",
            "/admin/v1/audit/proofs/consistency",
            **{"from": first["size"], "to": second["size"]},
        )
    ).json()
    assert verify_consistency(
        first["size"],
        second["size"],
        base64.b64decode(first["root"]),
        base64.b64decode(second["root"]),
        [base64.b64decode(h) for h in proof["proof"]],
    )


async def test_non_auditors_and_vendors_are_refused(harness: Harness) -> None:
    await checkpoint_now(harness)
    plain = await get(harness, "alice", "/admin/v1/audit/checkpoint")
    assert plain.status_code == 403
    assert plain.json()["error"]["reasons"] == ["not_granted"]
    vendor = await get(harness, "victor", "/admin/v1/audit/checkpoint")
    assert vendor.status_code == 403
    async with harness.client() as anonymous:
        nobody = await anonymous.get("/admin/v1/audit/checkpoint")
    assert nobody.status_code == 401
    assert nobody.headers["www-authenticate"].startswith('DPoP error="invalid_token"')


async def test_locked_auditor_is_refused(harness: Harness) -> None:
    profile = await harness.enroll("audrey")
    await checkpoint_now(harness)
    async with harness.client(profile) as client:
        assert (await client.get("/admin/v1/audit/checkpoint")).status_code == 200
        harness.services.locks.lock("principal", "audrey", reason="lock test", author="test")
        await harness.reload()
        locked = await client.get("/admin/v1/audit/checkpoint")  # same token, now locked
    assert locked.status_code == 403
    assert locked.json()["error"]["reasons"] == ["locked_principal"]


@pytest.mark.parametrize(
    ("path", "params", "status", "needle"),
    [
        ("/admin/v1/audit/events", {"start": 5, "end": 2}, 400, "start < end"),
        ("/admin/v1/audit/events", {"start": 0, "end": 5000}, 400, "at most 1000"),
        ("/admin/v1/audit/events", {"start": "x", "end": 2}, 400, "start"),
        ("/admin/v1/audit/proofs/inclusion", {"event_id": "ev_nope"}, 404, "no audit event"),
        ("/admin/v1/audit/proofs/inclusion", {"event_id": "x", "tree_size": 999}, 404, "size 999"),
        ("/admin/v1/audit/proofs/consistency", {"from": 9, "to": 3}, 400, "from <= to"),
        ("/admin/v1/audit/proofs/consistency", {"from": 1, "to": 10**6}, 404, "consistency"),
    ],
)
async def test_bad_requests_get_specific_errors(
    harness: Harness, path: str, params: dict[str, object], status: int, needle: str
) -> None:
    await harness.enroll("audrey")
    await checkpoint_now(harness)
    response = await get(harness, "audrey", path, **params)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error"
    assert needle in body["error"]["message"]


async def test_openapi_document_is_served(harness: Harness) -> None:
    async with harness.client() as client:
        spec = (await client.get("/admin/openapi.json")).json()
    assert "/v1/audit/checkpoint" in spec["paths"]

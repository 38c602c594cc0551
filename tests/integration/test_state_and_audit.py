"""Fail-closed behaviour around state and audit: locks apply even while the config is broken,
config edits apply without a restart, `audit: required` compartments wait for (or refuse on)
the log, and streamed usage is always metered."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from bastion.store import events as event_rows
from bastion.testing import Harness

pytestmark = pytest.mark.anyio
CHAT = {"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]}
FRONTIER = {"model": "cyber-frontier", "messages": [{"role": "user", "content": "hi"}]}


async def events(harness: Harness, prefix: str = "") -> list[dict[str, object]]:
    await harness.services.recorder.flush()
    with harness.services.store.read() as conn:
        rows = event_rows.last(conn, 5000, prefix or None)
    return [orjson.loads(row.body) | {"name": row.name} for row in rows]


async def test_locks_apply_while_the_config_file_is_broken(harness: Harness) -> None:
    async with harness.client(await harness.enroll("alice")) as client:
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        harness.settings.config_file.write_text("version: 1\nmodels: [oops\n")
        harness.services.locks.lock("principal", "alice", reason="while broken", author="t")
        await harness.reload()
        refused = await client.post("/v1/chat/completions", json=CHAT)
    assert refused.status_code == 403
    assert refused.json()["error"]["reasons"] == ["locked_principal"]
    assert "last good config" in (harness.services.holder.last_error or "")


async def test_config_edits_apply_without_an_epoch_change(
    harness: Harness, config_text: str
) -> None:
    async with harness.client(await harness.enroll("bob")) as client:
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        revoked = config_text.replace("      orgs: [lab]\n", "      orgs: []\n", 1)
        assert revoked != config_text
        harness.settings.config_file.write_text(revoked)
        deadline = time.monotonic() + 20  # the poller notices the file within a few intervals
        while (response := await client.post("/v1/chat/completions", json=CHAT)).status_code != 403:
            assert time.monotonic() < deadline, response.text
            await asyncio.sleep(0.1)
    assert response.status_code == 403
    assert response.json()["error"]["reasons"] == ["not_granted"]


async def test_streamed_usage_is_metered_without_the_caller_asking(harness: Harness) -> None:
    async with harness.client(await harness.enroll("alice")) as client:
        response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.status_code == 200
    chunks = [
        orjson.loads(line[5:])
        for line in response.text.splitlines()
        if line.startswith("data:") and line.strip() != "data: [DONE]"
    ]
    assert chunks
    assert all(chunk["choices"] for chunk in chunks)  # Bastion's usage chunk stays hidden
    decided = [e for e in await events(harness, "request.decided") if e["stream"]]
    assert isinstance(decided[-1]["tokens_out"], int)
    assert decided[-1]["tokens_out"] > 0


async def test_a_caller_who_asks_for_usage_still_gets_it(harness: Harness) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    async with harness.client(await harness.enroll("alice")) as client:
        response = await client.post("/v1/chat/completions", json=body)
    lines = [line for line in response.text.splitlines() if line.startswith("data: {")]
    assert orjson.loads(lines[-1][5:])["choices"] == []
    assert orjson.loads(lines[-1][5:])["usage"]["completion_tokens"] > 0


async def test_audit_required_commits_before_forwarding(harness: Harness) -> None:
    async with harness.client(await harness.enroll("carol")) as client:
        response = await client.post("/v1/chat/completions", json=FRONTIER)
    assert response.status_code == 200
    names = [e["name"] for e in await events(harness, "request.")]
    assert names[-2:] == ["request.authorized", "request.decided"]


async def test_audit_required_refused_when_the_log_cannot_record(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object, **_kwargs: object) -> list[int]:
        raise OSError("disk full")

    async with (
        harness.client(await harness.enroll("carol")) as carol,
        harness.client(await harness.enroll("alice")) as alice,
    ):
        # tokens first: issuing one is itself audited, so it fails closed too
        assert (await carol.post("/v1/chat/completions", json=FRONTIER)).status_code == 200
        assert (await alice.post("/v1/chat/completions", json=CHAT)).status_code == 200
        monkeypatch.setattr(harness.services.audit, "append", broken)
        refused = await carol.post("/v1/chat/completions", json=FRONTIER)
        best_effort = await alice.post("/v1/chat/completions", json=CHAT)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "audit_unavailable"
    assert best_effort.status_code == 200  # other compartments keep working
    assert harness.services.recorder.healthy is False


async def test_a_response_whose_record_fails_never_ends_cleanly(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request.decided commit fails after forwarding: a stream ends with an error event and
    without its terminator; the held-back end of the response never reaches the caller."""
    real_append = harness.services.audit.append

    def fail_decided(conn: object, events: list[object]) -> list[int]:
        if any(getattr(e, "event_name", "") == "request.decided" for e in events):
            raise OSError("disk full")
        return real_append(conn, events)  # type: ignore[arg-type]

    async with harness.client(await harness.enroll("carol")) as carol:
        assert (await carol.post("/v1/chat/completions", json=FRONTIER)).status_code == 200
        monkeypatch.setattr(harness.services.audit, "append", fail_decided)
        streamed = await carol.post("/v1/chat/completions", json={**FRONTIER, "stream": True})
    assert streamed.status_code == 200  # headers were sent before the record could fail
    assert "data: [DONE]" not in streamed.text
    assert "event: error" in streamed.text
    assert "audit_unavailable" in streamed.text

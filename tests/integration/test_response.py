"""Automatic response on a real gateway: the running engine finds, the playbooks act through
locks within a second, dry runs act on nothing, the automatic-action limit holds, wide actions
wait for approval, and an admin's undo restores access — every step in the audit log."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx2
import openai
import pytest
import sqlalchemy as sa

from bastion.errors import InvalidGrant
from bastion.store.actions import ActionRow
from bastion.store.tables import audit_events
from bastion.testing import BASE_URL, Harness, running
from tests.conftest import CONFIG

pytestmark = pytest.mark.anyio


def vendor_config(response: str = "") -> str:
    """CONFIG with acme's victor granted the general models and four secret models he is not."""
    extra = "".join(
        f"  - name: secret-{n}\n    upstream: example-openai\n    compartment: frontier\n"
        for n in range(6)
    )
    text = CONFIG.replace("models:\n", "models:\n" + extra, 1)
    text = text.replace("      orgs: [lab]\n", "      orgs: [lab, acme]\n", 1)
    return text + response


async def chat(harness: Harness, principal: str, model: str) -> int:
    profile = harness.profiles.get(principal) or await harness.enroll(principal)
    http = harness.sdk_client(profile)
    sdk = openai.AsyncOpenAI(
        base_url=BASE_URL + "/v1", api_key="unused", http_client=http, max_retries=0
    )
    async with http:
        try:
            await sdk.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}]
            )
        except openai.APIStatusError as error:
            return error.status_code
        except InvalidGrant:  # a new login refused: the principal is locked
            return 401
    return 200


async def wait_for(check: Callable[[], list[ActionRow]], seconds: float = 20.0) -> list[ActionRow]:
    with anyio.fail_after(seconds):
        while not (found := check()):  # noqa: ASYNC110 - the engine runs on its own thread
            await anyio.sleep(0.02)
    return found


def audited(harness: Harness, prefix: str) -> list[dict[str, Any]]:
    with harness.services.store.read() as conn:
        bodies = conn.execute(
            sa.select(audit_events.c.body).where(audit_events.c.name.startswith(prefix))
        )
        return [json.loads(body) for (body,) in bodies]


@pytest.fixture
async def make(
    tmp_path: Path,
    upstream_env: dict[str, str],
    upstream_transport: httpx2.ASGITransport,
    database_url: str,
) -> AsyncIterator[Callable[..., Any]]:
    stack: list[Any] = []

    async def start(config: str, files: dict[str, str] | None = None) -> Harness:
        for name, text in (files or {}).items():
            (tmp_path / name).write_text(text)
        context = running(
            config,
            tmp_path,
            upstream=upstream_transport,
            env=upstream_env,
            database_url=database_url,
        )
        stack.append(context)
        return await context.__aenter__()

    yield start
    for context in reversed(stack):
        await context.__aexit__(None, None, None)


async def probe(harness: Harness, principal: str, models: range) -> float:
    """Denied requests for models the principal may not use; returns when the last was sent."""
    for n in models:
        assert await chat(harness, principal, f"secret-{n}") == 403
    return time.monotonic()


async def test_enumeration_by_a_vendor_is_throttled_then_suspended(make: Any) -> None:
    harness: Harness = await make(vendor_config())
    assert await chat(harness, "victor", "demo-chat") == 200
    third = await probe(harness, "victor", range(3))
    response = harness.services.response
    assert response is not None
    throttled = await wait_for(lambda: response.actions(status="done"))
    # The running engine and playbook, not catch_up; prompt, not timed (two test workers share
    # the machine): sub-second containment is the drill's to assert (tests/e2e/test_drill.py).
    assert time.monotonic() - third < 10.0
    (throttle,) = [a for a in throttled if a.action == "throttle"]
    assert (throttle.target_type, throttle.target) == ("principal", "victor")
    assert throttle.playbook == "enumeration-vendor"
    assert throttle.lock
    # The probing goes on: the finding repeats, and the playbook's second step suspends him.
    await probe(harness, "victor", range(3, 5))  # two more distinct models: seen 3 times
    suspended = await wait_for(
        lambda: [a for a in response.actions(status="done") if a.action == "suspend_principal"]
    )
    started = time.monotonic()
    while (status := await chat(harness, "victor", "demo-chat")) != 401:  # refused at login
        # until the suspension is in the snapshot: served, throttled, or (a login that got in
        # just before the swap) refused by the gateway
        assert status in (200, 403, 429), status
        assert time.monotonic() - started < 15.0
    assert await chat(harness, "victor", "demo-chat") == 401  # and stays refused
    assert await chat(harness, "alice", "demo-chat") == 200  # nobody else is touched
    causes = audited(harness, "response.")
    assert {c["action"] for c in causes} >= {"response.throttle", "response.suspend_principal"}
    for cause in causes:
        assert cause["detail"]["finding"] == suspended[0].finding
        assert cause["actor"] == "bastion:response"
    # Undo restores access, and is audited with who and why: the suspension first (the
    # throttle still holds him to one request every 10 s), then the throttle.
    undone = response.undo(suspended[0].id, by="cli:root", reason="false positive drill")
    await harness.services.sync.reload()
    assert undone.status == "undone"
    held = {(lock.target_type, lock.target) for lock in harness.services.locks.active()}
    assert held == {("throttle", "victor")}
    assert 429 in [await chat(harness, "victor", "demo-chat") for _ in range(2)]
    response.undo(throttle.id, by="cli:root", reason="false positive drill")
    await harness.services.sync.reload()
    assert await chat(harness, "victor", "demo-chat") == 200
    assert await chat(harness, "victor", "demo-chat") == 200
    events = audited(harness, "response.undone")
    assert {e["detail"]["action_id"] for e in events} == {suspended[0].id, throttle.id}
    assert {e["actor"] for e in events} == {"cli:root"}
    assert {e["reason"] for e in events} == {"false positive drill"}
    with pytest.raises(Exception, match="only a done action"):
        response.undo(suspended[0].id, by="cli:root", reason="again")


DRY_RUN = """\
version: 1
playbooks:
  - name: watch-only
    mode: dry-run
    match: {detections: [D5]}
    actions: [suspend_principal, throttle, open_incident, notify]
"""


async def test_a_dry_run_playbook_records_what_it_would_do_and_acts_on_nothing(
    make: Any,
) -> None:
    config = vendor_config("response:\n  playbooks: playbooks.yaml\n")
    harness: Harness = await make(config, {"playbooks.yaml": DRY_RUN})
    await chat(harness, "victor", "demo-chat")
    await probe(harness, "victor", range(3))
    response = harness.services.response
    assert response is not None
    await wait_for(lambda: [r for r in response.actions() if r.action == "notify"])  # the last
    rows = response.actions(status="dry_run")
    assert {r.action for r in rows} >= {"suspend_principal", "throttle", "notify"}
    assert all(r.lock is None for r in rows)
    assert harness.services.locks.active() == []
    assert await chat(harness, "victor", "demo-chat") == 200


LIMITED = """\
response:
  automatic: {max_actions: 1, window: 10m}
"""


async def test_the_limit_on_automatic_actions_holds(make: Any) -> None:
    harness: Harness = await make(vendor_config(LIMITED))
    response = harness.services.response
    assert response is not None
    for principal in ("victor", "alice"):  # two findings, each wanting a throttle
        await chat(harness, principal, "demo-chat")
        await probe(harness, principal, range(3))
    limited = await wait_for(lambda: response.actions(status="rate_limited"))
    done = [a for a in response.actions(status="done") if a.action == "throttle"]
    assert len(done) == 1
    assert limited[0].action == "throttle"
    assert len(harness.services.locks.active()) == 1


CAMPAIGN = """\
version: 1
playbooks:
  - name: suspend-the-vendor
    match: {detections: [D5]}
    actions: [suspend_org]
"""


async def test_org_suspension_waits_for_approval_and_approval_locks_the_org(make: Any) -> None:
    config = vendor_config("response:\n  playbooks: playbooks.yaml\n")
    harness: Harness = await make(config, {"playbooks.yaml": CAMPAIGN})
    await chat(harness, "victor", "demo-chat")
    await probe(harness, "victor", range(3))
    response = harness.services.response
    assert response is not None
    (pending,) = await wait_for(lambda: response.actions(status="pending_approval"))
    assert (pending.target_type, pending.target) == ("org", "acme")
    assert await chat(harness, "victor", "demo-chat") == 200  # not yet
    done = response.approve(pending.id, by="cli:root", reason="confirmed by the SOC")
    await harness.services.sync.reload()
    assert done.status == "done"
    assert done.detail["approved_by"] == "cli:root"
    assert await chat(harness, "victor", "demo-chat") == 401
    with pytest.raises(Exception, match="not waiting for approval"):
        response.approve(pending.id, by="cli:root", reason="twice")

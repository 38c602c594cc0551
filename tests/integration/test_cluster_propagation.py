"""Cluster propagation: a lock placed through one gateway holds at every other, over Redis.

Two Bastion apps share one PostgreSQL database and one Redis (the same state directory too, as
a cluster shares its issuer key). Their epoch poll is set to 30 s, so a lock that arrives within
a few seconds can only have come over Redis pub/sub. With Redis down the poll carries it; with
the database's epoch reads failing, strict compartments are refused and the others still served.

These tests share the machine with another test worker, so they bound arrival at 5 s (still far
below the poll); the one-second figure is asserted where nothing else runs, by three gateway
processes in ``tests/e2e/test_cluster_acceptance.py``, and measured by ``bench/cluster.py``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import openai
import orjson
import pytest

from bastion.store import events as event_rows
from bastion.testing import BASE_URL, Harness, running
from tests.conftest import CONFIG, _postgres_schema_url
from tests.integration.conftest import Cli
from tests.integration.test_lock_types import SlowStream
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

REDIS_URL = "redis://127.0.0.1:6379/15"
CLOSED_PORT_URL = "redis://127.0.0.1:1/15"  # nothing listens on port 1
CHAT = {"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]}
SANDBOX = {"model": "demo-sandbox", "messages": [{"role": "user", "content": "hi"}]}

# `general` is strict (0.5 s is the smallest bound); `sandbox` keeps the default.
GENERAL = "  general:\n    level: internal\n    grants:\n      orgs: [lab]\n"
assert GENERAL in CONFIG
STRICT_CONFIG = CONFIG.replace(
    GENERAL,
    GENERAL + "    lock_view: {strict: true, max_age_seconds: 0.5}\n"
    "  sandbox:\n    level: internal\n    grants:\n      orgs: [lab]\n",
).replace(
    "  - name: cyber-frontier\n",
    "  - name: demo-sandbox\n    upstream: example-openai\n    upstream_model: example-gpt\n"
    "    compartment: sandbox\n  - name: cyber-frontier\n",
)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL schema: cluster mode's database (SQLite is one process's file)."""
    yield from _postgres_schema_url()


@pytest.fixture
def redis_prefix() -> str:
    return "t" + secrets.token_hex(6)  # this test's own channel: parallel runs never collide


async def two_gateways(
    stack: AsyncExitStack,
    tmp: Path,
    upstream: httpx2.ASGITransport,
    env: dict[str, str],
    database_url: str,
    **settings: Any,
) -> tuple[Harness, Harness]:
    apps = []
    for _ in range(2):
        harness = await stack.enter_async_context(
            running(CONFIG, tmp, upstream=upstream, env=env, database_url=database_url, **settings)
        )
        apps.append(harness)
    return apps[0], apps[1]


async def served_when_fresh(client: httpx.AsyncClient, body: dict[str, object]) -> int:
    """POST ``body`` until it is served, within 20 s; returns how often it was refused first as
    ``lock_view_stale`` (on a loaded machine a rebuild after a change can outlast the 0.5 s
    bound, and then the strict compartment is rightly refused until the view is proven again)."""
    started, stale = time.monotonic(), 0
    while (response := await client.post("/v1/chat/completions", json=body)).status_code != 200:
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "lock_view_stale", response.text
        assert time.monotonic() - started < 20.0, "not served within 20 s"
        stale += 1
        await anyio.sleep(0.05)
    return stale


async def bob_on(harness: Harness, stack: AsyncExitStack) -> httpx.AsyncClient:
    """Bob's client on ``harness``, his key enrolled (through that gateway) and seen by it."""
    profile = await harness.enroll("bob")
    return await stack.enter_async_context(harness.client(profile))


@pytest.mark.postgres
async def test_a_lock_through_one_gateway_holds_at_the_other_over_redis(
    tmp_path: Path,
    upstream_transport: httpx2.ASGITransport,
    upstream_env: dict[str, str],
    postgres_url: str,
    redis_prefix: str,
) -> None:
    async with AsyncExitStack() as stack:
        one, two = await two_gateways(
            stack,
            tmp_path,
            upstream_transport,
            upstream_env,
            postgres_url,
            redis_url=REDIS_URL,
            redis_prefix=redis_prefix,
            state_poll_interval=30.0,
        )
        await eventually(lambda: one.services.sync.listening and two.services.sync.listening)
        client = await bob_on(two, stack)
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200

        _, epoch = one.services.locks.lock("principal", "bob", reason="cluster", author="test")
        took = await eventually(lambda: two.services.holder.current.epoch >= epoch)
        assert took < 5.0, f"arrived after {took:.2f}s"  # the poll comes only every 30 s

        response = await client.post("/v1/chat/completions", json=CHAT)
        assert response.status_code == 403
        assert response.json()["error"]["reasons"] == ["locked_principal"]
        assert one.services.store.on_epoch.failures == 0


@pytest.mark.postgres
async def test_with_redis_down_a_lock_still_arrives_by_polling(
    tmp_path: Path,
    upstream_transport: httpx2.ASGITransport,
    upstream_env: dict[str, str],
    postgres_url: str,
    redis_prefix: str,
) -> None:
    async with AsyncExitStack() as stack:
        one, two = await two_gateways(
            stack,
            tmp_path,
            upstream_transport,
            upstream_env,
            postgres_url,
            redis_url=CLOSED_PORT_URL,
            redis_prefix=redis_prefix,
            state_poll_interval=0.25,
        )
        assert not two.services.sync.listening
        # (no calls here: the DPoP replay cache lives in Redis and fails closed while it is down)
        _, epoch = one.services.locks.lock("principal", "bob", reason="cluster", author="test")
        await eventually(lambda: two.services.holder.current.epoch >= epoch)  # 0.25 s polls
        assert ("principal", "bob") in two.services.holder.current.locks
        assert one.services.store.on_epoch.failures >= 1  # tried, failed, swallowed


@pytest.fixture
async def strict(
    tmp_path: Path,
    upstream_transport: httpx2.ASGITransport,
    upstream_env: dict[str, str],
    database_url: str,
) -> AsyncIterator[Harness]:
    """One gateway (embedded or not, the rule is the same) with a strict compartment."""
    async with running(
        STRICT_CONFIG,
        tmp_path,
        upstream=upstream_transport,
        env=upstream_env,
        database_url=database_url,
        state_poll_interval=0.1,
    ) as harness:
        yield harness


async def test_a_strict_compartment_is_refused_when_the_epoch_cannot_be_read(
    strict: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync = strict.services.sync
    async with strict.client(await strict.enroll("bob")) as client:
        retried = await served_when_fresh(client, CHAT)

        def unreachable() -> int:
            raise OSError("database unreachable")

        monkeypatch.setattr(sync, "_read_epoch", unreachable)
        await eventually(lambda: sync.freshness(time.monotonic()) > 0.5)
        ready = (await client.get("/readyz")).json()
        assert ready["status"] == "ready"  # still serving the others, from the last snapshot
        assert ready["lock_view_age"] > 0.5

        refused = await client.post("/v1/chat/completions", json=CHAT)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "lock_view_stale"
        assert "general" in refused.json()["error"]["message"]
        served = await client.post("/v1/chat/completions", json=SANDBOX)
        assert served.status_code == 200  # not strict: served from the last snapshot

        monkeypatch.undo()  # the database answers again: the strict compartment serves again
        await eventually(lambda: sync.freshness(time.monotonic()) < 0.5)
        retried += await served_when_fresh(client, CHAT)

    await strict.services.recorder.flush()
    with strict.services.store.read() as conn:
        rows = event_rows.last(conn, 50, "request.decided")
    stale = [body for row in rows if (body := orjson.loads(row.body))["error"] == "lock_view_stale"]
    assert len(stale) == 1 + retried  # each refusal recorded, the one this test caused first
    assert (stale[0]["allowed"], stale[0]["reasons"], stale[0]["status"]) == (
        False,
        ["lock_view_stale"],
        503,
    )


@pytest.mark.postgres
async def test_bastion_lock_from_the_cli_is_enforced_by_a_running_gateway_at_once(
    tmp_path: Path,
    upstream_transport: httpx2.ASGITransport,
    upstream_env: dict[str, str],
    postgres_url: str,
    redis_prefix: str,
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running(
        CONFIG,
        tmp_path,
        upstream=upstream_transport,
        env=upstream_env,
        database_url=postgres_url,
        redis_url=REDIS_URL,
        redis_prefix=redis_prefix,
        state_poll_interval=30.0,
    ) as gateway:
        await eventually(lambda: gateway.services.sync.listening)
        monkeypatch.setenv("BASTION_DATABASE_URL", postgres_url)
        monkeypatch.setenv("BASTION_REDIS_URL", REDIS_URL)
        monkeypatch.setenv("BASTION_REDIS_PREFIX", redis_prefix)
        result = await anyio.to_thread.run_sync(
            cli, "lock", "principal", "bob", "--reason", "cluster"
        )
        assert result.code == 0, result.err
        # the CLI waits up to 3 s for the gateways to report the lock; this one polls every 30 s
        assert "enforced by 1 gateway(s)" in result.out
        assert ("principal", "bob") in gateway.services.holder.current.locks


@pytest.mark.postgres
async def test_a_lock_through_one_gateway_cuts_a_stream_open_on_the_other(
    tmp_path: Path, upstream_env: dict[str, str], postgres_url: str, redis_prefix: str
) -> None:
    # The brief: a lock takes effect on the next request in every process, and also ends open
    # streams. Bob streams through gateway two; the lock is placed through gateway one.
    upstream = SlowStream()
    async with AsyncExitStack() as stack:
        one, two = await two_gateways(
            stack,
            tmp_path,
            httpx2.MockTransport(upstream.handler),
            upstream_env,
            postgres_url,
            redis_url=REDIS_URL,
            redis_prefix=redis_prefix,
            state_poll_interval=30.0,  # only Redis can bring the lock within seconds
        )
        await eventually(lambda: one.services.sync.listening and two.services.sync.listening)
        client = openai.AsyncOpenAI(
            base_url=BASE_URL + "/v1",
            api_key="unused",
            http_client=two.sdk_client(await two.enroll("bob")),
            max_retries=0,
        )
        received: list[str] = []
        errors: list[str] = []
        cut_after: list[float] = []
        ended = anyio.Event()

        async def consume() -> None:
            stream = await client.chat.completions.create(
                model="demo-chat", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            try:
                async for chunk in stream:
                    received.extend(c.delta.content or "" for c in chunk.choices)
            except openai.APIError as error:
                errors.append(str(error))
            ended.set()

        async def lock_once_streaming() -> None:
            with anyio.fail_after(10):
                await upstream.started.wait()
            started = time.monotonic()
            one.services.locks.lock("principal", "bob", reason="cluster", author="test")
            with anyio.fail_after(10):
                await ended.wait()
            cut_after.append(time.monotonic() - started)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(consume)
            tasks.start_soon(lock_once_streaming)
        assert errors == ["stream ended: locked_principal"]
        assert 3 <= len(received) < 400  # all 400 chunks would take 20 s
        assert cut_after[0] < 5.0, f"cut after {cut_after[0]:.2f}s"
        await client.close()

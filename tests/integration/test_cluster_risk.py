"""Risk scores in cluster mode: the worker's engine scores, the gateways enforce.

A gateway and a worker share one PostgreSQL schema and one Redis prefix. The worker's detection
engine is the only one running; the scores it keeps reach the gateway over Redis
(``store/risk_feed.py``), so ``context.risk`` — and the default policy that forbids critical
models at a high score — holds on a gateway that never detects anything itself. Garbage on the
feed is counted and never applied.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
import redis

from bastion.store.risk_feed import risk_key
from bastion.testing import running
from tests.conftest import CONFIG, _postgres_schema_url
from tests.waiting import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

REDIS_URL = "redis://127.0.0.1:6379/15"
FRONTIER = {"model": "cyber-frontier", "messages": [{"role": "user", "content": "hi"}]}
CHAT = {"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def shared(
    upstream_transport: httpx2.ASGITransport, upstream_env: dict[str, str]
) -> Iterator[dict[str, Any]]:
    """What a gateway and a worker of one cluster share: a PostgreSQL schema, a Redis prefix."""
    for database_url in _postgres_schema_url():
        yield {
            "database_url": database_url,
            "env": upstream_env,
            "upstream": upstream_transport,
            "redis_url": REDIS_URL,
            "redis_prefix": "t" + secrets.token_hex(6),
        }


async def test_the_workers_risk_scores_hold_at_a_gateway_and_garbage_is_not_applied(
    tmp_path: Path, shared: dict[str, Any]
) -> None:
    async with AsyncExitStack() as stack:
        worker = await stack.enter_async_context(running(CONFIG, tmp_path, role="worker", **shared))
        gateway = await stack.enter_async_context(
            running(CONFIG, tmp_path, role="gateway", **shared)
        )
        board = gateway.services.detection.risk
        carol = await stack.enter_async_context(gateway.client(await gateway.enroll("carol")))
        assert (await carol.post("/v1/chat/completions", json=FRONTIER)).status_code == 200

        # The worker's engine scores carol high (as a critical finding would); its next step —
        # run on the traffic the gateway records — publishes the change.
        worker.services.detection.risk.add("principal", "carol", 95.0, time.time())
        assert (await carol.post("/v1/chat/completions", json=CHAT)).status_code == 200
        await eventually(lambda: board.risk("carol", "lab", time.time()) >= 90, what="the score")
        refused = await carol.post("/v1/chat/completions", json=FRONTIER)
        assert refused.status_code == 403
        assert "risk_too_high" in refused.text
        assert (await carol.post("/v1/chat/completions", json=CHAT)).status_code == 200

        # Anything on the feed that is not a well-formed entry is counted, never applied.
        client = redis.Redis.from_url(REDIS_URL)
        try:
            bad = [
                b"not json",
                b'{"an": "object"}',
                orjson.dumps([["principal", "bob", 1e9, 0.0]]),  # score out of range
                orjson.dumps([["principal", "bob", float("nan"), 0.0]]),
                orjson.dumps([["janitor", "bob", 99.0, time.time()]]),  # unknown kind
                orjson.dumps([["principal", "b" * 300, 99.0, time.time()]]),  # name too long
                orjson.dumps([["principal", "bob", True, time.time()]]),
                orjson.dumps([["principal", "bob", 99.0]]),
            ]
            for message in bad:
                client.publish(risk_key(shared["redis_prefix"]), message)
            # a well-formed one after them proves the garbage was read (and skipped) first
            client.publish(
                risk_key(shared["redis_prefix"]), orjson.dumps([["principal", "alice", 50.0, 0.0]])
            )
        finally:
            client.close()
        await eventually(lambda: board.score("principal", "alice", 0.0) == 50.0)
        assert board.score("principal", "bob", time.time()) == 0.0
        assert board.score("janitor", "bob", time.time()) == 0.0


async def test_a_gateway_started_later_loads_the_current_scores(
    tmp_path: Path, shared: dict[str, Any]
) -> None:
    async with AsyncExitStack() as stack:
        worker = await stack.enter_async_context(running(CONFIG, tmp_path, role="worker", **shared))
        first = await stack.enter_async_context(running(CONFIG, tmp_path, role="gateway", **shared))
        worker.services.detection.risk.add("principal", "carol", 80.0, time.time())
        bob = await stack.enter_async_context(first.client(await first.enroll("bob")))
        assert (await bob.post("/v1/chat/completions", json=CHAT)).status_code == 200
        await eventually(
            lambda: first.services.detection.risk.score("principal", "carol", time.time()) > 70
        )

        later = await stack.enter_async_context(running(CONFIG, tmp_path, role="gateway", **shared))
        board = later.services.detection.risk
        await eventually(lambda: board.score("principal", "carol", time.time()) > 70)

"""Integration fixtures: Bastion in-process on a real store, the stand-in upstream behind it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest
from examples.upstream import create_app as create_upstream

from bastion.testing import Harness, running
from tests.conftest import UPSTREAM_KEY


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def upstream_transport() -> httpx2.ASGITransport:
    return httpx2.ASGITransport(app=create_upstream(api_key=UPSTREAM_KEY))


@pytest.fixture
async def harness(
    tmp_path: Path,
    config_text: str,
    upstream_env: dict[str, str],
    upstream_transport: httpx2.ASGITransport,
    database_url: str,
) -> AsyncIterator[Harness]:
    """Bastion in-process; every test using it runs on SQLite and on PostgreSQL."""
    async with running(
        config_text,
        tmp_path,
        upstream=upstream_transport,
        env=upstream_env,
        database_url=database_url,
    ) as running_harness:
        yield running_harness

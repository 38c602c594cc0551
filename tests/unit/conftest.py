"""Unit-test fixtures: async tests run on asyncio (the backend the gateway runs on)."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

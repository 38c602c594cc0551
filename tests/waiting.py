"""Waiting in tests for something another task, thread or process does.

Tests share a noisy machine with a second test worker, so they wait for what they need, polling,
with a generous bound that only a real failure reaches; timing targets belong in ``bench/`` and
in the serial end-to-end tests."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio

PATIENCE = 20.0  # seconds: far beyond any healthy wait, still a bounded failure


async def eventually(
    condition: Callable[[], object], within: float = PATIENCE, *, what: str = "the condition"
) -> float:
    """Poll ``condition`` every 10 ms until it is truthy; the seconds that took. Fails (an
    ``AssertionError`` naming ``what``) when ``within`` seconds pass first."""
    started = time.monotonic()
    while not condition():
        elapsed = time.monotonic() - started
        assert elapsed < within, f"{what} did not hold within {within} s"
        await anyio.sleep(0.01)
    return time.monotonic() - started

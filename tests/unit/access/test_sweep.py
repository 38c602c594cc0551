"""The lifecycle sweep's background task: a cancelled sweep lets its worker thread finish."""

from __future__ import annotations

import asyncio
import threading

import anyio.to_thread
import pytest

from bastion.background import finish_on_cancel

pytestmark = pytest.mark.anyio


async def test_the_result_comes_back() -> None:
    assert await finish_on_cancel(anyio.to_thread.run_sync(lambda: 42)) == 42


async def test_a_cancelled_caller_waits_for_the_thread_then_is_cancelled() -> None:
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def work() -> None:
        started.set()
        release.wait(5)
        finished.set()

    task = asyncio.create_task(finish_on_cancel(anyio.to_thread.run_sync(work)))
    await anyio.to_thread.run_sync(started.wait, 5)
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done()  # still waiting for the thread, which still holds its resources
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished.is_set()


async def test_a_failure_after_cancellation_is_not_left_unretrieved() -> None:
    release = threading.Event()

    def work() -> None:
        release.wait(5)
        raise RuntimeError("boom")

    task = asyncio.create_task(finish_on_cancel(anyio.to_thread.run_sync(work)))
    await asyncio.sleep(0.05)
    task.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task

"""Background loops stop when cancelled: ``wait_set`` keeps a cancel that ``asyncio.wait_for``
loses on Python 3.11, and ``stop`` never lets a shutdown hang on a loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import pytest

import bastion
from bastion.background import stop, wait_set

pytestmark = pytest.mark.anyio


async def _nudged_loop(event: asyncio.Event, woke: list[int]) -> None:
    while True:
        await wait_set(event, 30)
        event.clear()
        woke.append(1)


async def test_a_cancel_arriving_as_the_event_is_set_stops_the_loop() -> None:
    # The race behind the shutdown hang: the event is set, its waiter has finished, and the
    # cancel lands before the loop resumes. With asyncio.wait_for the loop went on forever.
    event, woke = asyncio.Event(), []
    task = asyncio.create_task(_nudged_loop(event, woke))
    await asyncio.sleep(0.01)
    event.set()
    await asyncio.sleep(0)  # the event's waiter completes; the loop has not resumed yet
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)
    assert done == {task}
    assert task.cancelled()


async def test_wait_set_returns_when_set_or_after_the_time() -> None:
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await wait_set(event, 0.05)
    assert 0.04 <= loop.time() - started < 1
    assert not event.is_set()
    loop.call_later(0.01, event.set)
    started = loop.time()
    await wait_set(event, 30)
    assert event.is_set()
    assert loop.time() - started < 1


def test_no_background_code_uses_asyncio_wait_for() -> None:
    source = Path(bastion.__file__).parent
    users = [
        str(path.relative_to(source))
        for path in sorted(source.rglob("*.py"))
        if "asyncio.wait_for(" in path.read_text(encoding="utf-8")
    ]
    assert users == [], "asyncio.wait_for loses cancels on 3.11: use asyncio.timeout / wait_set"


async def test_stop_cancels_every_loop() -> None:
    event = asyncio.Event()
    tasks = [asyncio.create_task(_nudged_loop(event, [])) for _ in range(3)]
    await asyncio.sleep(0)
    await stop(tasks, grace=2)
    assert all(task.cancelled() for task in tasks)


async def test_stop_cancels_again_a_loop_that_lost_its_first_cancel() -> None:
    cancels = []

    async def deaf_once() -> None:
        while True:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancels.append(1)
                if len(cancels) > 1:
                    raise

    task = asyncio.create_task(deaf_once())
    await asyncio.sleep(0)
    await stop([task], grace=0.05)
    assert task.cancelled()
    assert len(cancels) == 2


async def test_stop_leaves_behind_and_names_a_loop_that_will_not_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    released = False

    async def deaf() -> None:
        while not released:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(30)

    task = asyncio.create_task(deaf(), name="Deaf.run")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="bastion"):
        await stop([task], grace=0.05)
    assert not task.done()
    assert "background loop Deaf.run did not stop" in caplog.text
    released = True  # the test must not leave it running
    task.cancel()
    await task


async def test_stop_reports_a_loop_that_had_failed(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(broken(), name="Broken.run")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="bastion"):
        await stop([task], grace=1)
    assert "background loop Broken.run had failed" in caplog.text
    assert "RuntimeError: boom" in caplog.text


async def test_stop_with_no_loops() -> None:
    await stop([])

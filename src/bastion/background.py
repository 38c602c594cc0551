"""Background loops and shutdown.

Cancelling a task that awaits ``anyio.to_thread.run_sync`` does not stop the worker thread:
the task ends at once and the thread runs on. At shutdown the store closes right after the
background tasks are cancelled, so a thread left running would use a closed store (and leak
its connection). Loops that hand store work to a thread await it through
:func:`finish_on_cancel`, and loops that sleep until nudged wait through :func:`wait_set`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger("bastion")

STOP_GRACE = 10.0  # seconds a cancelled background loop has to end before it is cancelled again


async def finish_on_cancel(work: Awaitable[T]) -> T:
    """Await ``work`` in a task of its own; if the caller is cancelled, let ``work`` finish
    first and then re-raise."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved: its outcome no longer matters to anyone
        raise


async def wait_set(event: asyncio.Event, seconds: float) -> None:
    """Wait until ``event`` is set or ``seconds`` have passed, whichever comes first.

    Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancel that arrives in the same loop
    iteration as the event is set (python/cpython#86296), and a background loop built on it
    then never stops: the process hangs at shutdown. ``asyncio.timeout`` keeps the cancel."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


async def stop(tasks: list[asyncio.Task[None]], grace: float = STOP_GRACE) -> None:
    """Cancel background loops and wait for them to end. A loop still running after ``grace``
    seconds is cancelled once more (a cancel can be lost, see ``wait_set``); one that outlives
    that too is logged by name and left behind: a shutdown never hangs on a loop. A loop that
    had ended with an error is logged too, since nothing else would report it."""
    for task in tasks:
        task.cancel()
    _, pending = await asyncio.wait(tasks, timeout=grace) if tasks else (set(), set())
    if pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=grace)
    for task in tasks:
        if task in pending:
            log.error("background loop %s did not stop; shutting down without it", task.get_name())
        elif not task.cancelled() and (exc := task.exception()) is not None:
            log.error("background loop %s had failed", task.get_name(), exc_info=exc)

"""Background loops and shutdown.

Cancelling a task that awaits ``anyio.to_thread.run_sync`` does not stop the worker thread:
the task ends at once and the thread runs on. At shutdown the store closes right after the
background tasks are cancelled, so a thread left running would use a closed store (and leak
its connection). Loops that hand store work to a thread await it through
:func:`finish_on_cancel`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


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

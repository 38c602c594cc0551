"""What a process runs between start and stop: its role's background loops and its shutdown.

``create_app`` (``app.py``) builds the parts; ``lifespan`` is the Starlette lifespan it hands
the control app. The order of the shutdown matters and is written down here once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette

from bastion.background import stop

if TYPE_CHECKING:
    from bastion.app import Parts


def background(parts: Parts) -> list[Coroutine[Any, Any, None]]:
    """The background loops this process's role runs. Every process keeps its snapshot fresh and
    writes its own audit queue; CAEP and webhook deliveries are queued in memory by the process
    that caused them (a lock made through one gateway's admin API, say), so each process sends
    its own. Every process runs the integrity watch too: in a cluster's gateways it only follows
    the shared tamper mark the worker's verification sets, which is how their recorders refuse
    ``audit: required`` compartments within a pass of a tamper being found. The
    once-per-deployment loops run only in the embedded process or the worker."""
    services = parts.services
    loops: list[Coroutine[Any, Any, None]] = [services.sync.run(), services.recorder.run()]
    if services.caep is not None:
        loops.append(services.caep.run())
    if services.notifier is not None:
        loops.append(services.notifier.run())
    if services.integrity is not None:
        loops.append(services.integrity.run())
    if parts.risk_feed is not None:
        loops.append(parts.risk_feed.run(services.detection.risk))
    if parts.role != "gateway":
        loops += [parts.checkpointer.run(), services.sweeper.run(), services.detection.run()]
    return loops


def lifespan(parts: Parts) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """First snapshot, then (outside a gateway) the first lifecycle sweep, then the role's
    background loops (see ``background``); on shutdown the audit queue is flushed and, outside
    a gateway, a last checkpoint signed before the store closes."""
    services = parts.services
    once_per_deployment = parts.role != "gateway"

    @contextlib.asynccontextmanager
    async def run(_app: Starlette) -> AsyncIterator[None]:
        await services.sync.reload()
        if once_per_deployment:
            await services.sweeper.safely()  # before serving: nothing races the first sweep
        tasks = [
            asyncio.create_task(loop, name=getattr(loop, "__qualname__", None))
            for loop in background(parts)
        ]
        try:
            yield
        finally:
            await stop(tasks)
            await services.recorder.flush()
            if once_per_deployment:
                await services.detection.stop()
            if services.notifier is not None:
                await services.notifier.stop()  # after detection: its last findings go out too
            if once_per_deployment:
                await parts.checkpointer.once()
            await parts.proxy.aclose()
            if parts.shared_redis is not None:
                await parts.shared_redis.aclose()
            services.sync.deregister()
            services.store.close()

    return run

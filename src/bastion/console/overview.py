"""The overview page (``/console/``) and its live stream (``/console/overview/stream``).

The numbers come from the shared store (``store/overview.py`` and the audit log's tables), so
every gateway of a cluster shows the same ones: requests in the last ``RATE_WINDOW`` seconds as
a rate, allowed and denied in the last hour with the top denial reasons, open findings and
incidents, active locks, the audit log's size and its last signed checkpoint, and a per-minute
series of the last hour for the chart.

The stream sends a ``stats`` event every ``interval`` seconds. It is bounded: it ends when the
client goes away, when the session ends (idle, too old, signed out, principal locked — then an
``end`` event tells the page), and after ``STREAM_SECONDS`` (the browser reconnects). Watching
the stream is not activity: an open tab does not keep an idle session alive.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.to_thread
import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from bastion.errors import AccessDenied, BastionError
from bastion.store import Store
from bastion.store import events as event_rows
from bastion.store import overview as overview_rows

from .guard import ConsoleGuard, MfaRequired, SignInRequired, Viewer

ACTION = "overview_read"
ACCESS_PAGE = "/console/access"
RATE_WINDOW = 10.0  # seconds the requests-per-second figure averages over
HOUR = 3600.0
MINUTE = 60.0
STREAM_SECONDS = 300.0
INTERVAL = 2.0


def collect(store: Store, now: float) -> dict[str, Any]:
    """Every figure of the overview at ``now`` (JSON-ready)."""
    start = now - HOUR
    first_minute = int(start // MINUTE) * MINUTE  # whole minutes, so the chart's bars stay put
    with store.read() as conn:
        recent = overview_rows.requests_since(conn, now - RATE_WINDOW)
        hour = overview_rows.requests_since(conn, start)
        minutes = overview_rows.request_minutes(conn, first_minute, MINUTE)
        reasons = overview_rows.top_denial_reasons(conn, start)
        findings = overview_rows.open_findings(conn)
        incidents = overview_rows.open_incidents(conn)
        locks = overview_rows.active_locks(conn, now)
        size = event_rows.size(conn)
        checkpoint = event_rows.latest_checkpoint(conn)
    buckets = int((now - first_minute) // MINUTE) + 1
    series = [minutes.get(i, overview_rows.Counts(0, 0)) for i in range(buckets)][-61:]
    return {
        "now": now,
        "rps": round((recent.allowed + recent.denied) / RATE_WINDOW, 1),
        "allowed": hour.allowed,
        "denied": hour.denied,
        "reasons": [{"reason": reason, "count": count} for reason, count in reasons],
        "findings": findings,
        "incidents": incidents,
        "locks": locks,
        "audit_size": size,
        "checkpoint": None
        if checkpoint is None
        else {"size": checkpoint.size, "at": checkpoint.created_at},
        "series_start": first_minute + (buckets - len(series)) * MINUTE,
        "series": [[c.allowed, c.denied] for c in series],
    }


class Overview:
    def __init__(
        self,
        guard: ConsoleGuard,
        store: Store,
        clock: Callable[[], float] = time.time,
        *,
        interval: float = INTERVAL,
        stream_seconds: float = STREAM_SECONDS,
    ) -> None:
        self.guard = guard
        self.store = store
        self._clock = clock
        self.interval = interval
        self.stream_seconds = stream_seconds
        self._lock = anyio.Lock()
        self._cached: tuple[float, dict[str, Any]] | None = None

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.landing, methods=["GET"]),
            Route("/overview/stream", self.stream, methods=["GET"]),
        ]

    async def stats(self, *, shared: bool = False) -> dict[str, Any]:
        """The figures now. ``shared`` (the live streams): computed at most once per
        ``interval`` for every stream of this process, so ten open tabs cost the database
        what one does; a page load always computes them afresh."""
        async with self._lock:
            cached, started = self._cached, time.monotonic()
            if shared and cached is not None and started - cached[0] < self.interval * 0.9:
                return cached[1]
            stats = await anyio.to_thread.run_sync(collect, self.store, self._clock())
            self._cached = (started, stats)
            return stats

    async def landing(self, request: Request) -> Response:
        """Where sign-in lands: the overview for those who may read it; an approver without a
        control-plane role (who may not) goes to the Access page, where their work is."""

        async def shown() -> Response:
            viewer = self.guard.viewer(request, None)
            try:
                self.guard.admit(request, viewer.principal, ACTION, quiet=True)
            except AccessDenied:
                return RedirectResponse(ACCESS_PAGE, status_code=303)
            return await self.page(request, viewer)

        return await self.guard.run(request, shown)

    async def page(self, request: Request, viewer: Viewer) -> Response:
        stats = await self.stats()
        return self.guard.render(request, "overview.html", viewer, stats=stats)

    async def stream(self, request: Request) -> Response:
        async def opened() -> Response:
            self.guard.viewer(request, ACTION, touch=False)
            return StreamingResponse(self._events(request), media_type="text/event-stream")

        return await self.guard.run(request, opened)

    async def _events(self, request: Request) -> AsyncIterator[bytes]:
        yield b"retry: 3000\n\n"
        deadline = time.monotonic() + self.stream_seconds
        while time.monotonic() < deadline:
            if await request.is_disconnected():
                return
            try:
                self.guard.viewer(request, ACTION, touch=False)
            except (SignInRequired, MfaRequired, BastionError):
                yield b"event: end\ndata: {}\n\n"
                return
            yield b"event: stats\ndata: " + orjson.dumps(await self.stats(shared=True)) + b"\n\n"
            await anyio.sleep(self.interval)

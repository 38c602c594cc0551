"""A closed-loop HTTP load generator: ``concurrency`` workers, each sending its next request as
soon as the previous one finishes over its own keep-alive HTTP/1.1 connection.

Each worker has its own ``httpx.AsyncClient`` holding one connection, rather than all workers
sharing one pool: httpx 0.28's shared async pool stalls under concurrency (encode/httpx#3215).
Measured on this project's 2-core machine against the example upstream at concurrency 16, one
shared client managed ~650 rps with a p99 of ~120 ms, one client per worker ~1,770 rps with a
p99 of ~16 ms. With the shared pool the benchmark would mostly measure the load generator.

What is timed: only the HTTP exchange, from just before the request is sent to the last byte of
the response body. Header generation (``make_headers(method, url)``, e.g. a fresh DPoP proof
signed per request for the Bastion arm) runs before the clock starts, because it is the client's
cost, not the gateway's. It still runs on this process's event loop, so it does take a share of
the wall time that ``rps`` is computed from; compare ``rps`` between arms with that in mind.
Each connection is opened by one untimed request before the clock starts, so TCP set-up (16 of
1,000 requests at concurrency 16) does not land in the p99.

Bounded: a run stops issuing requests after ``requests`` requests or ``duration_limit`` seconds,
whichever comes first; requests still in flight get a short grace period, then are cancelled and
counted as errors.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import anyio
import httpx

MakeHeaders = Callable[[str, str], dict[str, str]]

# After the duration limit, in-flight requests get this long before they are cancelled.
_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class LoadResult:
    """One run's measurements. ``latencies_ms`` holds successful requests only."""

    latencies_ms: list[float]
    errors: int
    wall_seconds: float
    concurrency: int
    first_error: str | None = None
    status_counts: dict[int, int] = field(default_factory=dict)

    @property
    def completed(self) -> int:
        return len(self.latencies_ms)

    @property
    def rps(self) -> float:
        """Successful requests per second of wall time."""
        return self.completed / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile of the latencies, in ms (NaN if there are none)."""
        if not self.latencies_ms:
            return math.nan
        ordered = sorted(self.latencies_ms)
        rank = max(1, math.ceil(q / 100 * len(ordered)))
        return ordered[rank - 1]


@dataclass
class _Tally:
    latencies_ms: list[float] = field(default_factory=list)
    issued: int = 0
    errors: int = 0
    first_error: str | None = None
    status_counts: dict[int, int] = field(default_factory=dict)

    def error(self, what: str, count: int = 1) -> None:
        self.errors += count
        if self.first_error is None:
            self.first_error = what

    def completed_or_failed(self) -> int:
        return len(self.latencies_ms) + self.errors

    def response(self, response: httpx.Response, elapsed_ms: float) -> None:
        status = response.status_code
        self.status_counts[status] = self.status_counts.get(status, 0) + 1
        if 200 <= status < 300:
            self.latencies_ms.append(elapsed_ms)
        else:
            self.error(f"HTTP {status}: {response.text[:200]}")


@contextlib.asynccontextmanager
async def _clients(count: int, seconds: float) -> AsyncIterator[list[httpx.AsyncClient]]:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                httpx.AsyncClient(limits=limits, timeout=seconds, trust_env=False)
            )
            for _ in range(count)
        ]


async def run_load(
    url: str,
    *,
    make_headers: MakeHeaders | None,
    body: bytes,
    concurrency: int,
    requests: int,
    duration_limit: float,
    method: str = "POST",
) -> LoadResult:
    """Send up to ``requests`` requests to ``url`` from ``concurrency`` workers.

    A request counts as an error unless it got a 2xx response whose body was read in full.
    """
    if concurrency < 1 or requests < 1 or duration_limit <= 0:
        raise ValueError("concurrency, requests and duration_limit must be positive")
    tally = _Tally()
    base_headers = {"content-type": "application/json"}

    def headers() -> dict[str, str]:
        return (base_headers | make_headers(method, url)) if make_headers else base_headers

    async def prime(client: httpx.AsyncClient) -> None:
        with contextlib.suppress(httpx.HTTPError):
            await client.request(method, url, headers=headers(), content=body)

    async with _clients(concurrency, duration_limit + _GRACE_SECONDS) as clients:
        with anyio.move_on_after(duration_limit + _GRACE_SECONDS):
            async with anyio.create_task_group() as group:
                for client in clients:
                    group.start_soon(prime, client)
        started = time.perf_counter()
        deadline = started + duration_limit

        async def worker(client: httpx.AsyncClient) -> None:
            while tally.issued < requests and time.perf_counter() < deadline:
                tally.issued += 1
                request_headers = headers()
                begin = time.perf_counter()
                try:
                    response = await client.request(
                        method, url, headers=request_headers, content=body
                    )
                except httpx.HTTPError as exc:
                    tally.error(f"{type(exc).__name__}: {exc}")
                    continue
                tally.response(response, (time.perf_counter() - begin) * 1000.0)

        with anyio.move_on_after(duration_limit + _GRACE_SECONDS):
            async with anyio.create_task_group() as group:
                for client in clients:
                    group.start_soon(worker, client)
        wall = time.perf_counter() - started
    if cancelled := tally.issued - tally.completed_or_failed():
        tally.error(f"{cancelled} request(s) still in flight at the time limit", cancelled)
    return LoadResult(
        latencies_ms=tally.latencies_ms,
        errors=tally.errors,
        wall_seconds=wall,
        concurrency=concurrency,
        first_error=tally.first_error,
        status_counts=tally.status_counts,
    )

"""Cluster mode, measured: lock propagation across gateways, and throughput with 1, 2, 4 gateways.

Both run on ``bench/cluster_stack.py``: real ``bastion serve`` gateway processes and a ``bastion
worker`` on this machine's PostgreSQL (a fresh schema) and Redis (a fresh key prefix).

Lock propagation
    Each trial places a lock on one principal through the admin API of one gateway (taking turns)
    while that principal's requests go to every gateway back to back; the trial's time is from
    just before the lock request was sent until the last gateway refused — the slowest of the
    three, which is what "enforced by all" means. Then the lock is released and every gateway is
    seen serving again before the next trial. Reported: median, p90 and max over the trials.

Throughput
    For each gateway count, a fresh stack (with its worker) and a closed-loop load of
    ``--requests`` small chat requests at ``--concurrency``, spread evenly over the gateways,
    each request signed with a fresh DPoP proof. Reported per count: total requests/s (median over
    ``--rounds``, min-max), p50/p99 latency, and the gateways' CPU time per request (from
    /proc: user + system of every gateway process), which is the per-process cost that stays
    meaningful on a 2-core machine where the load generator, PostgreSQL, Redis, the worker and
    the stand-in upstream share the cores with the gateways.

Run:  python -m bench.cluster [--trials 50] [--gateways 1 2 4] [--requests 2000]
      [--concurrency 16] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import anyio
import httpx
import orjson
from rich.console import Console
from rich.table import Table

from bench.cluster_stack import CHAT_PATH, Caller, Stack, cluster_stack
from bench.load import LoadResult, run_load

BODY = orjson.dumps(
    {"model": "chat", "messages": [{"role": "user", "content": "Hello from the benchmark."}]}
)
LOCKS = "/admin/v1/locks"
TRIAL_LIMIT = 10.0  # seconds: a trial that has not propagated by then fails loudly


@dataclass(frozen=True)
class Trial:
    via: int  # the gateway the lock was placed through
    seconds: tuple[float, ...]  # per gateway, until it refused the locked principal

    @property
    def slowest(self) -> float:
        return max(self.seconds)


async def _refused(client: httpx.AsyncClient, url: str, caller: Caller, since: float) -> float:
    """Send ``caller``'s requests to ``url`` back to back; seconds from ``since`` to the first
    refusal (403: the lock). Fails after ``TRIAL_LIMIT``."""
    while True:
        response = await client.post(url + CHAT_PATH, content=BODY, headers=caller.headers())
        if response.status_code == 403:
            return time.perf_counter() - since
        if response.status_code != 200:
            raise RuntimeError(f"unexpected {response.status_code}: {response.text[:200]}")
        if time.perf_counter() - since > TRIAL_LIMIT:
            raise RuntimeError(f"{url} still served the locked principal after {TRIAL_LIMIT}s")


async def _all_refused(
    client: httpx.AsyncClient, urls: Sequence[str], caller: Caller, since: float
) -> tuple[float, ...]:
    seconds = [0.0] * len(urls)

    async def watch(index: int, url: str) -> None:
        seconds[index] = await _refused(client, url, caller, since)

    async with anyio.create_task_group() as group:
        for index, url in enumerate(urls):
            group.start_soon(watch, index, url)
    return tuple(seconds)


async def _serving(client: httpx.AsyncClient, url: str, caller: Caller) -> None:
    deadline = time.perf_counter() + TRIAL_LIMIT
    while time.perf_counter() < deadline:
        response = await client.post(url + CHAT_PATH, content=BODY, headers=caller.headers())
        if response.status_code == 200:
            return
        await anyio.sleep(0.01)
    raise RuntimeError(f"{url} still refused after the lock was released")


async def lock_propagation(stack: Stack, trials: int, principal: str = "svc-0") -> list[Trial]:
    """Lock, see every gateway refuse, release, see every gateway serve; ``trials`` times."""
    ops, target = stack.caller("ops"), stack.caller(principal)
    results: list[Trial] = []
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        for url in stack.urls:
            await _serving(client, url, target)
        for n in range(trials):
            via = n % len(stack.urls)
            admin = stack.urls[via]
            started = time.perf_counter()
            placed = await client.post(
                admin + LOCKS,
                json={"target_type": "principal", "target": principal, "reason": f"trial {n}"},
                headers=ops.headers("POST", LOCKS),
            )
            if placed.status_code != 201:
                raise RuntimeError(f"lock refused: {placed.status_code} {placed.text[:200]}")
            seconds = await _all_refused(client, stack.urls, target, started)
            results.append(Trial(via, seconds))
            release = f"{LOCKS}/{placed.json()['lock']['id']}/release"
            released = await client.post(
                admin + release, json={"reason": "trial over"}, headers=ops.headers("POST", release)
            )
            if released.status_code != 200:
                raise RuntimeError(f"release refused: {released.status_code} {released.text}")
            for url in stack.urls:
                await _serving(client, url, target)
    return results


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Throughput:
    gateways: int
    rps: list[float]
    p50_ms: list[float]
    p99_ms: list[float]
    cpu_ms_per_request: list[float]  # every gateway process's CPU, per completed request
    errors: int


async def _spread(stack: Stack, requests: int, concurrency: int) -> LoadResult:
    """One closed-loop run over every gateway at once; merged into one result."""
    callers = [stack.caller(f"svc-{n}") for n in range(len(stack.urls))]
    share = max(1, concurrency // len(stack.urls))
    results: list[LoadResult] = []

    async def one(index: int, url: str) -> None:
        caller = callers[index]
        results.append(
            await run_load(
                url + CHAT_PATH,
                make_headers=lambda _m, _u: caller.headers(),
                body=BODY,
                concurrency=share,
                requests=requests // len(stack.urls),
                duration_limit=120.0,
            )
        )

    async with anyio.create_task_group() as group:
        for index, url in enumerate(stack.urls):
            group.start_soon(one, index, url)
    wall = max(r.wall_seconds for r in results)
    return LoadResult(
        latencies_ms=[ms for r in results for ms in r.latencies_ms],
        errors=sum(r.errors for r in results),
        wall_seconds=wall,
        concurrency=share * len(stack.urls),
        first_error=next((r.first_error for r in results if r.first_error), None),
    )


def throughput(gateways: int, requests: int, concurrency: int, rounds: int) -> Throughput:
    with cluster_stack(gateways, services=max(gateways, 1)) as stack:
        pids = [g.pid for g in stack.gateways if g is not None]
        anyio.run(_spread, stack, min(requests, 400), concurrency)  # warm up every gateway
        out = Throughput(gateways, [], [], [], [], 0)
        for _ in range(rounds):
            before = sum(_cpu_seconds(pid) for pid in pids)
            result = anyio.run(_spread, stack, requests, concurrency)
            cpu = sum(_cpu_seconds(pid) for pid in pids) - before
            out.rps.append(result.rps)
            out.p50_ms.append(result.percentile(50))
            out.p99_ms.append(result.percentile(99))
            out.cpu_ms_per_request.append(1000 * cpu / max(result.completed, 1))
            if result.errors:
                raise RuntimeError(f"{result.errors} errors, first: {result.first_error}")
        return out


def _spread_of(values: Sequence[float], fmt: str = "{:.0f}") -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-" + (
        f"{fmt.format(max(values))})"
    )


def report_propagation(trials: list[Trial], console: Console) -> dict[str, float]:
    slowest = sorted(t.slowest for t in trials)
    figures = {
        "trials": len(trials),
        "median_ms": 1000 * statistics.median(slowest),
        "p90_ms": 1000 * slowest[max(0, round(0.9 * len(slowest)) - 1)],
        "max_ms": 1000 * slowest[-1],
        "min_ms": 1000 * slowest[0],
    }
    table = Table("trials", "median", "p90", "max", "min", title="Lock → refused by every gateway")
    table.add_row(
        str(len(trials)),
        *(f"{figures[k]:.0f} ms" for k in ("median_ms", "p90_ms", "max_ms", "min_ms")),
    )
    console.print(table)
    return figures


def report_throughput(runs: list[Throughput], console: Console) -> None:
    table = Table(
        "gateways",
        "requests/s (median, min-max)",
        "vs one gateway",
        "p50 ms",
        "p99 ms",
        "gateway CPU ms / request",
        title="Throughput",
    )
    base = statistics.median(runs[0].rps) if runs else 1.0
    for run in runs:
        table.add_row(
            str(run.gateways),
            _spread_of(run.rps),
            f"{statistics.median(run.rps) / base:.2f}",
            _spread_of(run.p50_ms, "{:.1f}"),
            _spread_of(run.p99_ms, "{:.1f}"),
            _spread_of(run.cpu_ms_per_request, "{:.2f}"),
        )
    console.print(table)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--gateways", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.trials < 1 or args.requests < 1 or args.concurrency < 1 or args.rounds < 1:
        parser.error("--trials, --requests, --concurrency and --rounds must be positive")
    if any(n < 1 or n > 8 for n in args.gateways):
        parser.error("--gateways: each count must be 1 to 8")
    console = Console()
    with cluster_stack(3) as stack:
        trials = anyio.run(lock_propagation, stack, args.trials)
    propagation = report_propagation(trials, console)
    runs = [throughput(n, args.requests, args.concurrency, args.rounds) for n in args.gateways]
    report_throughput(runs, console)
    if args.json is not None:
        args.json.write_bytes(
            orjson.dumps(
                {
                    "propagation": propagation,
                    "trials": [asdict(t) for t in trials],
                    "throughput": [asdict(r) for r in runs],
                },
                option=orjson.OPT_INDENT_2,
            )
        )


if __name__ == "__main__":
    main()

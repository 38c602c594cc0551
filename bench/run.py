"""Measure what a gateway hop costs: every arm answers the same request in the same run.

Arms
    direct       the client calls the example upstream itself (the baseline)
    passthrough  through a bare Python reverse proxy on the same stack as Bastion (the floor)
    bastion      Bastion in front of the upstream, its compartment ``audit: best-effort``
    bastion-audit-required
                 the same with ``audit: required``: two durable audit commits per request
                 (both Bastion arms: ``bench/bastion_arm.py``)
    ...          any other arm given as ``main(extra_arms=...)``

Every arm sends a small non-streaming ``POST /v1/chat/completions``. For each concurrency level
(default 1 for latency, 16 for throughput) each arm is warmed up, then measured for ``--rounds``
rounds, the arms taking turns round-robin (the starting arm rotates each round) so slow drifts
of the machine spread over all arms. The table shows, per arm: requests per second (median over
rounds, with min and max), p50 and p99 latency (median over rounds), the latency added over the
direct arm, and throughput as a ratio of the passthrough arm's.

Each server runs in its own uvicorn subprocess on 127.0.0.1 with a free port and is stopped on
exit, Ctrl-C included. Latencies time only the HTTP exchange (see ``bench/load.py``).

Run:  python -m bench.run [--rounds 5] [--requests 1000] [--concurrency 1 16] [--json out.json]

Adding an arm: write a function that takes the running :class:`Upstream` and returns an
:class:`Arm` and a cleanup callable, and pass it in ``extra_arms``. For Bastion, roughly::

    def start_bastion(upstream: Upstream) -> tuple[Arm, Cleanup]:
        port = free_port()
        config = write_bastion_config(upstream.url, upstream.api_key)    # the upstream + a model
        server = start_server(
            "bastion",
            ["bastion", "serve", "--config", str(config), "--port", str(port)],
            health_url=f"http://127.0.0.1:{port}/healthz",
        )
        signer = ...                               # a DPoP signer and an access token
        def headers(method: str, url: str) -> dict[str, str]:
            return {"authorization": f"DPoP {token}", "dpop": signer.proof(method, url)}
        return Arm("bastion", f"http://127.0.0.1:{port}", headers), server.stop
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import orjson
from rich.console import Console
from rich.table import Table

from bench.load import LoadResult, MakeHeaders, run_load

ROOT = Path(__file__).resolve().parent.parent
REQUEST_PATH = "/v1/chat/completions"
REQUEST_BODY = orjson.dumps(
    {
        "model": "example-gpt",
        "messages": [{"role": "user", "content": "Hello from the benchmark."}],
        "max_tokens": 32,
    }
)

Cleanup = Callable[[], None]


@dataclass(frozen=True)
class Arm:
    """One way of reaching the upstream. ``make_headers(method, url)`` runs before every request."""

    name: str
    base_url: str
    make_headers: MakeHeaders | None = None
    path: str = REQUEST_PATH

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + self.path


@dataclass(frozen=True)
class Upstream:
    """The running example upstream: its base URL and the key it requires."""

    url: str
    api_key: str

    def key_headers(self, _method: str, _url: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"}


ArmStarter = Callable[[Upstream], tuple[Arm, Cleanup]]


class ServerProcess:
    """A server subprocess whose output goes to a temporary log, shown if it fails to start."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: dict[str, str] | None,
        cwd: Path = ROOT,
    ) -> None:
        self.name = name
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        self._process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, health_url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(trust_env=False, timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited at startup:\n{self.output()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(health_url).status_code == 200:
                        return
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.output()}")

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read()[-4000:].decode(errors="replace")

    @property
    def pid(self) -> int:
        return self._process.pid

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown handlers run."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=5)
        self._log.close()

    def stop(self) -> None:
        if self._log.closed:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
        self._log.close()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(
    name: str,
    argv: Sequence[str],
    *,
    health_url: str,
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
    cwd: Path = ROOT,
) -> ServerProcess:
    """Start ``argv`` (cwd: the repository root) and wait until ``health_url`` answers 200."""
    server = ServerProcess(name, argv, env, cwd)
    try:
        server.wait_ready(health_url, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def start_upstream() -> tuple[Upstream, Cleanup]:
    port = free_port()
    api_key = "sk-bench-" + secrets.token_hex(8)
    server = start_server(
        "example upstream",
        [sys.executable, "examples/upstream.py", "--host", "127.0.0.1", "--port", str(port)],
        health_url=f"http://127.0.0.1:{port}/healthz",
        env={"EXAMPLE_UPSTREAM_KEY": api_key},
    )
    return Upstream(f"http://127.0.0.1:{port}", api_key), server.stop


def start_direct(upstream: Upstream) -> tuple[Arm, Cleanup]:
    return Arm("direct", upstream.url, upstream.key_headers), lambda: None


def _passthrough(name: str, client: str) -> ArmStarter:
    def start(upstream: Upstream) -> tuple[Arm, Cleanup]:
        port = free_port()
        argv = [sys.executable, "-m", "bench.passthrough", "--target", upstream.url]
        server = start_server(
            name,
            [*argv, "--client", client, "--host", "127.0.0.1", "--port", str(port)],
            health_url=f"http://127.0.0.1:{port}/healthz",
        )
        return Arm(name, f"http://127.0.0.1:{port}", upstream.key_headers), server.stop

    return start


# The floor uses the same upstream client as Bastion's gateway (httpx2); --httpx-floor adds the
# same proxy on httpx 0.28 for comparison.
start_passthrough = _passthrough("passthrough", "httpx2")
start_passthrough_httpx = _passthrough("passthrough-httpx", "httpx")


DEFAULT_ARMS: tuple[ArmStarter, ...] = (start_direct, start_passthrough)


@dataclass(frozen=True)
class Settings:
    rounds: int
    requests: int
    concurrency: tuple[int, ...]
    warmup: int
    round_seconds: float


@dataclass
class Series:
    """All measured rounds of one arm at one concurrency."""

    arm: str
    concurrency: int
    rounds: list[LoadResult] = field(default_factory=list)

    def median(self, metric: Callable[[LoadResult], float]) -> float:
        values = [v for v in map(metric, self.rounds) if not math.isnan(v)]
        return statistics.median(values) if values else math.nan

    @property
    def rps(self) -> tuple[float, float, float]:
        values = [r.rps for r in self.rounds]
        return statistics.median(values), min(values), max(values)

    @property
    def p50(self) -> float:
        return self.median(lambda r: r.percentile(50))

    @property
    def p99(self) -> float:
        return self.median(lambda r: r.percentile(99))

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.rounds)

    @property
    def first_error(self) -> str | None:
        return next((r.first_error for r in self.rounds if r.first_error), None)


async def measure(arms: Sequence[Arm], settings: Settings, console: Console) -> list[Series]:
    """Warm up, then run the rounds round-robin across arms, for each concurrency level."""
    series: list[Series] = []
    for concurrency in settings.concurrency:
        for arm in arms:
            await _load(arm, concurrency, settings.warmup, settings.round_seconds)
        by_arm = {arm.name: Series(arm.name, concurrency) for arm in arms}
        for round_index in range(settings.rounds):
            shift = round_index % len(arms)
            for arm in [*arms[shift:], *arms[:shift]]:
                result = await _load(arm, concurrency, settings.requests, settings.round_seconds)
                by_arm[arm.name].rounds.append(result)
                console.log(
                    f"c={concurrency} round {round_index + 1}/{settings.rounds} {arm.name:<22}"
                    f" {result.rps:8.0f} rps  p50 {result.percentile(50):6.2f} ms"
                    f"  p99 {result.percentile(99):6.2f} ms  errors {result.errors}"
                )
        series.extend(by_arm.values())
    return series


async def _load(arm: Arm, concurrency: int, requests: int, seconds: float) -> LoadResult:
    return await run_load(
        arm.url,
        make_headers=arm.make_headers,
        body=REQUEST_BODY,
        concurrency=concurrency,
        requests=requests,
        duration_limit=seconds,
    )


def _ms(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}"


def _added(value: float, base: float) -> str:
    return "—" if math.isnan(value) or math.isnan(base) else f"{value - base:+.2f}"


def render(series: Sequence[Series], settings: Settings) -> Table:
    table = Table(
        title=f"Gateway hop cost: {settings.rounds} rounds of {settings.requests} requests per arm",
        caption="latency: median over rounds of each round's percentile; "
        "added: vs the direct arm; ratio: rps / passthrough rps",
    )
    for column in ("conc", "arm", "rps median (min-max)", "p50 ms", "p99 ms"):
        arm = column == "arm"  # never cut: "bastion-audit-required" must stay readable
        table.add_column(column, justify="left" if arm else "right", no_wrap=arm)
    for column in ("added p50", "added p99", "rps ratio vs passthrough", "errors"):
        table.add_column(column, justify="right")
    for concurrency in settings.concurrency:
        level = {s.arm: s for s in series if s.concurrency == concurrency}
        direct, floor = level.get("direct"), level.get("passthrough")
        for s in level.values():
            rps, low, high = s.rps
            ratio = f"{rps / floor.rps[0]:.2f}" if floor and floor.rps[0] else "—"
            table.add_row(
                str(concurrency),
                s.arm,
                f"{rps:,.0f} ({low:,.0f}-{high:,.0f})",
                _ms(s.p50),
                _ms(s.p99),
                _added(s.p50, direct.p50) if direct else "—",
                _added(s.p99, direct.p99) if direct else "—",
                ratio,
                str(s.errors),
            )
        table.add_section()
    return table


def to_json(series: Sequence[Series], settings: Settings) -> dict[str, Any]:
    def nan_to_none(value: float) -> float | None:
        return None if math.isnan(value) else round(value, 4)

    return {
        "settings": settings.__dict__ | {"concurrency": list(settings.concurrency)},
        "request": {"path": REQUEST_PATH, "body": REQUEST_BODY.decode()},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "results": [
            {
                "arm": s.arm,
                "concurrency": s.concurrency,
                "rps_median": nan_to_none(s.rps[0]),
                "rps_min": nan_to_none(s.rps[1]),
                "rps_max": nan_to_none(s.rps[2]),
                "p50_ms": nan_to_none(s.p50),
                "p99_ms": nan_to_none(s.p99),
                "errors": s.errors,
                "first_error": s.first_error,
                "rounds": [
                    {
                        "rps": nan_to_none(r.rps),
                        "p50_ms": nan_to_none(r.percentile(50)),
                        "p99_ms": nan_to_none(r.percentile(99)),
                        "completed": r.completed,
                        "errors": r.errors,
                        "wall_seconds": nan_to_none(r.wall_seconds),
                    }
                    for r in s.rounds
                ],
            }
            for s in series
        ],
    }


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds per arm (5)")
    parser.add_argument(
        "--requests", type=int, default=1000, help="requests per round per arm (1000)"
    )
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 16], help="levels to run (1 16)"
    )
    parser.add_argument("--warmup", type=int, default=200, help="warmup requests per arm (200)")
    parser.add_argument(
        "--round-seconds", type=float, default=5.0, help="time limit of one round (5)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results here")
    parser.add_argument(
        "--httpx-floor",
        action="store_true",
        help="add a passthrough arm whose upstream client is httpx 0.28 instead of httpx2",
    )
    args = parser.parse_args(argv)
    numbers = [args.rounds, args.requests, args.warmup, *args.concurrency]
    if min(numbers) < 1 or args.round_seconds <= 0:
        parser.error("counts, concurrency levels and --round-seconds must be positive")
    settings = Settings(
        rounds=args.rounds,
        requests=args.requests,
        concurrency=tuple(args.concurrency),
        warmup=args.warmup,
        round_seconds=args.round_seconds,
    )
    return settings, args


class Interrupted(Exception):
    """SIGTERM arrived; raised so that ``main`` stops the servers on its way out."""


def _interrupt(_signum: int, _frame: object) -> None:
    raise Interrupted


async def _cancel_on_sigterm(main: Coroutine[Any, Any, list[Series]]) -> list[Series]:
    """While the loop runs, SIGTERM cancels the measurement cleanly (as Ctrl-C does)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await main
    except asyncio.CancelledError:
        raise Interrupted from None
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _interrupt)


def _run_async(main: Coroutine[Any, Any, list[Series]]) -> list[Series]:
    """Run on uvloop when it is installed (it comes with uvicorn[standard]), as the servers do."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_cancel_on_sigterm(main))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_cancel_on_sigterm(main))


def main(argv: Sequence[str] | None = None, extra_arms: Sequence[ArmStarter] | None = None) -> int:
    if extra_arms is None:
        from bench import bastion_arm  # imports bench.run: load it here

        extra_arms = (bastion_arm.start_bastion, bastion_arm.start_bastion_audit_required)
    settings, args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 130)
    starters = [*DEFAULT_ARMS, *extra_arms]
    if args.httpx_floor:
        starters.insert(2, start_passthrough_httpx)
    signal.signal(signal.SIGTERM, _interrupt)
    cleanups: list[Cleanup] = []
    try:
        upstream, stop_upstream = start_upstream()
        cleanups.append(stop_upstream)
        arms: list[Arm] = []
        for starter in starters:
            arm, cleanup = starter(upstream)
            cleanups.append(cleanup)
            arms.append(arm)
        console.log(f"arms: {', '.join(f'{a.name} → {a.url}' for a in arms)}")
        started = time.perf_counter()
        series = _run_async(measure(arms, settings, console))
        console.log(f"measured in {time.perf_counter() - started:.1f}s")
    except (KeyboardInterrupt, Interrupted):
        console.print("interrupted; servers stopped")
        return 130
    finally:
        for cleanup in reversed(cleanups):
            cleanup()
    console.print(render(series, settings))
    for s in series:
        if s.first_error:
            console.print(f"[yellow]{s.arm} c={s.concurrency}: first error: {s.first_error}")
    if args.json is not None:
        args.json.write_text(json.dumps(to_json(series, settings), indent=2) + "\n")
        console.print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

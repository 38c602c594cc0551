"""Measure how many audit events per second the recorder makes durable, on SQLite and PostgreSQL.

The real pieces, as ``create_app`` wires them: an ``AuditLog`` (keys from
``bastion.audit.keys.load_or_create``, a salted ``Committer``) over a migrated ``Store``, and an
``AuditRecorder`` whose ``run()`` task group-commits whatever has queued. ``--producers``
coroutines on the same event loop feed it ``request.decided`` events shaped like the gateway's,
in two modes:

    best-effort  each producer calls ``recorder.record(event)`` (no waiting), yielding to the
                 loop after every event, as a busy gateway would; the round ends when the writer
                 has stored every event offered. The writer is saturated, so this is its ceiling.
    commit       each producer awaits ``recorder.commit(event)`` (``audit: required``) in a loop;
                 at most one event per producer is in flight, so a batch holds at most
                 ``producers`` events. Commit latency is timed per event.

Each (mode, producers) pair is warmed up, then measured for ``--rounds`` rounds, the pairs taking
turns so slow drifts of the machine spread over all of them. A round offers ``--events`` events
and stops offering after ``--round-seconds`` (unstored events past a grace period count as
missing). Reported per pair: events/s (median over rounds, with min and max), commit p50 and p99
(median over rounds), and what the writer did: transactions, events per transaction, time per
transaction and how much of it was the COMMIT itself, and the share of the round's wall time the
writer spent inside a transaction. These come from two thin subclasses that only time and count
(``AuditLog.append``, ``Store.begin``); nothing in ``src`` changes.

Every backend is fresh: SQLite (WAL, ``synchronous=NORMAL``, as Bastion configures it) in a temp
dir, PostgreSQL in a new schema of the database at ``--postgres-url`` (dropped at the end). After
the rounds a checkpoint is signed and ``bastion.audit.verify.verify_log`` recomputes the whole
log; the output says whether it is intact and holds exactly the events the recorder wrote.

Run:  python -m bench.audit [--rounds 5] [--events 5000] [--producers 16 256] [--linger-ms 0]
                            [--backends sqlite postgres] [--json out.json]
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
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from bastion.audit import keys as audit_keys
from bastion.audit.commitment import Committer
from bastion.audit.events import Event, RequestDecided
from bastion.audit.log import AuditLog
from bastion.audit.note import Signer
from bastion.audit.recorder import AuditRecorder
from bastion.audit.verify import verify_log
from bastion.store import Store

POSTGRES_URL = os.environ.get(
    "BASTION_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MODES = ("best-effort", "commit")
GRACE_SECONDS = 10.0  # after the round's time limit, how long the writer may take to catch up


# -- what the writer did ---------------------------------------------------------------------------


@dataclass
class Meter:
    """Per transaction: events appended, seconds in ``append``, in the whole transaction, and in
    its COMMIT. Filled from the recorder's worker thread, read between rounds."""

    batches: list[int] = field(default_factory=list)
    append_s: list[float] = field(default_factory=list)
    transaction_s: list[float] = field(default_factory=list)
    commit_s: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> Meter:
        with self.lock:
            taken = Meter(self.batches, self.append_s, self.transaction_s, self.commit_s)
            self.batches, self.append_s, self.transaction_s, self.commit_s = [], [], [], []
            return taken


class MeteredLog(AuditLog):
    def __init__(self, meter: Meter, committer: Committer, signer: Signer, origin: str) -> None:
        super().__init__(committer, signer, origin)
        self.meter = meter

    def append(self, conn: sa.Connection, events: Sequence[Event]) -> list[int]:
        started = time.perf_counter()
        indices = super().append(conn, events)
        with self.meter.lock:
            self.meter.batches.append(len(events))
            self.meter.append_s.append(time.perf_counter() - started)
        return indices


class MeteredStore(Store):
    def __init__(self, url: str, meter: Meter) -> None:
        super().__init__(url)
        self.meter = meter

    @contextlib.contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        started = time.perf_counter()
        with super().begin() as conn:
            yield conn
            body_done = time.perf_counter()
        done = time.perf_counter()
        with self.meter.lock:
            self.meter.transaction_s.append(done - started)
            self.meter.commit_s.append(done - body_done)


# -- the events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    principal: str
    family: str
    jkt: str


def make_callers(count: int) -> list[Caller]:
    return [
        Caller(f"svc-{i:03d}", "fam_" + secrets.token_hex(8), secrets.token_urlsafe(32))
        for i in range(count)
    ]


def request_event(caller: Caller, n: int) -> RequestDecided:
    """A completed, allowed chat request, as the gateway records it (fresh id and time)."""
    return RequestDecided(
        principal=caller.principal,
        org="lab",
        model="example-gpt",
        compartment="general",
        route="POST /v1/chat/completions",
        allowed=True,
        reasons=("granted",),
        policies=("permit-granted-compartment",),
        epoch=42,
        source_ip=f"10.0.{n % 7}.{n % 251}",
        family=caller.family,
        jkt=caller.jkt,
        status=200,
        outcome="completed",
        tokens_in=12 + n % 40,
        tokens_out=32,
        latency_ms=round(1.5 + (n % 97) / 10, 3),
    )


# -- one round -------------------------------------------------------------------------------------


@dataclass
class Round:
    offered: int
    stored: int
    wall_seconds: float
    latencies_ms: list[float]
    writer: Meter

    @property
    def rate(self) -> float:
        return self.stored / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return math.nan
        ordered = sorted(self.latencies_ms)
        return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


@dataclass
class Bench:
    recorder: AuditRecorder
    meter: Meter
    callers: list[Caller]
    issued: int = 0

    def next_event(self) -> RequestDecided:
        self.issued += 1
        return request_event(self.callers[self.issued % len(self.callers)], self.issued)

    async def round(self, mode: str, producers: int, events: int, seconds: float) -> Round:
        self.meter.take()
        before = self.recorder.written
        latencies: list[float] = []
        offered = 0
        started = time.perf_counter()
        deadline = started + seconds

        async def best_effort() -> None:
            nonlocal offered
            while offered < events and time.perf_counter() < deadline:
                offered += 1
                self.recorder.record(self.next_event())
                await asyncio.sleep(0)

        async def commit() -> None:
            nonlocal offered
            while offered < events and time.perf_counter() < deadline:
                offered += 1
                event = self.next_event()
                begin = time.perf_counter()
                await self.recorder.commit(event)
                latencies.append((time.perf_counter() - begin) * 1000.0)

        producer = best_effort if mode == "best-effort" else commit
        with contextlib.suppress(TimeoutError):  # a stuck writer: what it missed shows
            async with asyncio.timeout(seconds + GRACE_SECONDS):
                await asyncio.gather(*(producer() for _ in range(producers)))
        give_up = time.perf_counter() + GRACE_SECONDS
        # The recorder offers nothing to wait on: poll its counter (bounded in time).
        while self.recorder.written - before < offered:
            if time.perf_counter() > give_up:
                break
            await asyncio.sleep(0.001)
        wall = time.perf_counter() - started
        return Round(offered, self.recorder.written - before, wall, latencies, self.meter.take())


# -- one backend -----------------------------------------------------------------------------------


@dataclass
class Series:
    backend: str
    mode: str
    producers: int
    rounds: list[Round] = field(default_factory=list)

    @property
    def rates(self) -> tuple[float, float, float]:
        values = [r.rate for r in self.rounds]
        return statistics.median(values), min(values), max(values)

    def median(self, metric: Callable[[Round], float]) -> float:
        values = [v for v in map(metric, self.rounds) if not math.isnan(v)]
        return statistics.median(values) if values else math.nan

    @property
    def missing(self) -> int:
        return sum(r.offered - r.stored for r in self.rounds)

    def writer(self) -> Meter:
        merged = Meter()
        for r in self.rounds:
            merged.batches += r.writer.batches
            merged.append_s += r.writer.append_s
            merged.transaction_s += r.writer.transaction_s
            merged.commit_s += r.writer.commit_s
        return merged

    @property
    def busy(self) -> float:
        """Median share of a round's wall time the writer spent inside a transaction."""
        return self.median(lambda r: sum(r.writer.transaction_s) / r.wall_seconds)


@dataclass
class Verdict:
    backend: str
    ok: bool
    size: int
    written: int
    dropped: int
    checkpoints: int
    problems: list[str]
    seconds: float


@dataclass(frozen=True)
class Settings:
    rounds: int
    events: int
    producers: tuple[int, ...]
    round_seconds: float
    warmup: int
    backends: tuple[str, ...]
    linger_ms: int


Results = tuple[list[Series], list[Verdict]]


@contextlib.contextmanager
def database(backend: str, postgres_url: str, workdir: Path) -> Iterator[str]:
    """A fresh database URL: a SQLite file under ``workdir``, or a new PostgreSQL schema."""
    if backend == "sqlite":
        yield f"sqlite:///{workdir / 'bastion.db'}"
        return
    schema = "bench_" + secrets.token_hex(6)
    admin = sa.create_engine(postgres_url)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        try:
            yield f"{postgres_url}?options=-csearch_path%3D{schema}"
        finally:
            with admin.begin() as conn:
                conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    finally:
        admin.dispose()


@contextlib.asynccontextmanager
async def running(recorder: AuditRecorder) -> AsyncIterator[None]:
    task = asyncio.create_task(recorder.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await recorder.flush()


async def measure_backend(
    backend: str, url: str, workdir: Path, settings: Settings, console: Console
) -> tuple[list[Series], Verdict]:
    meter = Meter()
    store = MeteredStore(url, meter)
    try:
        store.migrate()
        keys = audit_keys.load_or_create(workdir / "state")
        log = MeteredLog(meter, Committer(keys.salt), keys.signer, keys.origin)
        recorder = AuditRecorder(store, log, linger=settings.linger_ms / 1000)
        bench = Bench(recorder, meter, make_callers(50))
        pairs = [(mode, n) for n in settings.producers for mode in MODES]
        series = {pair: Series(backend, *pair) for pair in pairs}
        async with running(recorder):
            for mode, n in pairs:
                await bench.round(mode, n, settings.warmup, settings.round_seconds)
            for index in range(settings.rounds):
                shift = index % len(pairs)
                for mode, n in [*pairs[shift:], *pairs[:shift]]:
                    result = await bench.round(mode, n, settings.events, settings.round_seconds)
                    series[mode, n].rounds.append(result)
                    console.log(
                        f"{backend:<8} round {index + 1}/{settings.rounds} {mode:<11} "
                        f"producers {n:>4}: {result.rate:8,.0f} events/s  "
                        f"{len(result.writer.batches):>5} tx  p99 {result.percentile(99):7.2f} ms"
                    )
        return list(series.values()), verify(backend, store, log, recorder)
    finally:
        store.close()


def verify(backend: str, store: Store, log: AuditLog, recorder: AuditRecorder) -> Verdict:
    started = time.perf_counter()
    with store.begin() as conn:
        log.checkpoint(conn)
    with store.read() as conn:
        verdict = verify_log(conn, log)
    return Verdict(
        backend=backend,
        ok=verdict.ok and verdict.size == recorder.written and recorder.dropped == 0,
        size=verdict.size,
        written=recorder.written,
        dropped=recorder.dropped,
        checkpoints=verdict.checkpoints,
        problems=verdict.problems,
        seconds=time.perf_counter() - started,
    )


async def measure(settings: Settings, postgres_url: str, console: Console) -> Results:
    series: list[Series] = []
    verdicts: list[Verdict] = []
    for backend in settings.backends:
        workdir = Path(tempfile.mkdtemp(prefix=f"bastion-audit-bench-{backend}-"))
        try:
            with database(backend, postgres_url, workdir) as url:
                found, verdict = await measure_backend(backend, url, workdir, settings, console)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        series += found
        verdicts.append(verdict)
        console.log(
            f"{backend}: verified {verdict.size:,} entries in {verdict.seconds:.1f}s: "
            + ("intact" if verdict.ok else "NOT INTACT")
        )
    return series, verdicts


# -- output ----------------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}"


def _median_ms(values: Sequence[float]) -> float:
    return statistics.median(values) * 1000 if values else math.nan


def render(series: Sequence[Series], settings: Settings) -> Table:
    table = Table(
        title=f"Audit log append throughput: {settings.rounds} rounds of up to "
        f"{settings.events:,} events per row, recorder linger {settings.linger_ms} ms",
        caption="events/s: stored events / wall time of the round; p50/p99: commit latency "
        "(median over rounds); tx: transactions per round (median); events/tx: mean, p50, max; "
        "tx ms: median time in one transaction, of which COMMIT; busy: share of the wall time "
        "the writer spent in a transaction",
    )
    for column in ("backend", "mode", "producers", "events/s median (min-max)", "p50 ms"):
        table.add_column(column, justify="left" if column in ("backend", "mode") else "right")
    for column in ("p99 ms", "tx", "events/tx mean (p50, max)", "tx ms (commit)", "busy"):
        table.add_column(column, justify="right")
    table.add_column("missing", justify="right")
    for backend in settings.backends:
        for s in (s for s in series if s.backend == backend):
            rate, low, high = s.rates
            writer = s.writer()
            batches = sorted(writer.batches) or [0]
            table.add_row(
                backend,
                s.mode,
                str(s.producers),
                f"{rate:,.0f} ({low:,.0f}-{high:,.0f})",
                _ms(s.median(lambda r: r.percentile(50))),
                _ms(s.median(lambda r: r.percentile(99))),
                f"{s.median(lambda r: len(r.writer.batches)):,.0f}",
                f"{statistics.mean(batches):,.1f} ({statistics.median(batches):,.0f}, "
                f"{batches[-1]:,})",
                f"{_ms(_median_ms(writer.transaction_s))} ({_ms(_median_ms(writer.commit_s))})",
                f"{s.busy:.0%}",
                str(s.missing),
            )
        table.add_section()
    return table


def verdict_line(verdict: Verdict) -> str:
    if verdict.ok:
        return (
            f"[green]{verdict.backend}: audit log verified intact: {verdict.size:,} entries "
            f"(all {verdict.written:,} written, none dropped), {verdict.checkpoints} signed "
            f"checkpoint(s), recomputed in {verdict.seconds:.1f}s"
        )
    problems = "; ".join(verdict.problems[:5]) or "entry count mismatch"
    return (
        f"[red]{verdict.backend}: audit log NOT intact: {verdict.size:,} entries, "
        f"{verdict.written:,} written, {verdict.dropped:,} dropped: {problems}"
    )


def to_json(
    series: Sequence[Series], verdicts: Sequence[Verdict], settings: Settings
) -> dict[str, Any]:
    def number(value: float) -> float | None:
        return None if math.isnan(value) else round(value, 4)

    def writer(meter: Meter) -> dict[str, Any]:
        return {
            "transactions": len(meter.batches),
            "events_per_transaction": meter.batches,
            "transaction_ms_median": number(_median_ms(meter.transaction_s)),
            "append_ms_median": number(_median_ms(meter.append_s)),
            "commit_ms_median": number(_median_ms(meter.commit_s)),
            "seconds_in_transactions": number(sum(meter.transaction_s)),
        }

    return {
        "settings": settings.__dict__,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "results": [
            {
                "backend": s.backend,
                "mode": s.mode,
                "producers": s.producers,
                "events_per_second_median": number(s.rates[0]),
                "events_per_second_min": number(s.rates[1]),
                "events_per_second_max": number(s.rates[2]),
                "commit_p50_ms": number(s.median(lambda r: r.percentile(50))),
                "commit_p99_ms": number(s.median(lambda r: r.percentile(99))),
                "missing": s.missing,
                "rounds": [
                    {
                        "offered": r.offered,
                        "stored": r.stored,
                        "wall_seconds": number(r.wall_seconds),
                        "events_per_second": number(r.rate),
                        "commit_p50_ms": number(r.percentile(50)),
                        "commit_p99_ms": number(r.percentile(99)),
                        "writer": writer(r.writer),
                    }
                    for r in s.rounds
                ],
            }
            for s in series
        ],
        "verification": [v.__dict__ for v in verdicts],
    }


# -- command line ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.audit", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds per row (5)")
    parser.add_argument("--events", type=int, default=5_000, help="events per round (5000)")
    parser.add_argument(
        "--producers", type=int, nargs="+", default=[16, 256], help="producer counts (16 256)"
    )
    parser.add_argument("--warmup", type=int, default=1000, help="warmup events per row (1000)")
    parser.add_argument(
        "--round-seconds", type=float, default=5.0, help="time limit of one round (5)"
    )
    parser.add_argument(
        "--backends", nargs="+", choices=("sqlite", "postgres"), default=["sqlite", "postgres"]
    )
    parser.add_argument(
        "--linger-ms",
        type=int,
        default=0,
        help="the recorder's linger (BASTION_AUDIT_LINGER_MS; AuditRecorder's default: 0)",
    )
    parser.add_argument("--postgres-url", default=POSTGRES_URL, help="database for the schema")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results here")
    args = parser.parse_args(argv)
    if min(args.rounds, args.events, args.warmup, *args.producers) < 1 or args.round_seconds <= 0:
        parser.error("counts and --round-seconds must be positive")
    if not 0 <= args.linger_ms <= 1000:
        parser.error("--linger-ms must be between 0 and 1000")
    settings = Settings(
        rounds=args.rounds,
        events=args.events,
        producers=tuple(args.producers),
        round_seconds=args.round_seconds,
        warmup=args.warmup,
        linger_ms=args.linger_ms,
        backends=tuple(dict.fromkeys(args.backends)),
    )
    return settings, args


async def _cancel_on_sigterm(main: Coroutine[Any, Any, Results]) -> Results:
    """SIGTERM cancels the run as Ctrl-C does, so the schema and temp dir are still removed."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await main
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _run(settings: Settings, postgres_url: str, console: Console) -> Results:
    """On uvloop when it is installed, as the server runs."""
    main = _cancel_on_sigterm(measure(settings, postgres_url, console))
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def main(argv: Sequence[str] | None = None) -> int:
    settings, args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 150)
    started = time.perf_counter()
    try:
        series, verdicts = _run(settings, args.postgres_url, console)
    except (KeyboardInterrupt, asyncio.CancelledError):
        console.print("interrupted; databases removed")
        return 130
    except sa.exc.OperationalError as exc:
        console.print(f"[red]cannot reach the database (see --postgres-url, --backends): {exc}")
        return 2
    console.log(f"measured in {time.perf_counter() - started:.1f}s")
    console.print(render(series, settings))
    for verdict in verdicts:
        console.print(verdict_line(verdict))
    if args.json is not None:
        args.json.write_text(json.dumps(to_json(series, verdicts, settings), indent=2) + "\n")
        console.print(f"results written to {args.json}")
    return 0 if all(v.ok for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())

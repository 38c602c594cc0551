"""Measure what one access decision costs as the number of principals and grants grows.

Two snapshots are built with the real ``bastion.policy.snapshot.build_snapshot`` from a synthetic,
seeded ``BastionConfig`` and store rows:

    small   10 principals, 10 grants (standing org and principal grants in the config, and
            time-bound grant rows), 3 compartments, 6 models
    large   10,000 principals and 50,000 grants by default (``--principals``, ``--grants``), the
            same mix, spread over 200 compartments, 400 models and 50 orgs (10 of them vendors
            with a sponsor, contract, networks, seat limit, ceiling and working hours)

Each size answers ``--decisions`` distinct (principal, model, source address) questions per
round, half of them about a compartment the principal holds a grant to, half drawn at random.
One decision is exactly the gateway's hot path after routing: ``policy.facts.request_facts``,
then ``policy.authorize.check_locks`` and ``policy.authorize.authorize``. The snapshot's decision
memo (``snapshot.decisions``) is cleared before every decision, outside the timed region, so
Cedar evaluates every question instead of answering from the memo; the output counts how many
decisions did reach Cedar (the rest were denied by a lock first).

The sizes take turns for ``--rounds`` rounds after a warm-up. Reported per size: per-decision
median, p90 and p99 in µs (the median over rounds, with the spread of the per-round medians),
the share allowed, and the snapshot build time (median of ``--builds`` builds); then the ratio
large/small of each percentile. Everything is seeded (``--seed``) and bounded: the default run
takes well under a minute.

Run:  python -m bench.decisions [--rounds 5] [--decisions 5000] [--principals 10000]
                                [--grants 50000] [--seed 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bastion.config.models import BastionConfig
from bastion.policy.authorize import Caller, authorize, check_locks
from bastion.policy.facts import request_facts
from bastion.policy.snapshot import Snapshot, build_snapshot
from bastion.store.access import GrantRow
from bastion.store.locks import LockRow
from bastion.store.principals import PrincipalRow

NOW = 1_750_000_000.0  # a fixed clock: contract windows, grant expiry and working hours are stable
LEVELS = ("open", "internal", "restricted", "critical")
ZONES = ("UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo", "Australia/Sydney")
NETWORKS = ("10.0.0.0/8", "192.0.2.0/24", "198.51.100.0/24")
SOURCES = ("10.1.2.3", "10.200.0.9", "192.0.2.44", "198.51.100.7", "203.0.113.5")


# -- the synthetic world ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """How big a world to build."""

    name: str
    principals: int
    grants: int
    compartments: int
    models_per_compartment: int
    orgs: int
    vendors: int
    locks: int


@dataclass
class World:
    """A config and the store rows a snapshot is built from, and the questions to ask it."""

    shape: Shape
    config: BastionConfig
    principals: list[PrincipalRow]
    grants: list[GrantRow]
    locks: list[LockRow]
    granted: list[tuple[str, str]]  # (principal, compartment) pairs some grant covers
    counts: dict[str, int] = field(default_factory=dict)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(NOW + seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _orgs(shape: Shape, rng: random.Random, sponsor: str) -> dict[str, Any]:
    orgs: dict[str, Any] = {"lab": {"kind": "internal"}}
    for i in range(1, shape.orgs - shape.vendors):
        orgs[f"lab-{i:02d}"] = {"kind": "internal"}
    for i in range(shape.vendors):
        orgs[f"vendor-{i:02d}"] = {
            "kind": "vendor",
            "sponsor": sponsor,
            "contract": {"start": _iso(-86400 * 30), "end": _iso(86400 * rng.choice((-1, 90)))},
            "allowed_networks": [rng.choice(NETWORKS)],
            "seat_limit": max(1, shape.principals // max(1, shape.orgs) * 2),
            "ceiling": rng.choice(LEVELS[1:3]),
            "working_hours": {"timezone": rng.choice(ZONES), "start": "08:00", "end": "18:00"},
        }
    return orgs


def _grant_split(shape: Shape) -> tuple[int, int, int]:
    """How many grants are org grants, standing principal grants and time-bound rows."""
    org_grants = min(shape.compartments, max(1, shape.grants // 100))
    standing = (shape.grants - org_grants) // 2
    return org_grants, standing, shape.grants - org_grants - standing


class _Builder:
    """Draws one world from a seeded generator; each method adds one kind of thing."""

    def __init__(self, shape: Shape, seed: int) -> None:
        self.shape = shape
        self.rng = random.Random(f"{seed}-{shape.name}")
        self.names = [f"p{i:05d}" for i in range(shape.principals)]
        self.sponsor = self.names[0]
        self.orgs = _orgs(shape, self.rng, self.sponsor)
        self.vendors = {name for name, org in self.orgs.items() if org["kind"] == "vendor"}
        self.org_of = {name: self.rng.choice(list(self.orgs)) for name in self.names}
        self.org_of[self.sponsor] = "lab"
        self.compartments: dict[str, dict[str, Any]] = {
            f"c{i:03d}": {
                "level": LEVELS[i % len(LEVELS)],
                "grants": {"orgs": [], "principals": []},
                **({"allowed_networks": [self.rng.choice(NETWORKS)]} if i % 5 == 0 else {}),
            }
            for i in range(shape.compartments)
        }
        self.compartment_names = list(self.compartments)
        self.granted: set[tuple[str, str]] = set()

    def _critical(self, compartment: str) -> bool:
        return bool(self.compartments[compartment]["level"] == "critical")

    def org_grants(self, count: int) -> None:
        """Standing grants to whole orgs (never a vendor's to a critical compartment)."""
        internal = [o for o in self.orgs if o not in self.vendors]
        for i in range(count):
            compartment = self.compartment_names[i % len(self.compartment_names)]
            org = self.rng.choice(internal if self._critical(compartment) else list(self.orgs))
            self.compartments[compartment]["grants"]["orgs"].append(org)
            self.granted.update((p, compartment) for p in self.names if self.org_of[p] == org)

    def principal_grants(self, count: int) -> None:
        """Standing grants to single principals, distinct pairs."""
        pairs: set[tuple[str, str]] = set()
        while len(pairs) < count:
            pair = (self.rng.choice(self.names), self.rng.choice(self.compartment_names))
            if not (self._critical(pair[1]) and self.org_of[pair[0]] in self.vendors):
                pairs.add(pair)
        for principal, compartment in sorted(pairs):
            self.compartments[compartment]["grants"]["principals"].append(principal)
        self.granted |= pairs

    def timed_grants(self, count: int) -> list[GrantRow]:
        """Time-bound grant rows: a third expired, one in twenty revoked."""
        rows = []
        for i in range(count):
            principal = self.rng.choice(self.names)
            compartment = self.rng.choice(self.compartment_names)
            expires = NOW + self.rng.choice((-3600, 3600, 86400))
            revoked = NOW - 60 if i % 20 == 0 else None
            rows.append(
                GrantRow(f"g{i}", principal, compartment, None, NOW - 7200, expires, revoked, None)
            )
            if expires > NOW and revoked is None:
                self.granted.add((principal, compartment))
        return rows

    def config(self, declared: Sequence[str]) -> BastionConfig:
        models = [
            {"name": f"{c}-m{j}", "upstream": "up", "compartment": c}
            for c in self.compartments
            for j in range(self.shape.models_per_compartment)
        ]
        return BastionConfig.model_validate(
            {
                "version": 1,
                "upstreams": {"up": {"base_url": "http://upstream.test/v1", "api": "openai"}},
                "models": models,
                "compartments": self.compartments,
                "orgs": self.orgs,
                "principals": {p: {"kind": "user", "org": self.org_of[p]} for p in declared},
            }
        )

    def locks(self) -> list[LockRow]:
        """Locks on principals (rarely asked about) and on retired device keys: check_locks
        walks every target in both sizes, and few decisions end at a lock."""
        targets = [
            ("principal", self.rng.choice(self.names)) if i % 2 else ("key", f"jkt-retired-{i}")
            for i in range(self.shape.locks)
        ]
        return [
            LockRow(f"lk{i}", kind, target, "bench", "bench", NOW - 60, None, None, None)
            for i, (kind, target) in enumerate(targets)
        ]


def build_world(shape: Shape, seed: int) -> World:
    draw = _Builder(shape, seed)
    org_grants, standing, timed = _grant_split(shape)
    draw.org_grants(org_grants)
    draw.principal_grants(standing)
    rows = draw.timed_grants(timed)
    # An eighth of the principals are declared in the config, the rest come from the store.
    declared = draw.names[: max(1, shape.principals // 8)]
    config = draw.config(declared)
    store = [
        PrincipalRow(p, "service", draw.org_of[p], "admin", i % 97 == 5, NOW - 86400 - i)
        for i, p in enumerate(draw.names[len(declared) :], start=len(declared))
    ]
    locks = draw.locks()
    counts = {
        "principals": shape.principals,
        "grants": org_grants + standing + timed,
        "org grants": org_grants,
        "standing principal grants": standing,
        "time-bound grant rows": timed,
        "compartments": shape.compartments,
        "models": len(config.models),
        "orgs": len(config.orgs),
        "locks": len(locks),
    }
    return World(shape, config, store, rows, locks, sorted(draw.granted), counts)


def snapshot_of(world: World) -> Snapshot:
    return build_snapshot(
        epoch=1,
        config=world.config,
        principals=world.principals,
        device_keys=(),
        locks=world.locks,
        env={},
        grants=world.grants,
    )


# -- the questions and their timing --------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    caller: Caller
    model: str
    source_ip: str


def questions(world: World, snapshot: Snapshot, count: int, seed: int) -> list[Question]:
    """``count`` questions, distinct while the world has that many (principal, model) pairs."""
    rng = random.Random(f"{seed}-{world.shape.name}-questions")
    by_compartment: dict[str, list[str]] = {}
    for route in snapshot.models.values():
        by_compartment.setdefault(route.compartment, []).append(route.name)
    principals = sorted(snapshot.principals)
    models = sorted(snapshot.models)
    seen: set[tuple[str, str]] = set()
    out: list[Question] = []
    repeats = 0
    while len(out) < count:
        if len(out) % 2 == 0 and world.granted:
            principal, compartment = rng.choice(world.granted)
            model = rng.choice(by_compartment[compartment])
        else:
            principal, model = rng.choice(principals), rng.choice(models)
        if (principal, model) in seen:
            repeats += 1
            if repeats > 1_000:  # a small world ran out of new pairs: go round them again
                seen.clear()
            continue
        repeats = 0
        seen.add((principal, model))
        org = snapshot.principals[principal].org
        caller = Caller(principal, org, f"jkt-{principal}", f"fam-{principal}")
        out.append(Question(caller, model, rng.choice(SOURCES)))
    return out


@dataclass
class Run:
    """One round of one size: nanoseconds per decision, how many allowed and reached Cedar."""

    nanos: list[int]
    allowed: int
    evaluated: int

    def percentile(self, q: float) -> float:
        ordered = sorted(self.nanos)
        return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1] / 1000.0


def decide_all(snapshot: Snapshot, asked: Sequence[Question]) -> Run:
    """Time each decision alone; the memo is emptied before each one, off the clock."""
    nanos: list[int] = []
    allowed = evaluated = 0
    memo = snapshot.decisions
    clock = time.perf_counter_ns
    for question in asked:
        memo.clear()
        started = clock()
        compartment = snapshot.models[question.model].compartment
        facts = request_facts(
            snapshot, question.caller, compartment, question.source_ip, "openai", NOW
        )
        decision = check_locks(snapshot, question.caller, compartment, NOW) or authorize(
            snapshot, question.caller, question.model, facts
        )
        nanos.append(clock() - started)
        allowed += decision.allowed
        evaluated += len(memo)
    return Run(nanos, allowed, evaluated)


# -- one size --------------------------------------------------------------------------------------


@dataclass
class Size:
    world: World
    snapshot: Snapshot
    build_seconds: list[float]
    entities: int
    asked: list[Question]
    runs: list[Run] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.world.shape.name

    def median(self, q: float) -> float:
        return statistics.median(r.percentile(q) for r in self.runs)

    def spread(self, q: float) -> tuple[float, float]:
        values = [r.percentile(q) for r in self.runs]
        return min(values), max(values)


def prepare(shape: Shape, settings: Settings, console: Console) -> Size:
    world = build_world(shape, settings.seed)
    builds: list[float] = []
    snapshot = None
    for _ in range(settings.builds):
        gc.collect()
        started = time.perf_counter()
        snapshot = snapshot_of(world)
        builds.append(time.perf_counter() - started)
    assert snapshot is not None
    asked = questions(world, snapshot, settings.decisions, settings.seed)
    size = Size(world, snapshot, builds, len(snapshot.cedar.entities), asked)
    console.log(
        f"{shape.name}: {world.counts['principals']:,} principals, "
        f"{world.counts['grants']:,} grants, {size.entities:,} Cedar entities; "
        f"snapshot built in {statistics.median(builds):.3f}s (median of {len(builds)})"
    )
    return size


@dataclass(frozen=True)
class Settings:
    rounds: int
    decisions: int
    warmup: int
    builds: int
    principals: int
    grants: int
    seed: int


def shapes(settings: Settings) -> tuple[Shape, Shape]:
    small = Shape("small", 10, 10, 3, 2, 3, 1, 1)
    large = Shape("large", settings.principals, settings.grants, 200, 2, 50, 10, 50)
    return small, large


def measure(settings: Settings, console: Console) -> list[Size]:
    sizes = [prepare(shape, settings, console) for shape in shapes(settings)]
    for size in sizes:
        decide_all(size.snapshot, size.asked[: settings.warmup])
    for index in range(settings.rounds):
        order = sizes if index % 2 == 0 else sizes[::-1]
        for size in order:
            run = decide_all(size.snapshot, size.asked)
            size.runs.append(run)
            console.log(
                f"round {index + 1}/{settings.rounds} {size.name:<5}: "
                f"median {run.percentile(50):7.1f} µs  p99 {run.percentile(99):7.1f} µs"
            )
    return sizes


# -- output ----------------------------------------------------------------------------------------

MEMO_NOTE = (
    "memo: snapshot.decisions cleared before every decision (off the clock), so Cedar evaluates "
    "each one"
)


def render(sizes: Sequence[Size], settings: Settings) -> Table:
    table = Table(
        title=f"Decision cost: {settings.rounds} rounds of {settings.decisions:,} distinct "
        "questions per size (request_facts + check_locks + authorize)",
        caption=MEMO_NOTE + "; µs per decision, median over rounds (min-max of the rounds)",
    )
    for column in ("size", "principals", "grants", "entities", "build s"):
        table.add_column(column, justify="left" if column == "size" else "right")
    for column in ("median µs", "p90 µs", "p99 µs", "allowed", "reached Cedar"):
        table.add_column(column, justify="right")
    for size in sizes:
        total = sum(len(r.nanos) for r in size.runs)
        cells = []
        for q in (50, 90, 99):
            low, high = size.spread(q)
            cells.append(f"{size.median(q):.1f} ({low:.1f}-{high:.1f})")
        table.add_row(
            size.name,
            f"{size.world.counts['principals']:,}",
            f"{size.world.counts['grants']:,}",
            f"{size.entities:,}",
            f"{statistics.median(size.build_seconds):.3f}",
            *cells,
            f"{sum(r.allowed for r in size.runs) / total:.0%}",
            f"{sum(r.evaluated for r in size.runs) / total:.0%}",
        )
    return table


def ratios(sizes: Sequence[Size]) -> dict[str, float]:
    small, large = sizes
    return {f"p{q}": large.median(q) / small.median(q) for q in (50, 90, 99)}


def to_json(sizes: Sequence[Size], settings: Settings) -> dict[str, Any]:
    return {
        "settings": settings.__dict__,
        "memo": MEMO_NOTE,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "sizes": [
            {
                "size": size.name,
                "counts": size.world.counts,
                "entities": size.entities,
                "build_seconds": size.build_seconds,
                "rounds": [
                    {
                        "median_us": r.percentile(50),
                        "p90_us": r.percentile(90),
                        "p99_us": r.percentile(99),
                        "allowed": r.allowed,
                        "reached_cedar": r.evaluated,
                        "decisions": len(r.nanos),
                    }
                    for r in size.runs
                ],
            }
            for size in sizes
        ],
        "ratio_large_over_small": ratios(sizes),
    }


# -- command line ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.decisions", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds per size (5)")
    parser.add_argument(
        "--decisions", type=int, default=5_000, help="distinct questions per round (5000)"
    )
    parser.add_argument("--warmup", type=int, default=1_000, help="warm-up decisions (1000)")
    parser.add_argument("--builds", type=int, default=3, help="snapshot builds per size (3)")
    parser.add_argument(
        "--principals", type=int, default=10_000, help="principals, large size (10000)"
    )
    parser.add_argument("--grants", type=int, default=50_000, help="grants, large size (50000)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (7)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results here")
    args = parser.parse_args(argv)
    if min(args.rounds, args.decisions, args.warmup, args.builds) < 1:
        parser.error("--rounds, --decisions, --warmup and --builds must be positive")
    if not 100 <= args.principals <= 100_000 or not 1_000 <= args.grants <= 500_000:
        parser.error("--principals must be 100-100000 and --grants 1000-500000")
    settings = Settings(
        rounds=args.rounds,
        decisions=args.decisions,
        warmup=min(args.warmup, args.decisions),
        builds=args.builds,
        principals=args.principals,
        grants=args.grants,
        seed=args.seed,
    )
    return settings, args


def main(argv: Sequence[str] | None = None) -> int:
    settings, args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 150)
    started = time.perf_counter()
    try:
        sizes = measure(settings, console)
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    console.log(f"measured in {time.perf_counter() - started:.1f}s")
    console.print(render(sizes, settings))
    found = ratios(sizes)
    console.print(
        "large/small: "
        + ", ".join(f"{name} {value:.2f}x" for name, value in found.items())
        + ("  (median within 1.5x)" if found["p50"] <= 1.5 else "  [red](median over 1.5x)")
    )
    if args.json is not None:
        args.json.write_text(json.dumps(to_json(sizes, settings), indent=2) + "\n")
        console.print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

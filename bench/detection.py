"""Detection engine throughput: events per second through every shipped detector on one core,
and the memory its state holds for 10,000 principals.

A seeded stream of synthetic audit events (mostly allowed requests, some denials, token refreshes
and admin actions; 10,000 principals in 50 orgs, realistic networks, clients and volumes, event
time advancing ~20 ms per event so windows and baselines turn over) goes through
``DetectionEngine.process`` — the same call the detection service makes for every audit event —
with ``Observation.from_record`` included (the service parses each stored record). Reported: events
per second (median and spread over rounds), findings raised, the state entries held and evicted,
and the peak Python heap (tracemalloc) for the engine's state after the run.

``--vendor-share`` (default 0.3) sets the share of principals in vendor orgs: contractor traffic
to sensitive models is the most expensive for D7, so ``--vendor-share 1`` is the worst case.

Run:  python -m bench.detection [--events 100000] [--principals 10000] [--rounds 3] [--seed 3]
                                [--vendor-share 0.3]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
import tracemalloc
from collections.abc import Sized
from typing import Any

from rich.console import Console
from rich.table import Table

from bastion.config.models import BastionConfig
from bastion.detect.detector import Context
from bastion.detect.detectors import default_detectors
from bastion.detect.engine import DetectionEngine
from bastion.detect.observation import Observation
from bastion.detect.risk import RiskBoard

START = 1_750_000_000.0
CLIENTS = ("OpenAI/Python 3.57.0", "Anthropic/Python 2.14.0", "OpenAI/Python 3.56.1")


def config(orgs: int) -> BastionConfig:
    org_map: dict[str, Any] = {"lab": {"kind": "internal"}}
    for n in range(1, orgs):
        org_map[f"v{n}"] = {"kind": "vendor"}
    compartments = {
        "general": {"level": "internal"},
        "secret": {"level": "restricted"},
        "frontier": {"level": "critical"},
    }
    return BastionConfig.model_validate(
        {"version": 1, "orgs": org_map, "compartments": compartments}
    )


def records(
    count: int, principals: int, orgs: int, seed: int, vendor_share: float = 0.3
) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    models = [("m-general", "general"), ("m-secret", "secret"), ("m-frontier", "frontier")]
    for n in range(count):
        p = rng.randrange(principals)
        vendor = (p % 100) < vendor_share * 100  # a stable share of principals are contractors
        org = f"v{1 + p % (orgs - 1)}" if vendor else "lab"
        time_ = START + n * 0.02
        base = {
            "id": f"ev_{n}",
            "time": time_,
            "principal": f"p{p}",
            "org": org,
            "source_ip": f"10.{p % 250}.{(p // 250) % 250}.{rng.randrange(1, 250)}",
            "family": f"fam_{p}",
            "jkt": f"k{p}",
            "actor": f"p{p}",
        }
        kind = rng.random()
        if kind < 0.9:
            model, compartment = models[rng.randrange(3)]
            allowed = rng.random() < 0.95
            out.append(
                {
                    **base,
                    "name": "request.decided",
                    "model": model,
                    "compartment": compartment,
                    "allowed": allowed,
                    "reasons": ["granted"] if allowed else ["not_granted"],
                    "status": 200 if allowed else 403,
                    "outcome": "completed" if allowed else "denied",
                    "route": "/v1/chat/completions",
                    "tokens_in": rng.randrange(10, 2000) if allowed else None,
                    "tokens_out": rng.randrange(10, 4000) if allowed else None,
                    "client": CLIENTS[p % len(CLIENTS)],
                }
            )
        elif kind < 0.98:
            out.append({**base, "name": "token.refreshed", "action": "refreshed"})
        else:
            out.append(
                {
                    **base,
                    "name": "key.enrolled",
                    "action": "key.enrolled",
                    "actor": "admin",
                    "target_type": "principal",
                    "target": f"p{p}",
                }
            )
    return out


def run(events: list[dict[str, Any]], cfg: BastionConfig) -> tuple[float, DetectionEngine, int]:
    engine = DetectionEngine(default_detectors(cfg), Context(cfg), RiskBoard())
    found = 0
    gc.collect()
    started = time.perf_counter()
    for idx, record in enumerate(events):
        found += len(engine.process(Observation.from_record(record, idx)))
    elapsed = time.perf_counter() - started
    return len(events) / elapsed, engine, found


def state_sizes(engine: DetectionEngine) -> tuple[int, int]:
    entries = evictions = 0
    for detector in engine.detectors:
        for structure in detector.structures().values():
            entries += len(structure) if isinstance(structure, Sized) else 0
            evictions += getattr(getattr(structure, "stats", None), "evictions", 0)
    return entries, evictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--principals", type=int, default=10_000)
    parser.add_argument("--orgs", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--vendor-share",
        type=float,
        default=0.3,
        help="share of principals in vendor orgs (1.0 = the worst case for D7)",
    )
    args = parser.parse_args()
    cfg = config(args.orgs)
    events = records(args.events, args.principals, args.orgs, args.seed, args.vendor_share)
    rates: list[float] = []
    engine: DetectionEngine | None = None
    found = 0
    for _ in range(args.rounds):
        rate, engine, found = run(events, cfg)
        rates.append(rate)
    assert engine is not None
    entries, evictions = state_sizes(engine)
    tracemalloc.start()
    _, measured, _ = run(events[: min(len(events), 50_000)], cfg)
    heap = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del measured
    table = Table(title="detection engine throughput (one core)")
    for column in (
        "detectors",
        "events",
        "principals",
        "vendor share",
        "events/s median",
        "spread",
    ):
        table.add_column(column, justify="right")
    table.add_column("findings", justify="right")
    table.add_column("state entries", justify="right")
    table.add_column("evictions", justify="right")
    table.add_column("peak heap MiB", justify="right")
    table.add_row(
        ",".join(d.id for d in engine.detectors),
        f"{len(events):,}",
        f"{args.principals:,}",
        f"{args.vendor_share:.0%}",
        f"{statistics.median(rates):,.0f}",
        f"{min(rates):,.0f}-{max(rates):,.0f}",
        str(found),
        f"{entries:,}",
        f"{evictions:,}",
        f"{heap / 2**20:.1f}",
    )
    Console(width=160).print(table)


if __name__ == "__main__":
    main()

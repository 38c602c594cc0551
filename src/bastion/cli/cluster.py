"""``bastion cluster status``: the gateways and the worker sharing this database."""

from __future__ import annotations

import time
from typing import Any

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bastion.cluster import STALE_AFTER, cluster_status
from bastion.timefmt import when

from .context import Context

out = Console(highlight=False, soft_wrap=True)
# Columns every heartbeat row has; any others (e.g. lock-view freshness) are shown after them.
_KNOWN = ("id", "kind", "host", "pid", "started_at", "heartbeat_at", "epoch", "lock_view_at")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else escape(str(value))  # rows are data, never markup


def register(app: typer.Typer) -> None:
    cluster_app = typer.Typer(help="Inspect the processes of a deployment.", no_args_is_help=True)
    app.add_typer(cluster_app, name="cluster")

    @cluster_app.command("status")
    def status(
        ctx: typer.Context,
        as_json: bool = typer.Option(False, "--json", help="one JSON object"),
    ) -> None:
        """Every gateway and worker heard from in the last hour, and the current state epoch.

        A process silent for more than 10 s is marked stale (killed, hung or cut off from the
        database); "behind" counts the state changes it has not applied yet; "lock view" is how
        old its proof that its locks are current was at that heartbeat (it re-proves at every
        epoch poll; strict compartments refuse calls past their bound).
        """
        c: Context = ctx.obj
        now = time.time()
        report = cluster_status(c.store, now)
        if as_json:
            out.print(orjson.dumps(report.as_json()).decode(), markup=False)
            return
        extra = sorted({k for p in report.processes for k in p.row} - set(_KNOWN))
        table = Table(
            "kind",
            "host",
            "pid",
            "started (UTC)",
            "heartbeat",
            "epoch",
            "behind",
            "lock view",
            *extra,
            "id",
        )
        for proc in report.processes:
            row = proc.row
            beat = f"{proc.age:.1f}s ago" + (" [red]STALE[/]" if proc.stale else "")
            table.add_row(
                _cell(row["kind"]),
                _cell(row["host"]),
                str(row["pid"]),
                when(row["started_at"]),
                beat,
                str(row["epoch"]),
                str(proc.behind),
                "never proved" if proc.lock_view_age is None else f"{proc.lock_view_age:.1f}s old",
                *(_cell(row.get(k)) for k in extra),
                _cell(row["id"]),
            )
        out.print(
            f"state epoch {report.epoch}; {len(report.processes)} processes "
            f"(stale: no heartbeat for over {STALE_AFTER:.0f}s)",
            markup=False,
        )
        out.print(table)

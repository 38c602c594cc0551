"""``bastion findings``: what the detection engine found (read from the store, on the server)."""

from __future__ import annotations

import time
from dataclasses import asdict

import orjson
import typer
from rich.console import Console
from rich.table import Table

from bastion.detect.findings import Finding
from bastion.errors import NotFound
from bastion.store import findings as finding_rows
from bastion.timefmt import when

from .context import Context, parse_duration

out = Console(highlight=False, soft_wrap=True)


def _json(finding: Finding) -> str:
    return orjson.dumps(asdict(finding)).decode()


def register(app: typer.Typer) -> None:
    findings_app = typer.Typer(help="Read detection findings.", no_args_is_help=True)
    app.add_typer(findings_app, name="findings")

    @findings_app.command("list")
    def list_findings(
        ctx: typer.Context,
        since: str = typer.Option("24h", help="how far back (e.g. 30m, 24h, 7d)"),
        detection: str = typer.Option("", help="only this detection (e.g. D5)"),
        principal: str = typer.Option("", help="only findings raising this principal's risk"),
        status: str = typer.Option("", help="open, learning or suppressed"),
        limit: int = typer.Option(100, min=1, max=10000),
        as_json: bool = typer.Option(False, "--json", help="one JSON object per line"),
    ) -> None:
        """The latest findings, newest first."""
        c: Context = ctx.obj
        with c.store.read() as conn:
            found = finding_rows.query(
                conn,
                since=time.time() - parse_duration(since),
                detection=detection or None,
                principal=principal or None,
                status=status or None,
                limit=limit,
            )
        if as_json:
            for finding in found:
                out.print(_json(finding), markup=False)
            return
        table = Table(
            "id", "detection", "severity", "entity", "count", "last seen", "status", "what"
        )
        for f in found:
            table.add_row(
                f.id,
                f.detection,
                str(f.severity),
                f"{f.entity_type}:{f.entity}",
                str(f.count),
                when(f.last_seen),
                f.status,
                f.explanation,
            )
        out.print(table)

    @findings_app.command("show")
    def show(ctx: typer.Context, finding_id: str = typer.Argument(..., help="fd_...")) -> None:
        """One finding with its techniques and evidence (audit event ids)."""
        c: Context = ctx.obj
        with c.store.read() as conn:
            finding = finding_rows.get(conn, finding_id)
        if finding is None:
            raise NotFound(f"no finding {finding_id[:40]!r}")
        out.print(_json(finding), markup=False)

"""``bastion drill contractor-breach``: the threat model, replayed against a running Bastion."""

from __future__ import annotations

import httpx
import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bastion.drill import runner
from bastion.drill.lab import Lab
from bastion.drill.scorecard import CONTAIN_LIMIT, MAX_LEAKED, StepResult, passed, summary
from bastion.identity.principals import PrincipalService

from .context import Context

out = Console(highlight=False, soft_wrap=True)
DEFAULT_PROBES = ["demo-chat", "vendor-lab-chat", "cyber-frontier", "gpt-4o", "o3-pro"]


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


def render(results: list[StepResult]) -> Table:
    table = Table(
        "step",
        "attack",
        "outcome",
        "found",
        "detect",
        "contain",
        "leaked",
        "verdict",
        title="contractor-breach drill",
    )
    for r in results:
        table.add_row(
            r.step,
            escape(r.title),
            escape(r.error or r.outcome),
            escape(", ".join(d.split()[0] for d in r.detections) or "—"),
            _seconds(r.time_to_detect),
            _seconds(r.time_to_contain),
            str(r.leaked),
            "[green]PASS[/]" if r.passed else "[red]FAIL[/]",
        )
    return table


def register(app: typer.Typer) -> None:
    drill_app = typer.Typer(help="Attack drills against a running Bastion.", no_args_is_help=True)
    app.add_typer(drill_app, name="drill")

    @drill_app.command("contractor-breach")
    def contractor_breach(
        ctx: typer.Context,
        url: str = typer.Option("http://127.0.0.1:8080", help="the running Bastion"),
        vendor: str = typer.Option("acme", help="the vendor org whose contractors are breached"),
        former_vendor: str = typer.Option("oldco", help="a vendor org whose contract ended"),
        model: str = typer.Option("vendor-chat", help="a model the vendor org may use"),
        probe: list[str] = typer.Option(DEFAULT_PROBES, help="models the attacker probes"),
        escalate_to: str = typer.Option(
            "vendor-lab", help="a compartment the attacker asks for and self-approves"
        ),
        pace: float = typer.Option(0.25, min=0.05, max=2.0, help="seconds between attacks"),
        as_json: bool = typer.Option(False, "--json", help="the scorecard as JSON"),
    ) -> None:
        """Replay T1-T10 of the threat model; exit 1 unless every step passes."""
        c: Context = ctx.obj
        with httpx.Client(timeout=15, trust_env=False) as http:
            lab = Lab(
                url=url.rstrip("/"),
                http=http,
                store=c.store,
                audit=c.audit,
                config=c.config,
                principals=PrincipalService(c.store, c.audit),
                vendor=vendor,
                former_vendor=former_vendor,
                model=model,
                probes=tuple(probe),
                escalate_to=escalate_to,
                pace=pace,
            )
            show = None if as_json else (lambda r: out.print(f"  {r.step} done: {r.outcome}"))
            if not as_json:
                out.print(f"drill run {lab.run} against {escape(lab.url)}")
            results = runner.run(lab, on_result=show)
        if as_json:
            out.print(orjson.dumps(summary(results)).decode(), markup=False)
        else:
            out.print(render(results))
            for r in results:
                detail = "; ".join(filter(None, [r.note, ", ".join(r.actions), r.incident]))
                out.print(f"  {r.step}: {escape(detail)}")
            out.print(
                f"pass: blocked or contained within {CONTAIN_LIMIT:g} s, at most {MAX_LEAKED} "
                "attacker requests served after the first malicious one"
            )
        if not passed(results):
            raise typer.Exit(1)

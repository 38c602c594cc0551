"""``bastion simulate``: seeded, labelled traffic through Bastion in-process, scored."""

from __future__ import annotations

from pathlib import Path

import anyio
import orjson
import typer
from rich.console import Console

from bastion.errors import BadRequest
from bastion.simulate.report import render, score
from bastion.simulate.runner import Options, check, simulate

out = Console(highlight=False)


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    def simulate_command(
        seed: int = typer.Option(1, min=0, max=2**31 - 1, help="the seed: same seed, same run"),
        days: int = typer.Option(7, min=1, max=28, help="simulated days (from a Monday)"),
        scenario: list[str] = typer.Option(
            [], "--scenario", help="run only this attack scenario (repeatable; default: all)"
        ),
        json_file: Path | None = typer.Option(
            None, "--json", help="also write the report as JSON to this file"
        ),
        database_url: str = typer.Option(
            "",
            "--database-url",
            help="an EMPTY scratch database to run on (default: SQLite in a temporary dir)",
        ),
        keep: Path | None = typer.Option(
            None, "--keep", help="keep the generated config, IP databases and state here"
        ),
    ) -> None:
        """Run a benign population and attack scenarios through Bastion (in-process, on a
        simulated clock) and score detection: per scenario detected or not and time to
        detect, false positives per 1,000 benign principal-days. Exits 1 unless every
        scenario is detected and false positives stay under 5 per 1,000."""
        options = Options(
            seed=seed, days=days, database_url=database_url, scenarios=tuple(scenario)
        )
        if json_file is not None and not json_file.parent.is_dir():
            raise BadRequest(f"--json: no directory {json_file.parent} to write the report in")
        if json_file is not None and json_file.is_dir():
            raise BadRequest(f"--json: {json_file} is a directory")
        check(options, keep)
        result = anyio.run(simulate, options, keep)
        report = score(result)
        render(report, out)
        if json_file is not None:
            data = orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2)
            json_file.write_bytes(data + b"\n")
            out.print(f"report written to {json_file}", markup=False)
        raise typer.Exit(0 if report.passed else 1)

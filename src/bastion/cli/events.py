"""``bastion events tail``: the latest audit events, optionally following new ones."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import orjson
import typer
from rich.console import Console

from bastion.store import events as event_rows
from bastion.store.events import EventRow

from .context import Context

out = Console(highlight=False)


def _line(row: EventRow) -> str:
    body = orjson.loads(row.body)
    stamp = datetime.fromtimestamp(row.time, UTC).strftime("%H:%M:%S.%f")[:-3]
    if row.name == "request.decided":
        verdict = "allow" if body.get("allowed") else "deny"
        usage = ""
        if body.get("tokens_out") is not None:
            usage = f" tokens {body.get('tokens_in')}/{body.get('tokens_out')}"
        return (
            f"{stamp} {row.name} {verdict} {body.get('principal') or '-'} "
            f"{body.get('route')} model={body.get('model') or '-'} status={body.get('status')} "
            f"{body.get('outcome')} [{','.join(body.get('reasons') or [])}]{usage} "
            f"from {body.get('source_ip')}"
        )
    target = body.get("target") or body.get("principal") or ""
    reason = f" reason={body['reason']!r}" if body.get("reason") else ""
    error = f" error={body['error']}" if body.get("error") else ""
    return f"{stamp} {row.name} by {body.get('actor') or '-'} {target}{reason}{error}"


def register(app: typer.Typer) -> None:
    events_app = typer.Typer(help="Read the audit events.", no_args_is_help=True)
    app.add_typer(events_app, name="events")

    @events_app.command("tail")
    def tail(
        ctx: typer.Context,
        lines: int = typer.Option(20, "-n", min=1, max=10000, help="how many to show"),
        follow: bool = typer.Option(False, "--follow", "-f", help="keep printing new events"),
        as_json: bool = typer.Option(False, "--json", help="one JSON object per line"),
    ) -> None:
        """Show the latest audit events."""
        c: Context = ctx.obj
        with c.store.read() as conn:
            rows = event_rows.last(conn, lines)
        seq = rows[-1].idx if rows else -1
        while True:
            for row in rows:
                out.print(row.body if as_json else _line(row), markup=False, soft_wrap=True)
                seq = row.idx
            if not follow:
                return
            time.sleep(0.5)
            with c.store.read() as conn:
                rows = event_rows.after(conn, seq)

"""``bastion response``: what the playbooks did, approving or undoing it, and the playbooks."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bastion.config.loader import parse_document, read_text
from bastion.config.playbooks import Playbooks
from bastion.policy.holder import SnapshotHolder
from bastion.respond.locks import LockService
from bastion.respond.playbooks import PlaybookSource
from bastion.respond.service import ResponseService
from bastion.store.actions import ActionRow
from bastion.timefmt import when

from .context import Context, actor

out = Console(highlight=False, soft_wrap=True)
STATUSES = "done, dry_run, pending_approval, rate_limited, skipped, failed, undone, rejected"


def _service(c: Context) -> ResponseService:
    locks = LockService(c.store, c.audit)
    source = PlaybookSource(c.settings.config_file.parent)
    return ResponseService(c.store, c.audit, locks, SnapshotHolder(), source)


def _when(at: float | None) -> str:
    return when(at) if at else ""


def _print(row: ActionRow, verb: str) -> None:
    out.print(f"{verb} {row.id}: {row.action} {row.target_type} {row.target} → {row.status}")


def register(app: typer.Typer) -> None:
    response_app = typer.Typer(
        help="Automatic response: actions taken by playbooks, approvals, undo.",
        no_args_is_help=True,
    )
    app.add_typer(response_app, name="response")

    @response_app.command("actions")
    def actions(
        ctx: typer.Context,
        status: str = typer.Option("", help=f"only this status ({STATUSES})"),
        incident: str = typer.Option("", help="only this incident's actions (in_...)"),
        finding: str = typer.Option("", help="only actions for this finding (fd_...)"),
        limit: int = typer.Option(100, min=1, max=10000),
        as_json: bool = typer.Option(False, "--json", help="one JSON object per line"),
    ) -> None:
        """Response actions, newest first."""
        rows = _service(ctx.obj).actions(
            status=status or None,
            incident=incident or None,
            finding=finding or None,
            limit=limit,
        )
        if as_json:
            for row in rows:
                out.print(orjson.dumps(asdict(row)).decode(), markup=False)
            return
        table = Table("id", "when", "action", "target", "mode", "status", "playbook", "incident")
        for row in rows:
            table.add_row(
                row.id,
                _when(row.created_at),
                row.action,
                escape(f"{row.target_type}:{row.target}"),
                row.mode,
                row.status,
                escape(row.playbook or "(manual)"),
                row.incident or "",
            )
        out.print(table)

    @response_app.command("approve")
    def approve(
        ctx: typer.Context,
        action_id: str = typer.Argument(..., help="ra_... (status pending_approval)"),
        reason: str = typer.Option(..., help="why (recorded in the audit log)"),
    ) -> None:
        """Carry out an action that waits for an admin's approval."""
        _print(_service(ctx.obj).approve(action_id, by=actor(), reason=reason), "approved")

    @response_app.command("reject")
    def reject(
        ctx: typer.Context,
        action_id: str = typer.Argument(..., help="ra_... (status pending_approval)"),
        reason: str = typer.Option(..., help="why (recorded in the audit log)"),
    ) -> None:
        """Refuse an action that waits for approval."""
        _print(_service(ctx.obj).reject(action_id, by=actor(), reason=reason), "rejected")

    @response_app.command("undo")
    def undo(
        ctx: typer.Context,
        action_id: str = typer.Argument(..., help="ra_... (status done)"),
        reason: str = typer.Option(..., help="why (recorded in the audit log)"),
    ) -> None:
        """Release what an action locked (access comes back on the next request)."""
        _print(_service(ctx.obj).undo(action_id, by=actor(), reason=reason), "undone")

    @response_app.command("playbooks")
    def playbooks(
        ctx: typer.Context,
        check: Path | None = typer.Option(
            None, help="validate this playbooks file instead of showing the ones in force"
        ),
    ) -> None:
        """The playbooks in force (bastion.yaml's file or the built-in ones), or check a file."""
        c: Context = ctx.obj
        if check is not None:
            found = parse_document(read_text(check), str(check), Playbooks)
            out.print(f"{escape(str(check))}: {len(found.playbooks)} playbooks, valid")
            return
        current = PlaybookSource(c.settings.config_file.parent).current(c.config)
        out.print(f"source: {escape(c.config.response.playbooks or 'built-in')}")
        table = Table("playbook", "mode", "match", "actions")
        for book in current.playbooks:
            match = book.match
            what = ", ".join(match.detections) or "any detection"
            what += f"; ≥ {match.min_severity}; {'/'.join(match.org_kinds)}"
            steps = ", ".join(
                step.action
                + (f" (>= {step.min_count} times)" if step.min_count > 1 else "")
                + (" [approval]" if step.needs_approval else "")
                for step in book.actions
            )
            table.add_row(escape(book.name), book.mode, escape(what), escape(steps))
        out.print(table)

"""``bastion access``: ask for, approve or deny just-in-time access, and manage grants.

``request``, ``approve`` and ``deny`` act as a person: they call the admin API with the device
key of a profile (see ``bastion login``), so the server knows who asks and who approves.
``list``, ``grants`` and ``revoke`` are operator commands on the local store.
"""

from __future__ import annotations

import httpx
import typer
from rich.console import Console
from rich.table import Table

from bastion.access.service import AccessService
from bastion.client import httpx_client
from bastion.errors import AccessDenied, BadRequest, BastionError, Conflict, NotFound
from bastion.timefmt import when

from .admin import add_row, id_column
from .context import Context, actor, parse_duration

out = Console(highlight=False, soft_wrap=True)
_ERRORS: dict[int, type[BastionError]] = {403: AccessDenied, 404: NotFound, 409: Conflict}


def _call(profile: str, path: str, body: dict[str, object]) -> dict[str, object]:
    try:
        with httpx_client(profile=profile, timeout=30) as client:
            response = client.post(path, json=body)
    except httpx.HTTPError as exc:
        raise BadRequest(f"cannot reach the server: {type(exc).__name__}") from None
    data = (
        response.json()
        if response.headers.get("content-type", "").startswith("application/json")
        else {}
    )
    if response.status_code != 200:
        message = str(data.get("error", {}).get("message", response.text[:200]))
        raise _ERRORS.get(response.status_code, BadRequest)(message)
    return dict(data)


def _show(row: dict[str, object]) -> None:
    out.print(
        f"{row['id']}: {row['principal']} → {row['compartment']} "
        f"for {float(str(row['duration'])) / 3600:g} h — {row['status']}",
        markup=False,
    )


def register(app: typer.Typer) -> None:
    access_app = typer.Typer(help="Just-in-time access requests and grants.", no_args_is_help=True)
    app.add_typer(access_app, name="access")

    @access_app.command("request")
    def request(
        target: str = typer.Argument(..., help="compartment or model name"),
        reason: str = typer.Option(..., help="why you need it (recorded)"),
        duration: str = typer.Option("1h", help="how long, e.g. 30m, 4h"),
        profile: str = typer.Option("default", help="your device profile"),
    ) -> None:
        """Ask for access to a compartment (or a model's compartment) for a while."""
        body = {"target": target, "reason": reason, "duration_seconds": parse_duration(duration)}
        _show(_call(profile, "/admin/v1/access/requests", body))

    @access_app.command("approve")
    def approve(
        request_id: str,
        reason: str = typer.Option("", help="recorded with your approval"),
        profile: str = typer.Option("default", help="your device profile"),
    ) -> None:
        """Approve a pending request (as an approver of its compartment)."""
        _show(_call(profile, f"/admin/v1/access/requests/{request_id}/approve", {"reason": reason}))

    @access_app.command("deny")
    def deny(
        request_id: str,
        reason: str = typer.Option("", help="recorded with your denial"),
        profile: str = typer.Option("default", help="your device profile"),
    ) -> None:
        """Deny a pending request."""
        _show(_call(profile, f"/admin/v1/access/requests/{request_id}/deny", {"reason": reason}))

    @access_app.command("list")
    def pending(ctx: typer.Context) -> None:
        """Pending requests (operator view, local store)."""
        c: Context = ctx.obj
        table = Table(id_column("id"), "principal", "compartment", "hours", "reason", "asked")
        for row in AccessService(c.store, c.audit).pending():
            add_row(
                table,
                row.id,
                row.principal,
                row.compartment,
                f"{row.duration / 3600:g}",
                row.reason,
                when(row.created_at),
            )
        out.print(table)

    @access_app.command("grants")
    def grants(ctx: typer.Context) -> None:
        """Active time-bound grants (operator view, local store)."""
        c: Context = ctx.obj
        table = Table(id_column("id"), "principal", "compartment", "expires", "request")
        for row in AccessService(c.store, c.audit).grants():
            add_row(
                table,
                row.id,
                row.principal,
                row.compartment,
                when(row.expires_at),
                row.request or "-",
            )
        out.print(table)

    @access_app.command("revoke")
    def revoke(
        ctx: typer.Context, grant_id: str, reason: str = typer.Option(..., help="why")
    ) -> None:
        """Revoke a grant: it stops counting on the next request."""
        c: Context = ctx.obj
        row = AccessService(c.store, c.audit).revoke(grant_id, author=actor(), reason=reason)
        out.print(f"revoked {row.id} ({row.principal} → {row.compartment})", markup=False)

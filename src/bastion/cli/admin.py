"""Admin commands: principals, device keys and locks. Each calls a service and prints the result."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import typer
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from bastion.access.dormancy import DormancyService
from bastion.errors import BadRequest, NotFound
from bastion.identity.principals import PrincipalService
from bastion.respond.locks import LOCK_TYPES, LockService, validate_rate, validate_target
from bastion.store import Store, state
from bastion.timefmt import when

from .context import KEY_ARGUMENTS, Context, actor, parse_duration

out = Console(soft_wrap=True)


def wait_for_enforcement(store: Store, epoch: int, timeout: float = 3.0) -> tuple[int, int]:
    """Wait until every live gateway has applied ``epoch``; returns (applied, live). A cluster's
    worker serves no requests, so it is not counted."""
    deadline = time.monotonic() + timeout
    while True:
        with store.read() as conn:
            processes = state.live_processes(conn, since=time.time() - 6.0)
        live = [p for p in processes if p.kind == "gateway"]
        applied = sum(1 for p in live if p.epoch >= epoch)
        if applied == len(live) or time.monotonic() > deadline:
            return applied, len(live)
        time.sleep(0.05)


def add_row(table: Table, *cells: str) -> None:
    """Cells are plain text: a lock reason such as ``[/x]`` is shown, never read as markup."""
    table.add_row(*(Text(cell) for cell in cells))


def id_column(header: str) -> Column:
    """Identifiers users copy into other commands are never cut short to fit the terminal."""
    return Column(header, no_wrap=True)


def _report(store: Store, epoch: int) -> None:
    applied, live = wait_for_enforcement(store, epoch)
    if live == 0:
        out.print("no gateway is running; it will apply this when it starts")
    elif applied == live:
        out.print(f"enforced by {live} gateway(s) (epoch {epoch})")
    else:
        out.print(f"[yellow]applied by {applied} of {live} gateway(s) so far (epoch {epoch})[/]")


def register(app: typer.Typer) -> None:
    principal_app = typer.Typer(
        help="Manage principals (users and services).", no_args_is_help=True
    )
    key_app = typer.Typer(help="Manage enrolled device keys.", no_args_is_help=True)
    app.add_typer(principal_app, name="principal")
    app.add_typer(key_app, name="key")

    @principal_app.command("add")
    def principal_add(
        ctx: typer.Context,
        name: str,
        org: str = typer.Option(..., help="the org the principal belongs to"),
        kind: str = typer.Option("user", help="user or service"),
        code: bool = typer.Option(True, help="print a one-time enrollment code"),
    ) -> None:
        """Add a principal and print a one-time enrollment code for `bastion login`."""
        c: Context = ctx.obj
        service = PrincipalService(c.store, c.audit)
        service.add(c.config, name, kind=kind, org=org, author=actor())
        out.print(f"added {kind} {name} in org {org}")
        if code:
            _print_code(service, name)

    @principal_app.command("code")
    def principal_code(ctx: typer.Context, name: str) -> None:
        """Issue a new one-time enrollment code (valid 15 minutes)."""
        c: Context = ctx.obj
        _print_code(PrincipalService(c.store, c.audit), name)

    @principal_app.command("enable")
    def principal_enable(
        ctx: typer.Context,
        name: str,
        reason: str = typer.Option("", help="why (recorded in the audit log)"),
    ) -> None:
        """Enable a dormant principal again: it counts as active from now."""
        c: Context = ctx.obj
        DormancyService(c.store, c.audit).enable(name, author=actor(), reason=reason)
        out.print(f"enabled {name}: active from now", markup=False)
        declared = c.config.principals.get(name) if c.settings.config_file.exists() else None
        if declared is not None and declared.disabled:
            out.print(
                f"note: {name} is still disabled in bastion.yaml (disabled: true)", markup=False
            )

    @principal_app.command("list")
    def principal_list(ctx: typer.Context) -> None:
        """List principals."""
        c: Context = ctx.obj
        table = Table("name", "kind", "org", "source", "disabled", "created")
        for row in PrincipalService(c.store, c.audit).all():
            add_row(
                table,
                row.name,
                row.kind,
                row.org,
                row.source,
                str(row.disabled),
                when(row.created_at),
            )
        out.print(table)

    @key_app.command("enroll")
    def key_enroll(
        ctx: typer.Context,
        principal: str,
        public_key: Path = typer.Argument(..., help="file holding the public JWK (JSON)"),
    ) -> None:
        """Enroll a device's public key for a principal directly (no code needed)."""
        c: Context = ctx.obj
        try:
            jwk = orjson.loads(public_key.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            raise BadRequest(f"{public_key}: not a readable JSON file") from None
        jkt = PrincipalService(c.store, c.audit).enroll(principal, jwk, author=actor())
        out.print(f"enrolled key {jkt} for {principal}")

    @key_app.command("list")
    def key_list(ctx: typer.Context, principal: str) -> None:
        """List a principal's device keys."""
        c: Context = ctx.obj
        table = Table(id_column("thumbprint (jkt)"), "alg", "enrolled", "revoked")
        for row in PrincipalService(c.store, c.audit).keys(principal):
            add_row(table, row.jkt, row.alg, when(row.created_at), when(row.revoked_at))
        out.print(table)

    @key_app.command("revoke", context_settings=KEY_ARGUMENTS)
    def key_revoke(
        ctx: typer.Context, jkt: str, reason: str = typer.Option(..., help="why")
    ) -> None:
        """Revoke a device key: its tokens stop working on the next request."""
        c: Context = ctx.obj
        PrincipalService(c.store, c.audit).revoke_key(jkt, author=actor(), reason=reason)
        out.print(f"revoked key {jkt}")

    @app.command(context_settings=KEY_ARGUMENTS)
    def lock(
        ctx: typer.Context,
        target_type: str = typer.Argument(..., help=f"one of: {', '.join(LOCK_TYPES)}"),
        target: str = typer.Argument(
            "*",
            help="name, thumbprint, family id or network CIDR such as 203.0.113.0/24 "
            "(omit for 'all')",
        ),
        reason: str = typer.Option(..., help="why (recorded in the audit log)"),
        ttl: str | None = typer.Option(None, help="expire after e.g. 30m, 4h, 2d"),
        rate: float | None = typer.Option(
            None, help="throttle locks only: requests per minute the principal may make"
        ),
        force: bool = typer.Option(False, help="lock a target that does not exist (yet)"),
    ) -> None:
        """Lock a target: refused on its next request, open streams cut. `stepup` makes a
        principal log in again with MFA; `throttle` holds it to --rate requests per minute."""
        c: Context = ctx.obj
        seconds = parse_duration(ttl) if ttl else None
        service = LockService(c.store, c.audit)
        target = validate_target(target_type, target)
        validate_rate(target_type, rate)
        if not force and not service.known(target_type, target, c.config):
            raise NotFound(
                f"no {target_type} {target!r} is known, so nothing was locked "
                "(check the name, or use --force to lock it before it exists)"
            )
        row, epoch = service.lock(
            target_type, target, reason=reason, author=actor(), ttl=seconds, rate=rate
        )
        expiry = f", expires {when(row.expires_at)} UTC" if row.expires_at else ""
        held = f" to {row.rate:g} requests/min" if row.rate is not None else ""
        out.print(f"locked {row.target_type} {row.target}{held} ({row.id}{expiry})", markup=False)
        _report(c.store, epoch)

    @app.command(context_settings=KEY_ARGUMENTS)
    def unlock(
        ctx: typer.Context,
        target_type: str = typer.Argument(..., help=f"one of: {', '.join(LOCK_TYPES)}"),
        target: str = typer.Argument("*"),
        reason: str = typer.Option("", help="why (recorded in the audit log)"),
    ) -> None:
        """Release every active lock on a target."""
        c: Context = ctx.obj
        released, epoch = LockService(c.store, c.audit).unlock(
            target_type, target, author=actor(), reason=reason
        )
        shown = released[0].target  # as stored: a network is normalized
        out.print(f"unlocked {target_type} {shown} ({', '.join(r.id for r in released)})")
        _report(c.store, epoch)

    @app.command()
    def locks(ctx: typer.Context) -> None:
        """List active locks."""
        c: Context = ctx.obj
        columns = ("type", "target", "reason", "author", "since", "expires", "rate")
        table = Table(id_column("id"), *columns)
        for row in LockService(c.store, c.audit).active():
            add_row(
                table,
                row.id,
                row.target_type,
                row.target,
                row.reason,
                row.author,
                when(row.created_at),
                when(row.expires_at),
                f"{row.rate:g}/min" if row.rate is not None else "-",
            )
        out.print(table)


def _print_code(service: PrincipalService, name: str) -> None:
    code = service.issue_code(name, author=actor())
    out.print(f"one-time enrollment code for {name} (valid 15 minutes):")
    out.print(code, markup=False, highlight=False)
    out.print(f"on the device: bastion login --server URL --principal {name} --code CODE")

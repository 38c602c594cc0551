"""``bastion mfa``: TOTP factors for users (operator commands on the local store).

The secret is sealed with ``mfa.key`` in the state directory; a server reading the same database
from another state directory needs a copy of that file (like ``issuer.jwk``).
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from bastion.identity.mfa import KEY_FILE, STEP_SECONDS, MfaService
from bastion.timefmt import when

from .admin import add_row, id_column
from .context import Context, actor

out = Console(highlight=False, soft_wrap=True)


def _service(c: Context) -> MfaService:
    return MfaService(c.store, c.audit, c.settings.state_dir / KEY_FILE)


def register(app: typer.Typer) -> None:
    mfa_app = typer.Typer(help="MFA factors (TOTP) for users.", no_args_is_help=True)
    app.add_typer(mfa_app, name="mfa")

    @mfa_app.command("enroll")
    def enroll(ctx: typer.Context, principal: str) -> None:
        """Create a TOTP factor for a user and show its secret, once."""
        c: Context = ctx.obj
        enrollment = _service(c).enroll(principal, author=actor())
        out.print(f"MFA factor created for {principal}.", markup=False)
        out.print(
            "Add it to an authenticator app now (scan the URI as a QR code or type the secret): "
            "it is shown only this once and Bastion cannot show it again.",
            markup=False,
        )
        out.print(f"otpauth URI: {enrollment.uri}", markup=False)
        out.print(f"secret (base32): {enrollment.secret}", markup=False)
        out.print(
            f"It is confirmed by the first login with a code: bastion login --mfa "
            f"--principal {principal} ...",
            markup=False,
        )

    @mfa_app.command("remove")
    def remove(
        ctx: typer.Context,
        principal: str,
        reason: str = typer.Option("", help="why (recorded in the audit log)"),
    ) -> None:
        """Remove a user's TOTP factor (a lost device); enrol a new one afterwards."""
        c: Context = ctx.obj
        _service(c).remove(principal, author=actor(), reason=reason)
        out.print(f"removed the MFA factor of {principal}", markup=False)

    @mfa_app.command("list")
    def factors(ctx: typer.Context) -> None:
        """Users with a TOTP factor: when enrolled, confirmed and last used."""
        c: Context = ctx.obj
        table = Table(id_column("principal"), "enrolled", "confirmed", "last used", "failures")
        for row in _service(c).factors():
            last = None if row.last_step is None else row.last_step * STEP_SECONDS
            add_row(
                table,
                row.principal,
                when(row.created_at),
                when(row.confirmed_at),
                when(last),
                str(row.failures),
            )
        out.print(table)

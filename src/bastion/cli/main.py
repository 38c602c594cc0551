"""The ``bastion`` command: thin Typer commands over the shared services.

Errors are rendered here once: a ``BastionError`` prints its message (config errors one problem
per line) and exits 1; a usage error prints click's usage and message and exits 2; anything else
prints "internal error" and exits 2, with the traceback only when ``BASTION_DEBUG=1``. Messages are
printed as plain text (never as Rich markup) and are not wrapped, so each stays one greppable line.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from bastion.errors import BastionError, ConfigError

from . import access, admin, audit, client_cmds, events, findings, server
from . import cluster as cluster_cmds
from . import console as console_cmds
from . import drill as drill_cmds
from . import guard as guard_cmds
from . import incident as incident_cmds
from . import mfa as mfa_cmds
from . import response as response_cmds
from . import review as review_cmds
from . import simulate as simulate_cmds
from . import worker as worker_cmds
from .context import Context

app = typer.Typer(
    name="bastion",
    help="Bastion: a zero-trust access gateway for restricted AI models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def root(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help="bastion.yaml to use (default: ./bastion.yaml or $BASTION_CONFIG)",
    ),
    state_dir: Path | None = typer.Option(
        None, "--state-dir", help="state directory (default: ./.bastion or $BASTION_STATE_DIR)"
    ),
) -> None:
    ctx.obj = Context(config_file=config, state_dir=state_dir)
    ctx.call_on_close(ctx.obj.close)


server.register(app)
worker_cmds.register(app)
cluster_cmds.register(app)
admin.register(app)
client_cmds.register(app)
events.register(app)
audit.register(app)
access.register(app)
review_cmds.register(app)
mfa_cmds.register(app)
findings.register(app)
incident_cmds.register(app)
simulate_cmds.register(app)
guard_cmds.register(app)
response_cmds.register(app)
drill_cmds.register(app)
console_cmds.register(app)


def main() -> None:
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        code = app(standalone_mode=False)  # click returns a typer.Exit code instead of raising
    except BastionError as error:
        if isinstance(error, ConfigError):
            err.print(f"[red]error:[/] invalid configuration ({escape(error.file)})")
            for problem in error.problems:
                err.print(f"  {problem}", markup=False)
        else:
            err.print(f"[red]error:[/] {escape(error.message)}")
        sys.exit(1)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except typer.TyperException as error:  # click's usage errors (typer vendors click)
        show = getattr(error, "show", None)
        if callable(show):
            show()
        else:
            err.print(f"error: {error.format_message()}", markup=False)
        sys.exit(error.exit_code)
    except Exception:
        if os.environ.get("BASTION_DEBUG") == "1":
            traceback.print_exc()
        err.print("[red]error:[/] internal error (set BASTION_DEBUG=1 for details)")
        sys.exit(2)
    if isinstance(code, int) and code:
        sys.exit(code)

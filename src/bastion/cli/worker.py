"""``bastion worker``: the cluster's one detection and response process.

It builds the same services as ``bastion serve`` (``create_app(role="worker")``) and runs the
loops that must happen once per deployment rather than once per gateway: the detection engine
and its playbooks, audit checkpoints and the lifecycle sweeper. It serves
no gateway or admin traffic — only ``/healthz`` and ``/readyz`` on a loopback port, for the
orchestrator that restarts it.
"""

from __future__ import annotations

import typer
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from bastion.errors import BadRequest
from bastion.settings import Settings

from .context import Context
from .server import require_cluster_database

HEALTH_PATHS = ("/healthz", "/readyz")


class HealthOnly:
    """Passes the lifespan and the two health routes to the app; everything else is a 404, so
    a worker's port can never become a second way into the gateway or the admin API."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or (
            scope["type"] == "http" and scope["path"] in HEALTH_PATHS
        ):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http":
            response = JSONResponse(
                {"error": "not_found", "message": "a worker serves only /healthz and /readyz"}, 404
            )
            await response(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # refused before accepting


def register(app: typer.Typer) -> None:
    @app.command()
    def worker(
        ctx: typer.Context,
        host: str = typer.Option("127.0.0.1", help="address for /healthz and /readyz"),
        port: int = typer.Option(8081, min=1, max=65535, help="port for /healthz and /readyz"),
        log_level: str = typer.Option("info", help="debug, info, warning or error"),
    ) -> None:
        """Run the cluster's detection and response worker (one per deployment).

        Needs cluster mode (BASTION_REDIS_URL, and PostgreSQL in BASTION_DATABASE_URL), the
        same bastion.yaml and state directory keys as the gateways.
        """
        import logging.config

        import uvicorn

        from bastion.app import create_app
        from bastion.logs import log_config

        if log_level not in ("debug", "info", "warning", "error"):
            raise BadRequest("--log-level must be debug, info, warning or error")
        logging.config.dictConfig(log_config(log_level))
        c: Context = ctx.obj
        settings = Settings.from_env(config_file=c.config_file, state_dir=c.state_dir)
        if not settings.cluster:
            raise BadRequest(
                "bastion worker is for cluster mode (set BASTION_REDIS_URL and a PostgreSQL "
                "BASTION_DATABASE_URL); in embedded mode `bastion serve` already runs detection"
            )
        require_cluster_database(settings)
        settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        app = create_app(settings, role="worker")
        logging.getLogger("bastion").info("worker running (health on %s:%d)", host, port)
        uvicorn.run(
            HealthOnly(app.control),
            host=host,
            port=port,
            log_config=log_config(log_level),
            access_log=False,
            server_header=False,
            proxy_headers=False,
        )

"""``bastion init``, ``bastion config check`` and ``bastion serve`` (gateways, one or N)."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from starlette.types import ASGIApp

from bastion.config import example_config_text, load_config
from bastion.detect.signals import SignalsLoader
from bastion.errors import BadRequest
from bastion.identity.keys import IssuerKey
from bastion.settings import Settings

from .context import Context

out = Console(soft_wrap=True)


def register(app: typer.Typer) -> None:
    config_app = typer.Typer(help="Validate configuration.", no_args_is_help=True)
    app.add_typer(config_app, name="config")

    @app.command()
    def init(
        ctx: typer.Context,
        force: bool = typer.Option(False, help="overwrite an existing bastion.yaml"),
    ) -> None:
        """Write a commented example bastion.yaml and create the state directory."""
        c: Context = ctx.obj
        settings = c.settings
        config_file = settings.config_file
        if config_file.exists() and not force:
            out.print(f"kept existing {escape(str(config_file))} (use --force to overwrite)")
        else:
            config_file.write_text(example_config_text(), encoding="utf-8")
            out.print(f"wrote {escape(str(config_file))}")
        settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(settings.state_dir, 0o700)
        IssuerKey.load_or_create(settings.issuer_key_file)
        out.print(f"issuer key {escape(str(settings.issuer_key_file))} (mode 0600)")
        c.store.migrate()
        out.print(f"database ready ({c.store.backend})")
        out.print("next: bastion config check && bastion serve")

    @config_app.command("check")
    def check(ctx: typer.Context) -> None:
        """Validate bastion.yaml without starting anything."""
        c: Context = ctx.obj
        from bastion.detect.sigma import load_rules  # pySigma: only when checking

        config = load_config(c.settings.config_file)
        rules = load_rules(config.detection.rules, c.settings.config_file.parent)
        signals = SignalsLoader(c.settings.config_file).load(config)  # MMDB files, classifier
        missing = sorted(
            {u.api_key_env for u in config.upstreams.values() if u.api_key_env} - set(os.environ)
        )
        out.print(
            f"{escape(str(c.settings.config_file))}: ok — {len(config.upstreams)} upstreams, "
            f"{len(config.models)} models, {len(config.compartments)} compartments, "
            f"{len(config.orgs)} orgs, {len(config.principals)} principals"
        )
        if config.detection.rules:
            out.print(
                f"Sigma rules: ok — {len(rules.detections)} detection rules, "
                f"{len(rules.correlations)} correlations"
            )
        if signals.ip_intel is not None:
            out.print("IP intelligence databases: ok")
        for name in missing:
            out.print(f"[yellow]warning:[/] {name} is not set: its upstream will refuse requests")

    @app.command()
    def serve(
        ctx: typer.Context,
        host: str = typer.Option("127.0.0.1", help="address to listen on"),
        port: int = typer.Option(8080, min=1, max=65535, help="port to listen on"),
        public_url: str | None = typer.Option(
            None, help="the URL clients use (default: http://HOST:PORT or $BASTION_PUBLIC_URL)"
        ),
        log_level: str = typer.Option("info", help="debug, info, warning or error"),
        workers: int = typer.Option(
            1, min=1, max=64, help="gateway processes on this port (cluster mode only)"
        ),
    ) -> None:
        """Run the gateway and authorization server.

        Embedded mode (the default) runs everything in this one process. In cluster mode
        (BASTION_REDIS_URL set, PostgreSQL in BASTION_DATABASE_URL) it runs gateways only —
        start one `bastion worker` next to them for detection, response and checkpoints.
        """
        import logging.config

        from bastion.logs import log_config

        if log_level not in ("debug", "info", "warning", "error"):
            raise BadRequest("--log-level must be debug, info, warning or error")
        logging.config.dictConfig(log_config(log_level))

        c: Context = ctx.obj
        url = public_url or os.environ.get("BASTION_PUBLIC_URL") or ""
        if not url:
            if host in ("0.0.0.0", "::", ""):
                raise BadRequest(
                    f"--host {host} listens on every address: give --public-url (the URL clients "
                    "use, which their DPoP proofs sign) or set BASTION_PUBLIC_URL"
                )
            url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        settings = Settings.from_env(
            config_file=c.config_file, state_dir=c.state_dir, public_url=url.rstrip("/")
        )
        if workers > 1 and not settings.cluster:
            raise BadRequest(
                "--workers needs cluster mode: embedded mode keeps its state in one process "
                "(SQLite, in-memory replay cache and quotas), which other processes cannot "
                "share; set BASTION_REDIS_URL and a PostgreSQL BASTION_DATABASE_URL"
            )
        require_cluster_database(settings)
        settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        logging.getLogger("bastion").info(
            "serving on %s (state: %s, %s)",
            url,
            Path(settings.state_dir).resolve(),
            f"cluster gateway x{workers}" if settings.cluster else "embedded",
        )
        run = _serve_workers if workers > 1 else _serve_one
        run(settings, host, port, log_level, workers)


def require_cluster_database(settings: Settings) -> None:
    """Cluster mode shares state through PostgreSQL; a SQLite file cannot be shared."""
    if settings.cluster and not settings.resolved_database_url.startswith("postgresql"):
        raise BadRequest(
            "cluster mode (BASTION_REDIS_URL is set) needs PostgreSQL: set "
            "BASTION_DATABASE_URL=postgresql+psycopg://..."
        )


def _serve_one(settings: Settings, host: str, port: int, log_level: str, _workers: int) -> None:
    import uvicorn

    from bastion.app import create_app
    from bastion.logs import log_config

    app = create_app(settings, role="gateway" if settings.cluster else "embedded")
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=log_config(log_level),
        access_log=False,
        server_header=False,
        proxy_headers=False,
    )


def _serve_workers(settings: Settings, host: str, port: int, log_level: str, workers: int) -> None:
    """N gateway processes on one socket (uvicorn's process manager). This process prepares
    what they share first — keys, schema, a config that loads — so a mistake is reported once
    here rather than by N children, and the children's settings reach them through the
    environment they inherit (``gateway_app`` reads it)."""
    import uvicorn

    from bastion.audit import keys as audit_keys
    from bastion.logs import log_config
    from bastion.store import Store

    load_config(settings.config_file)
    IssuerKey.load_or_create(settings.issuer_key_file)
    audit_keys.load_or_create(settings.state_dir)
    store = Store(settings.resolved_database_url)
    try:
        store.migrate()
    finally:
        store.close()
    os.environ["BASTION_CONFIG"] = str(settings.config_file.resolve())
    os.environ["BASTION_STATE_DIR"] = str(settings.state_dir.resolve())
    os.environ["BASTION_PUBLIC_URL"] = settings.public_url
    uvicorn.run(
        "bastion.cli.server:gateway_app",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        log_config=log_config(log_level),
        access_log=False,
        server_header=False,
        proxy_headers=False,
    )


def gateway_app() -> ASGIApp:
    """The app factory each ``serve --workers`` child calls: a cluster gateway, configured
    from the environment its parent prepared."""
    from bastion.app import create_app

    return create_app(Settings.from_env(), role="gateway")

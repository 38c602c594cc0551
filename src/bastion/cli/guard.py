"""``bastion guard``: run the assertion-checking reverse proxy beside a model server."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import typer

from bastion.errors import BadRequest

if TYPE_CHECKING:  # the guard's HTTP stack loads only when the command runs
    from bastion.guard import AssertionVerifier, GuardKeys

MIB = 1024 * 1024


def register(app: typer.Typer) -> None:
    @app.command()
    def guard(
        upstream: str = typer.Option(
            ..., help="the model server's base URL, e.g. http://127.0.0.1:8081"
        ),
        listen: str = typer.Option("127.0.0.1:8082", help="HOST:PORT to listen on"),
        audience: list[str] = typer.Option(
            ...,
            help="an aud this guard accepts: the upstream's assertion_audience, else its "
            "base_url in bastion.yaml (repeat for several)",
        ),
        jwks_url: str | None = typer.Option(
            None, help="Bastion's JWKS, e.g. https://bastion.example.com/.well-known/jwks.json"
        ),
        jwks_file: Path | None = typer.Option(
            None, help="Bastion's JWKS saved in a file (instead of --jwks-url)"
        ),
        issuer: str | None = typer.Option(
            None, help="Bastion's URL (default: --jwks-url without /.well-known/jwks.json)"
        ),
        open_path: list[str] = typer.Option(
            [], help="a path GET/HEAD may reach without an assertion, e.g. /healthz (repeat)"
        ),
        max_body_mib: int = typer.Option(8, min=1, max=1024, help="largest request body, MiB"),
        timeout: float = typer.Option(
            300.0, min=1.0, help="seconds to wait for the model server's next bytes"
        ),
        log_level: str = typer.Option("info", help="debug, info, warning or error"),
    ) -> None:
        """Refuse every request to a model server that Bastion did not sign (see docs/guard.md)."""
        import logging.config

        import uvicorn

        from bastion.guard import GuardMiddleware
        from bastion.guard.proxy import GuardProxy
        from bastion.logs import log_config

        if log_level not in ("debug", "info", "warning", "error"):
            raise BadRequest("--log-level must be debug, info, warning or error")
        host, port = _listen(listen)
        _check_upstream(upstream)
        keys = _keys(jwks_url, jwks_file)
        verifier = _verifier(keys, _issuer(issuer, jwks_url), audience)
        proxy = GuardProxy(upstream, read_timeout=timeout)
        app = GuardMiddleware(
            proxy, verifier, max_body_bytes=max_body_mib * MIB, open_paths=tuple(open_path)
        )
        logging.config.dictConfig(log_config(log_level))
        logging.getLogger("bastion.guard").info(
            "guarding %s on %s:%d (keys: %s)", upstream, host, port, keys.source
        )
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_config=log_config(log_level),
            access_log=False,
            server_header=False,
            proxy_headers=False,
        )


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise BadRequest("--listen must be HOST:PORT, e.g. 127.0.0.1:8082 or [::1]:8082")
    return host, int(port)


def _check_upstream(url: str) -> None:
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        raise BadRequest("--upstream is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest("--upstream must be an http(s) URL with a host")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise BadRequest("--upstream must not have a query, fragment or credentials")


def _issuer(issuer: str | None, jwks_url: str | None) -> str:
    from bastion.guard.middleware import issuer_of

    if issuer is not None:
        return issuer.rstrip("/")
    if jwks_url is None:
        raise BadRequest("--jwks-file needs --issuer (Bastion's URL, the assertions' iss)")
    try:
        return issuer_of(jwks_url)
    except ValueError as exc:
        raise BadRequest(f"{exc}: give --issuer") from None


def _verifier(keys: GuardKeys, issuer: str, audiences: list[str]) -> AssertionVerifier:
    from bastion.guard import AssertionVerifier

    if not issuer or not all(audiences):
        raise BadRequest("--issuer and every --audience must be non-empty")
    return AssertionVerifier(keys, issuer=issuer, audiences=tuple(audiences))


def _keys(jwks_url: str | None, jwks_file: Path | None) -> GuardKeys:
    from bastion.guard import GuardKeys

    if (jwks_url is None) == (jwks_file is None):
        raise BadRequest("give exactly one of --jwks-url and --jwks-file")
    if jwks_file is not None and not jwks_file.is_file():
        raise BadRequest(f"--jwks-file {jwks_file} is not a file")
    try:
        return GuardKeys(url=jwks_url, file=jwks_file)
    except ValueError as exc:
        raise BadRequest(f"--jwks-url {exc}") from None

"""``bastion console``: open the web console.

``bastion console login`` proves the device key of a profile (a DPoP-bound token, exactly as an
SDK call does) to ``POST /console/login-links`` and prints the one-time sign-in link it gets:
good for two minutes and one use. The code is in the link's fragment (after ``#``), which the
browser never sends to a server.
"""

from __future__ import annotations

import httpx
import typer
from rich.console import Console

from bastion.client import httpx_client
from bastion.client.profile import load_profile
from bastion.errors import AccessDenied, BadRequest, Unavailable

out = Console(soft_wrap=True, markup=False, highlight=False)


def _refusal(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", {})
        return str(error.get("message", ""))[:300] if isinstance(error, dict) else ""
    except ValueError:
        return ""


def register(app: typer.Typer) -> None:
    console_app = typer.Typer(help="The web console.", no_args_is_help=True)
    app.add_typer(console_app, name="console")

    @console_app.command("login")
    def login(
        profile: str = typer.Option("default", help="the profile (device key) to sign in with"),
    ) -> None:
        """Print a one-time link that signs you in to the console (valid 2 minutes, once)."""
        chosen = load_profile(profile)
        url = chosen.server.rstrip("/") + "/console/login-links"
        try:
            with httpx_client(chosen, timeout=15) as client:
                response = client.post(url)
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach {chosen.server}: {type(exc).__name__}") from None
        if response.status_code == 403:
            raise AccessDenied(f"the console refused {chosen.client_id}: {_refusal(response)}")
        if response.status_code != 200:
            detail = _refusal(response) or f"HTTP {response.status_code}"
            raise BadRequest(f"no login link ({response.status_code}): {detail}")
        body = response.json()
        path, expires = body.get("path"), body.get("expires_in")
        if not isinstance(path, str) or not path.startswith("/console/login#code="):
            raise Unavailable(f"{chosen.server} answered without a login link")
        out.print(f"Console sign-in link for {chosen.client_id}, valid {expires} s, once:")
        out.print(chosen.server.rstrip("/") + path)

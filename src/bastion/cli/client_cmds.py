"""``bastion login``: the caller's side — make a device key, enroll it, check it works."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import orjson
import typer
from rich.console import Console

from bastion.client import httpx_client
from bastion.client.profile import Profile, profile_path, save_profile
from bastion.errors import BadRequest
from bastion.identity.dpop import sign_proof
from bastion.identity.keys import generate_private_jwk, public_jwk, thumbprint

out = Console(soft_wrap=True, markup=False)  # prints names and paths the user typed


def _enroll(server: str, principal: str, code: str, private_jwk: dict[str, str]) -> None:
    url = server + "/oauth/enroll"
    proof = sign_proof(private_jwk, method="POST", url=url)
    try:
        response = httpx.post(
            url,
            json={"principal": principal, "code": code, "jwk": public_jwk(private_jwk)},
            headers={"DPoP": proof},
            timeout=15,
        )
    except httpx.HTTPError as exc:
        raise BadRequest(f"cannot reach {server}: {type(exc).__name__}") from None
    if response.status_code != 200:
        try:
            detail = response.json().get("error_description", response.text[:200])
        except ValueError:
            detail = response.text[:200]
        raise BadRequest(f"enrollment refused ({response.status_code}): {detail}")


def _is_base_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        return False


def register(app: typer.Typer) -> None:
    @app.command()
    def login(
        server: str = typer.Option(..., help="Bastion's URL, e.g. http://127.0.0.1:8080"),
        principal: str = typer.Option(..., help="your principal name"),
        code: str | None = typer.Option(None, help="one-time enrollment code from your admin"),
        profile: str = typer.Option("default", help="profile name to save the device key under"),
        alg: str = typer.Option("EdDSA", help="device key type: EdDSA (Ed25519) or ES256"),
        print_public_key: bool = typer.Option(
            False, "--print-public-key", help="no code: print the public key for an admin to enroll"
        ),
    ) -> None:
        """Create a device key (0600, in your config dir), enroll it, and test a token."""
        if alg not in ("EdDSA", "ES256"):
            raise BadRequest("--alg must be EdDSA or ES256")
        server = server.rstrip("/")
        if not _is_base_url(server):
            raise BadRequest(f"--server must be an http:// or https:// URL (got {server!r})")
        private = generate_private_jwk(alg)
        if code:
            _enroll(server, principal, code, private)
        elif not print_public_key:
            raise BadRequest("give --code CODE, or --print-public-key for direct enrollment")
        saved = Profile(server=server, client_id=principal, private_jwk=private, name=profile)
        save_profile(saved)
        out.print(f"device key {thumbprint(public_jwk(private))} saved to {profile_path(profile)}")
        if not code:
            out.print("ask an admin to run: bastion key enroll " + principal + " KEY.json")
            out.print(orjson.dumps(public_jwk(private)).decode(), markup=False, highlight=False)
            return
        with httpx_client(profile=profile) as client:
            response = client.get(server + "/v1/models")
        if response.status_code != 200:
            raise BadRequest(f"enrolled, but the first call failed ({response.status_code})")
        models = [m["id"] for m in response.json().get("data", [])]
        out.print(f"logged in as {principal}; models you may use: {', '.join(models) or 'none'}")

"""``bastion login``: the caller's side — make a device key, enroll it, check it works.

``--mfa`` logs in with a TOTP code as well (asked for, or ``--mfa-code``): with ``--code`` right
after enrolling the new key, otherwise with the existing profile's key. The profile then says the
login used MFA, and clients given an ``mfa`` code provider send a code with their first grant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from urllib.parse import urlsplit

import httpx
import orjson
import typer
from rich.console import Console

from bastion.client import httpx_client
from bastion.client.profile import Profile, load_profile, profile_path, save_profile
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


def _code_provider(mfa_code: str | None) -> Callable[[], str]:
    """The code given on the command line, or a prompt (never echoed back, never logged)."""
    if mfa_code is not None:
        return lambda: mfa_code
    return lambda: str(typer.prompt("TOTP code from your authenticator app"))


def _first_call(profile: Profile, mfa: Callable[[], str] | None) -> list[str]:
    """Get a token (with MFA when ``mfa`` is given) and list the models; fails if refused."""
    with httpx_client(profile, mfa=mfa) as client:
        response = client.get(profile.server + "/v1/models")
    if response.status_code != 200:
        raise BadRequest(f"logged in, but the first call failed ({response.status_code})")
    return [m["id"] for m in response.json().get("data", [])]


def _mfa_login(server: str, principal: str, name: str, mfa_code: str | None) -> None:
    """Log in again with MFA using the device key already saved in profile ``name``."""
    current = load_profile(name)
    if (current.server, current.client_id) != (server, principal):
        raise BadRequest(
            f"profile {name!r} is {current.client_id} at {current.server}: give the same "
            "--server and --principal, or --code to enroll a new device key"
        )
    stepped = replace(current, mfa=True)
    models = _first_call(stepped, _code_provider(mfa_code))
    save_profile(stepped)
    _logged_in(principal, models, mfa=True)


def _logged_in(principal: str, models: list[str], *, mfa: bool) -> None:
    how = " with MFA" if mfa else ""
    out.print(f"logged in as {principal}{how}; models you may use: {', '.join(models) or 'none'}")


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
        mfa: bool = typer.Option(
            False, "--mfa", help="log in with a TOTP code too (without --code: the profile's key)"
        ),
        mfa_code: str | None = typer.Option(
            None, "--mfa-code", help="the TOTP code, instead of being asked for it (implies --mfa)"
        ),
    ) -> None:
        """Create a device key (0600, in your config dir), enroll it, and test a token."""
        mfa = mfa or mfa_code is not None
        if mfa and print_public_key:
            raise BadRequest("--mfa needs an enrolled device key: use it with --code, or later")
        if alg not in ("EdDSA", "ES256"):
            raise BadRequest("--alg must be EdDSA or ES256")
        server = server.rstrip("/")
        if not _is_base_url(server):
            raise BadRequest(f"--server must be an http:// or https:// URL (got {server!r})")
        if mfa and not code:
            _mfa_login(server, principal, profile, mfa_code)
            return
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
        if mfa:
            saved = replace(saved, mfa=True)
        models = _first_call(saved, _code_provider(mfa_code) if mfa else None)
        if mfa:
            save_profile(saved)
        _logged_in(principal, models, mfa=mfa)

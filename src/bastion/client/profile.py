"""Device profiles: which Bastion server to use, as whom, and with which device key.

A profile is one JSON file, ``<config dir>/profiles/<name>.json`` (the config dir is
``platformdirs.user_config_dir("bastion")`` unless ``BASTION_CLIENT_DIR`` says otherwise), written
by ``bastion login`` with mode 0600 because it holds the device's private key. A profile file that
group or others can read is refused, like ``ssh`` refuses such a key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import platformdirs

from bastion.errors import BadRequest, ConfigError, NotFound
from bastion.identity.keys import load_private_key, read_private_file, write_private_file

ENV_DIR = "BASTION_CLIENT_DIR"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class Profile:
    """A server base URL, the principal's name (``client_id``) and the device's private key;
    ``mfa`` when ``bastion login --mfa`` logged in with a TOTP code (clients given an ``mfa``
    provider then send a code with their first grant)."""

    server: str
    client_id: str
    private_jwk: dict[str, str] = field(repr=False)
    name: str = "default"
    mfa: bool = False

    @property
    def token_endpoint(self) -> str:
        return self.server.rstrip("/") + "/oauth/token"


def client_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where profiles live: ``$BASTION_CLIENT_DIR`` or the user's config directory."""
    env = os.environ if env is None else env
    if env.get(ENV_DIR):
        return Path(env[ENV_DIR])
    return Path(platformdirs.user_config_dir("bastion"))


def profile_path(name: str = "default", env: Mapping[str, str] | None = None) -> Path:
    """The file of profile ``name``; the name must be a plain file name (no path tricks)."""
    if not _NAME.fullmatch(name):
        raise BadRequest(
            f"profile name {name!r} is invalid: use letters, digits, '.', '_' and '-' (max 64)"
        )
    return client_dir(env) / "profiles" / f"{name}.json"


def save_profile(profile: Profile, env: Mapping[str, str] | None = None) -> Path:
    """Write ``profile`` (mode 0600, replacing any previous one of that name); returns its path."""
    path = profile_path(profile.name, env)
    _check(profile, path)
    data: dict[str, object] = {
        "server": profile.server,
        "client_id": profile.client_id,
        "private_jwk": profile.private_jwk,
    }
    if profile.mfa:
        data["mfa"] = True
    write_private_file(path, orjson.dumps(data, option=orjson.OPT_INDENT_2))
    return path


def load_profile(name: str = "default", env: Mapping[str, str] | None = None) -> Profile:
    """Read profile ``name``: ``NotFound`` if there is none, ``ConfigError`` if it is unusable."""
    path = profile_path(name, env)
    try:
        raw = read_private_file(path)
    except FileNotFoundError:
        raise NotFound(f"no Bastion profile {name!r} at {path}: run `bastion login`") from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ConfigError(str(path), ["is not valid JSON"]) from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), ["must be a JSON object"])
    profile = Profile(
        server=_string(data, "server", path),
        client_id=_string(data, "client_id", path),
        private_jwk=_jwk(data, path),
        name=name,
        mfa=_flag(data, "mfa", path),
    )
    _check(profile, path)
    return profile


def _string(data: dict[str, Any], key: str, path: Path) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(str(path), [f"{key}: missing or not a string"])
    return value


def _flag(data: dict[str, Any], key: str, path: Path) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(str(path), [f"{key}: must be true or false"])
    return value


def _jwk(data: dict[str, Any], path: Path) -> dict[str, str]:
    jwk = data.get("private_jwk")
    if not isinstance(jwk, dict) or not all(isinstance(v, str) for v in jwk.values()):
        raise ConfigError(str(path), ["private_jwk: missing or not a JWK object"])
    return jwk


def _check(profile: Profile, path: Path) -> None:
    """The server must be an http(s) base URL and the key a usable private device key."""
    server = urlsplit(profile.server)
    if server.scheme not in ("http", "https") or not server.hostname:
        raise ConfigError(str(path), ["server: must be an http:// or https:// URL"])
    if server.query or server.fragment:
        raise ConfigError(str(path), ["server: must be a base URL without query or fragment"])
    if not profile.client_id:
        raise ConfigError(str(path), ["client_id: must not be empty"])
    try:
        load_private_key(profile.private_jwk)
    except ValueError as exc:
        raise ConfigError(str(path), [f"private_jwk: {exc}"]) from None

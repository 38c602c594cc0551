"""Bastion's one settings object: process-level knobs from ``BASTION_*`` environment variables.

What the gateway protects (upstreams, models, compartments, orgs, principals) lives in
``bastion.yaml`` (see ``bastion.config``); this object only says where things are and how the
process runs. It is frozen, and its ``repr`` never shows a secret (database passwords included).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import sqlalchemy as sa

from bastion.errors import ConfigError

DEFAULT_STATE_DIR = ".bastion"
DEFAULT_CONFIG_FILE = "bastion.yaml"


def _redact_url(url: str) -> str:
    """A database URL fit for a log line: password hidden, query (which may hold one) elided."""
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        scheme, sep, rest = url.partition("://")
        if not sep or "@" not in rest:
            return "<unparseable database URL>"
        creds, _, host = rest.rpartition("@")
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host.split('?', 1)[0]}"
    shown = parsed.set(query={}).render_as_string(hide_password=True)
    return shown + ("?***" if parsed.query else "")


@dataclass(frozen=True, slots=True)
class Settings:
    """Where Bastion keeps its state and how it serves. Build with :meth:`from_env`."""

    state_dir: Path = Path(DEFAULT_STATE_DIR)
    config_file: Path = Path(DEFAULT_CONFIG_FILE)
    database_url: str = field(default="", repr=False)
    # Cluster mode: Redis for fan-out, the DPoP replay cache and shared counters ("" = embedded).
    redis_url: str = field(default="", repr=False)
    # Every Redis key starts "<prefix>:", so several deployments can share one Redis.
    redis_prefix: str = "bastion"
    public_url: str = ""
    trusted_proxies: tuple[str, ...] = ()
    access_token_ttl: int = 600
    refresh_token_ttl: int = 8 * 3600
    dpop_max_age: int = 60
    dpop_clock_skew: int = 5
    state_poll_interval: float = 0.25
    audit_linger: float = 0.01
    checkpoint_interval: float = 2.0
    integrity_interval: float = 0.25  # seconds between the audit integrity watch's passes

    def __repr__(self) -> str:  # secrets never reach a log line
        return (
            f"Settings(state_dir={str(self.state_dir)!r}, config_file={str(self.config_file)!r}, "
            f"database_url={_redact_url(self.resolved_database_url)!r}, "
            f"redis_url={_redact_url(self.redis_url) if self.redis_url else ''!r}, "
            f"public_url={self.public_url!r})"
        )

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite inside the state directory."""
        return self.database_url or f"sqlite:///{(self.state_dir / 'bastion.db').resolve()}"

    @property
    def cluster(self) -> bool:
        """Cluster mode: PostgreSQL for state and the audit log, Redis for what is shared."""
        return bool(self.redis_url)

    @property
    def issuer_key_file(self) -> Path:
        return self.state_dir / "issuer.jwk"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read ``BASTION_*`` variables; explicit ``overrides`` (from CLI flags) win."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        if "BASTION_STATE_DIR" in env:
            values["state_dir"] = Path(env["BASTION_STATE_DIR"])
        if "BASTION_CONFIG" in env:
            values["config_file"] = Path(env["BASTION_CONFIG"])
        if "BASTION_DATABASE_URL" in env:
            values["database_url"] = env["BASTION_DATABASE_URL"]
        if "BASTION_REDIS_URL" in env:
            values["redis_url"] = _redis_url(env["BASTION_REDIS_URL"])
        if "BASTION_REDIS_PREFIX" in env:
            values["redis_prefix"] = _redis_prefix(env["BASTION_REDIS_PREFIX"])
        if "BASTION_PUBLIC_URL" in env:
            values["public_url"] = env["BASTION_PUBLIC_URL"].rstrip("/")
        if "BASTION_TRUSTED_PROXIES" in env:
            proxies = env["BASTION_TRUSTED_PROXIES"].split(",")
            values["trusted_proxies"] = tuple(p.strip() for p in proxies if p.strip())
        if "BASTION_AUDIT_LINGER_MS" in env:
            values["audit_linger"] = _int_env(env, "BASTION_AUDIT_LINGER_MS", 0, 1000) / 1000
        if "BASTION_CHECKPOINT_SECONDS" in env:
            values["checkpoint_interval"] = float(
                _int_env(env, "BASTION_CHECKPOINT_SECONDS", 1, 3600)
            )
        if "BASTION_INTEGRITY_INTERVAL" in env:
            values["integrity_interval"] = _float_env(env, "BASTION_INTEGRITY_INTERVAL", 0.1, 3600)
        if "BASTION_ACCESS_TOKEN_TTL" in env:
            values["access_token_ttl"] = _int_env(env, "BASTION_ACCESS_TOKEN_TTL", 30, 900)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **values)  # type: ignore[arg-type]


def _int_env(env: Mapping[str, str], name: str, low: int, high: int) -> int:
    raw = env[name]
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, [f"must be an integer, got {raw!r}"]) from None
    if not low <= value <= high:
        raise ConfigError(name, [f"must be between {low} and {high}, got {value}"])
    return value


def _redis_url(raw: str) -> str:
    """A redis:// or rediss:// URL; errors never echo it (it may hold a password)."""
    url = raw.strip()
    if not url.startswith(("redis://", "rediss://", "unix://")) or any(c.isspace() for c in url):
        raise ConfigError(
            "BASTION_REDIS_URL", ["must be a redis://, rediss:// or unix:// URL (not shown here)"]
        )
    return url


def _redis_prefix(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", raw):
        raise ConfigError("BASTION_REDIS_PREFIX", ["must be 1-64 letters, digits, '.', '_' or '-'"])
    return raw


def _float_env(env: Mapping[str, str], name: str, low: float, high: float) -> float:
    raw = env[name]
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, [f"must be a number of seconds, got {raw!r}"]) from None
    if not low <= value <= high:  # also refuses nan and inf
        raise ConfigError(name, [f"must be between {low:g} and {high:g}, got {raw!r}"])
    return value

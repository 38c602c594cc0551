"""The scalar types of ``bastion.yaml``: names, model names, environment-variable names, URLs,
header names, audiences and the version, each checked by a strict validator whose message says
what was expected and shows the value only when that is safe (never a key pasted as a name,
never a URL's credentials).
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, StrictInt, StrictStr

from .problems import describe

CONFIG_VERSION = 1
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9._/:-]{0,62}")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
_MAX_UPSTREAM_MODEL = 256
_MAX_URL = 2048


def _name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(
            "must be 1-63 lowercase letters, digits, '.', '_' or '-', starting with a letter "
            f"or digit (got {describe(value)})"
        )
    return value


def _model_name(value: str) -> str:
    if not _MODEL_NAME.fullmatch(value):
        raise ValueError(
            "must be 1-63 lowercase letters, digits, '.', '_', '-', '/' or ':', starting with a "
            f"letter or digit (got {describe(value)})"
        )
    return value


def _upstream_model(value: str) -> str:
    if not value or len(value) > _MAX_UPSTREAM_MODEL or any(c.isspace() for c in value):
        raise ValueError(
            f"must be 1-{_MAX_UPSTREAM_MODEL} characters without spaces (got {describe(value)})"
        )
    if not value.isprintable():
        raise ValueError("must not contain control characters")
    return value


def _env_name(value: str) -> str:
    # Never echo the value: the usual mistake here is pasting the key itself.
    if not _ENV_NAME.fullmatch(value):
        raise ValueError(
            "must be the NAME of an environment variable (capital letters, digits and '_', "
            "e.g. OPENAI_API_KEY) that holds the key, never the key itself"
        )
    return value


def _base_url(value: str) -> str:
    """An http(s) URL with a host and no query, fragment or credentials; trailing '/' dropped."""
    has_credentials = "@" in value.partition("://")[2].partition("/")[0]
    shown = "" if has_credentials else f" (got {describe(value)})"
    if len(value) > _MAX_URL or not value.isprintable() or any(c.isspace() for c in value):
        raise ValueError(f"must be a URL without spaces, at most {_MAX_URL} characters{shown}")
    try:
        parts = urlsplit(value)
        _ = parts.port  # parses the port, raising ValueError on a bad one
    except ValueError:
        raise ValueError(f"is not a valid URL{shown}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"must start with http:// or https://{shown}")
    if has_credentials:
        raise ValueError(
            "must not contain credentials (user:password@); name the key's environment "
            "variable in api_key_env instead"
        )
    if not parts.hostname:
        raise ValueError(f"must name a host{shown}")
    if "?" in value or "#" in value:
        raise ValueError(f"must not have a query (?...) or fragment (#...){shown}")
    return value.rstrip("/")


_HEADER = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
# Credentials, routing and framing stay Bastion's business, whatever the config says.
NEVER_FORWARDED = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "dpop",
        "cookie",
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
        "te",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "forwarded",
        "x-real-ip",
        "bastion-assertion",  # Bastion's own signed assertion (gateway/assertion.py)
    }
)


def _header_name(value: str) -> str:
    name = value.lower()
    if not _HEADER.fullmatch(name):
        raise ValueError(f"is not a header name (got {describe(value)})")
    if name in NEVER_FORWARDED:
        raise ValueError(f"{name!r} carries credentials or routing and is never forwarded")
    return name


def _audience(value: str) -> str:
    if not value or len(value) > _MAX_URL or not value.isprintable() or " " in value:
        raise ValueError(
            f"must be 1-{_MAX_URL} printable characters without spaces (got {describe(value)})"
        )
    return value


def _version(value: int) -> int:
    if value != CONFIG_VERSION:
        raise ValueError(
            f"unsupported version {describe(value)}: this Bastion reads version {CONFIG_VERSION}"
        )
    return value


def is_model_name(value: str) -> bool:
    return _MODEL_NAME.fullmatch(value) is not None


Name = Annotated[StrictStr, AfterValidator(_name)]
ModelName = Annotated[StrictStr, AfterValidator(_model_name)]
UpstreamModel = Annotated[StrictStr, AfterValidator(_upstream_model)]
EnvName = Annotated[StrictStr, AfterValidator(_env_name)]
BaseUrl = Annotated[StrictStr, AfterValidator(_base_url)]
HeaderName = Annotated[StrictStr, AfterValidator(_header_name)]
Audience = Annotated[StrictStr, AfterValidator(_audience)]
Version = Annotated[StrictInt, AfterValidator(_version)]
Seconds = Annotated[float, Field(strict=True, gt=0, le=3600)]
Description = Annotated[StrictStr, Field(max_length=1000)]

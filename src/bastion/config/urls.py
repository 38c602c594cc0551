"""Endpoint URLs in bastion.yaml that Bastion calls or trusts (identity providers, webhooks,
CAEP receivers): https, or plain http only on loopback; a host; no credentials or fragment.
Messages never repeat the value: such URLs can carry tokens in their path or query."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

MAX_URL = 2000


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def endpoint_url(value: str, *, allow_query: bool = False) -> str:
    """``value`` if it is an acceptable endpoint URL; ``ValueError`` saying what is wrong."""
    if len(value) > MAX_URL or not value.isprintable() or any(c.isspace() for c in value):
        raise ValueError(f"must be a URL without spaces, at most {MAX_URL} characters")
    try:
        parts = urlsplit(value)
        _ = parts.port
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if "@" in parts.netloc:
        raise ValueError("must not contain credentials (user:password@)")
    if not parts.hostname:
        raise ValueError("must name a host")
    if parts.fragment:
        raise ValueError("must not have a fragment (#...)")
    if parts.query and not allow_query:
        raise ValueError("must not have a query (?...)")
    if parts.scheme == "http" and _loopback(parts.hostname):
        return value
    if parts.scheme != "https":
        raise ValueError("must start with https:// (http:// only on loopback)")
    return value

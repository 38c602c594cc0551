"""The caller's source address: the socket peer, or the client named by trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

from bastion.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    """Trusted proxy ranges (``BASTION_TRUSTED_PROXIES``); a bad entry is a config error."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ConfigError(
                "BASTION_TRUSTED_PROXIES", [f"{value.strip()[:60]!r} is not an address or CIDR"]
            ) from None
    return tuple(networks)


@lru_cache(maxsize=4096)
def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
    return address


def _trusted(value: str, proxies: tuple[Network, ...]) -> bool:
    address = _address(value)
    return address is not None and any(address in net for net in proxies)


def source_ip(peer: str, forwarded_for: str | None, proxies: tuple[Network, ...]) -> str:
    """The peer address, unless the peer is a trusted proxy: then the right-most address in
    ``X-Forwarded-For`` that is not itself a trusted proxy (the left part is client-controlled)."""
    if not proxies or not forwarded_for or not _trusted(peer, proxies):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",")][-32:]  # proxies append at the end
    for hop in reversed(hops):
        if _address(hop) is None:
            return peer  # a garbled header names nobody; keep the socket peer
        if not _trusted(hop, proxies):
            return hop
    return peer

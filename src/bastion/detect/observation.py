"""What the detectors see: one flat, typed view of an audit event.

Built from the event's stored record (the canonical JSON the Merkle log commits to), so the
detectors run on exactly what the audit log holds, in the log's order, with the event's own time.
Fields a kind of event does not have are empty. Nothing here is request content: the content
signal is a label and a score computed at the gateway.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

USE_TOKEN_EVENTS = frozenset({"token.issued", "token.refreshed", "token.exchanged"})


def network_of(address: str) -> str:
    """The /24 (IPv4) or /48 (IPv6) holding ``address``: the unit of "the same network"."""
    parts = address.split(".")
    if len(parts) == 4:  # the common case, without ipaddress's parsing cost
        if all(part.isdigit() and len(part) <= 3 and int(part) <= 255 for part in parts):
            return f"{int(parts[0])}.{int(parts[1])}.{int(parts[2])}.0/24"
        return ""
    return _network_v6(address)


@lru_cache(maxsize=65536)
def _network_v6(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ""
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def _str(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    return value if isinstance(value, str) else ""


def _int(record: Mapping[str, Any], key: str) -> int:
    value = record.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _strings(record: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = record.get(key)
    if not isinstance(value, list | tuple):
        return ()
    return tuple(item for item in value if isinstance(item, str))


@dataclass(frozen=True, slots=True)
class Observation:
    """One event as the detectors see it. ``name`` is the audit event name (``request.decided``,
    ``token.issued``, ``access.approved``, ...)."""

    idx: int  # position in the audit log (-1 when not from the log)
    id: str
    name: str
    time: float
    actor: str = ""
    principal: str = ""
    org: str = ""
    act: tuple[str, ...] = ()
    model: str = ""
    compartment: str = ""
    allowed: bool = False
    reasons: tuple[str, ...] = ()
    source_ip: str = ""
    network: str = ""
    jkt: str = ""
    family: str = ""
    status: int = 0
    outcome: str = ""
    route: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    client: str = ""  # the caller's user agent (client tooling fingerprint), truncated
    content_label: str = ""  # content category from the gateway's classifier (never the prompt)
    content_score: float = 0.0
    refused: bool = False  # the upstream declined to answer (a refusal), from the gateway
    asn: int = 0
    country: str = ""
    origin: str = ""  # "anonymizer" | "hosting" | "" from the IP intelligence database
    action: str = ""  # admin and token events: what was done
    target_type: str = ""
    target: str = ""
    error: str = ""
    reason: str = ""  # token and admin events: why (e.g. "principal 'vic' is dormant")

    @property
    def is_request(self) -> bool:
        return self.name == "request.decided"

    @property
    def is_use(self) -> bool:
        """The credentials were used with success: an allowed request, or a token issued,
        refreshed or exchanged (denials and refusals are not uses)."""
        if self.name == "request.decided":
            return self.allowed
        return self.name in USE_TOKEN_EVENTS

    @property
    def holder(self) -> str:
        """Who made the call and holds the device key: the actor of a delegated token
        (RFC 8693), else the principal."""
        return self.act[0] if self.act else self.principal

    @classmethod
    def from_record(cls, record: Mapping[str, Any], idx: int = -1) -> Observation:
        """An observation of a stored event record; unknown or missing fields stay empty
        (this runs for every audit event, so it is written for speed)."""
        get = record.get
        fields: dict[str, Any] = {
            key: value if type(value) is str else ""
            for key in _STRING_FIELDS
            for value in (get(key),)
        }
        for key in _INT_FIELDS:
            value = get(key)
            fields[key] = value if type(value) is int else 0
        detail = get("detail")
        if type(detail) is dict:  # admin events keep their specifics here (grants: compartment)
            for key in ("compartment", "principal"):
                if not fields[key] and type(detail.get(key)) is str:
                    fields[key] = detail[key]
        time = get("time")
        score = get("content_score")
        source_ip = fields["source_ip"]
        return cls(
            idx=idx,
            time=float(time) if isinstance(time, int | float) else 0.0,
            act=_strings(record, "act"),
            allowed=get("allowed") is True,
            reasons=_strings(record, "reasons"),
            network=network_of(source_ip) if source_ip else "",
            content_score=float(score) if isinstance(score, int | float) else 0.0,
            refused=get("refused") is True,
            **{
                **fields,
                "client": fields["client"][:200],
                "action": fields["action"] or fields["name"],
            },
        )


_STRING_FIELDS = (
    "id",
    "name",
    "actor",
    "principal",
    "org",
    "model",
    "compartment",
    "source_ip",
    "jkt",
    "family",
    "outcome",
    "route",
    "client",
    "content_label",
    "country",
    "origin",
    "action",
    "target_type",
    "target",
    "error",
    "reason",
)
_INT_FIELDS = ("status", "tokens_in", "tokens_out", "asn")

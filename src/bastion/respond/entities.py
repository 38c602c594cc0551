"""What a finding implicates: the principals, orgs, token families, device keys and source
networks that response actions target and incidents group on.

A finding names one entity (a principal, a token family, an org...); its evidence events name
the rest (the family and device key a request came with, the network it came from). Networks
are the /24 (IPv4) or /64 (IPv6) of a source address: narrow enough to lock, wide enough to
catch the next address a NAT hands out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa

from bastion.detect.findings import Finding
from bastion.store import events as event_rows

KINDS = ("principals", "orgs", "families", "keys", "networks")
MAX_EACH = 50  # a finding's evidence is bounded; so is what it implicates


@dataclass(frozen=True, slots=True)
class Implicated:
    principals: frozenset[str] = field(default_factory=frozenset)
    orgs: frozenset[str] = field(default_factory=frozenset)
    families: frozenset[str] = field(default_factory=frozenset)
    keys: frozenset[str] = field(default_factory=frozenset)
    networks: frozenset[str] = field(default_factory=frozenset)
    # Compartments the evidence touched: playbooks match on them; incidents do not group by them.
    compartments: frozenset[str] = field(default_factory=frozenset)

    def __or__(self, other: Implicated) -> Implicated:
        return Implicated(
            **{kind: getattr(self, kind) | getattr(other, kind) for kind in KINDS},
            compartments=self.compartments | other.compartments,
        )

    def keys_of(self) -> set[tuple[str, str]]:
        """(kind, value) pairs: two incidents sharing any of them are about the same thing."""
        return {(kind, value) for kind in KINDS for value in getattr(self, kind)}

    def overlaps(self, other: Implicated, *, orgs: bool = False, networks: bool = False) -> bool:
        """Whether both name the same principal, token family or device key — or org or
        network, if asked: only findings about an org (D7, D12) group by org and only findings
        about a network by network. Otherwise every incident of a vendor, or of everyone
        working at one office, would merge into one."""
        skip = {kind for kind, wanted in (("orgs", orgs), ("networks", networks)) if not wanted}
        mine = {pair for pair in self.keys_of() if pair[0] not in skip}
        return not mine.isdisjoint(other.keys_of())

    def as_dict(self) -> dict[str, list[str]]:
        return {kind: sorted(getattr(self, kind)) for kind in KINDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Implicated:
        return cls(
            **{
                kind: frozenset(str(v) for v in data.get(kind, ()) if isinstance(v, str))
                for kind in KINDS
            }
        )


def network_of(address: str) -> str:
    """The /24 (IPv4) or /64 (IPv6) around an address; "" for anything else."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ""
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def implicated(conn: sa.Connection, finding: Finding) -> Implicated:
    """The entities a finding and its evidence events name."""
    found: dict[str, set[str]] = {kind: set() for kind in (*KINDS, "compartments")}
    _add(found, "principals", finding.principal)
    _add(found, "orgs", finding.org)
    by_type = {"principal": "principals", "org": "orgs", "family": "families", "key": "keys"}
    if finding.entity_type in by_type:
        _add(found, by_type[finding.entity_type], finding.entity)
    elif finding.entity_type == "network":
        _add(found, "networks", network_of(finding.entity.split("/")[0]) or finding.entity)
    for record in _evidence(conn, finding.evidence):
        _add(found, "principals", record.get("principal"))
        _add(found, "families", record.get("family"))
        _add(found, "keys", record.get("jkt"))
        _add(found, "compartments", record.get("compartment"))
        source = record.get("source_ip")
        _add(found, "networks", network_of(source) if isinstance(source, str) else None)
    return Implicated(**{kind: frozenset(sorted(v)[:MAX_EACH]) for kind, v in found.items()})


def _add(found: dict[str, set[str]], kind: str, value: object) -> None:
    if isinstance(value, str) and value and len(found[kind]) < MAX_EACH:
        found[kind].add(value)


def _evidence(conn: sa.Connection, ids: Iterable[str]) -> list[dict[str, Any]]:
    records = []
    for event_id in list(ids)[:MAX_EACH]:
        row = event_rows.by_id(conn, event_id)
        if row is None:
            continue
        try:
            record = orjson.loads(row.body)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records

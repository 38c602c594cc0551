"""D1: a new environment for a principal (T1078.004, T1199, AML.T0012).

Per principal (the holder of the device key: the actor of a delegated token), first-seen sets
with a TTL of the environment's dimensions: device key (``jkt``), network (the ASN when the IP
database gives one, else the /24 or /48), country, and client tool (the user agent without its
version, see D15). Only uses count: allowed requests and tokens issued, refreshed or exchanged.
Token events carry no ASN, country or client: they are judged on what they have but teach
nothing (the request that follows is judged in full), and for a principal whose requests carry
ASNs their /24 is not judged.

Nothing fires before the principal has a baseline (``baseline_events`` over ``baseline_span``
seconds; restarted after ``ttl`` of silence). After that, what changed at once decides:

==========================================  ==========  ==========================================
new dimensions                              severity    typical cause
==========================================  ==========  ==========================================
device key + network and/or country         HIGH        credential and key used from elsewhere
device key + client tool                    LOW         a new machine with other tooling
device key alone, enrollment never seen     LOW         a key this detector never saw enrolled
network + country + client tool             MEDIUM      known device, everything else new
network or country, + client tool           LOW         known device, new place, new tool
anything else (one dimension; travel)       none        VPN egress, home/office, a trip, upgrade
==========================================  ==========  ==========================================

A device key enrolled (``key.enrolled``) at least ``enrolled_grace`` seconds before its first
use is not new: a user's second laptop enrolled long ago starts quietly. A new /24 inside an ASN
the principal already uses is not a network change (VPN egress moves). Single-dimension
changes are left to the detections made for them (D2 token family moved, D3 impossible travel,
D11 anonymizers, D15 tooling).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar

from ..detector import Context, StatefulDetector, Structure
from ..findings import Draft, Severity
from ..observation import Observation
from ..state import Activity, FirstSeen, Table
from .d15_client_fingerprint import tool_of

DAY = 86_400.0
KEY, NETWORK, COUNTRY, TOOL = "device key", "network", "country", "client tool"


@dataclass(frozen=True, slots=True)
class Change:
    dimension: str
    text: str


def _ago(seconds: float) -> str:
    if seconds < 3600:
        return f"{max(int(seconds // 60), 0)} min"
    if seconds < 2 * DAY:
        return f"{int(seconds // 3600)} h"
    return f"{int(seconds // DAY)} days"


class NewEnvironment(StatefulDetector):
    id: ClassVar[str] = "D1"
    title: ClassVar[str] = "New environment for a principal"
    techniques: ClassVar[tuple[str, ...]] = ("T1078.004", "T1199", "AML.T0012")
    window: ClassVar[float] = 6 * 3600.0

    def __init__(
        self,
        *,
        ttl: float = 30 * DAY,
        baseline_events: int = 20,
        baseline_span: float = DAY,
        enrolled_grace: float = DAY,
        cap_principals: int = 20_000,
        cap_keys: int = 50_000,
        values_per_principal: int = 64,
    ) -> None:
        self.enrolled_grace = enrolled_grace
        self.activity = Activity(cap_principals, baseline_events, baseline_span, ttl)
        self.seen = FirstSeen(ttl, cap_principals, values_per_principal)
        self.enrolled: Table[float] = Table(cap_keys, shape=lambda at: isinstance(at, int | float))

    def structures(self) -> Mapping[str, Structure]:
        return {"activity": self.activity, "seen": self.seen, "enrolled": self.enrolled}

    def observe(self, obs: Observation, ctx: Context) -> list[Draft]:
        if obs.name == "key.enrolled":
            if obs.target:
                self.enrolled.put(obs.target, obs.time)
            return []
        holder = obs.holder
        if not holder or not obs.is_use:
            return []
        established = self.activity.record(holder, obs.time)
        changes = self._changes(holder, obs)  # learn every dimension, whatever happens next
        baseline = self.activity.of(holder) if established and changes else None
        if baseline is None:
            return []
        graded = self._grade(changes, obs.jkt in self.enrolled)
        if graded is None:
            return []
        severity, confidence = graded
        since = datetime.fromtimestamp(baseline[0], UTC).strftime("%Y-%m-%d")
        return [
            Draft(
                detection=self.id,
                severity=severity,
                confidence=confidence,
                entity_type="principal",
                entity=holder,
                explanation=(
                    f"{holder} used a new environment ({obs.name}): "
                    + "; ".join(f"new {c.dimension} {c.text}" for c in changes)
                    + f"; baseline of {baseline[1] - 1} earlier uses since {since}"
                ),
                evidence=(obs.id,),
                techniques=self.techniques,
                principal=holder,
                org=obs.org or ctx.org_of(holder),
            )
        ]

    def _changes(self, holder: str, obs: Observation) -> list[Change]:
        key = "k:" + obs.jkt if obs.jkt else ""
        network = "n:" + obs.network if obs.network else ""
        asn = f"a:{obs.asn}" if obs.asn else ""
        country = "c:" + obs.country.upper() if obs.country else ""
        tool = tool_of(obs.client) if obs.client else ""
        tool = "t:" + tool if tool else ""
        values = [value for value in (key, network, asn, country, tool) if value]
        if obs.is_request:
            new = self.seen.novel(holder, values, obs.time)
        else:  # token events carry no ASN, country or tool: judged, but they teach nothing
            known = self.seen.values(holder, obs.time - self.seen.ttl)
            new = {value for value in values if value not in known}
        if not new:
            return []
        changes: list[Change] = []
        if key in new:
            enrolled = self.enrolled.get(obs.jkt)
            if enrolled is None or obs.time - enrolled < self.enrolled_grace:
                note = "" if enrolled is None else f", enrolled {_ago(obs.time - enrolled)} ago"
                changes.append(Change(KEY, f"{obs.jkt[:12]}…{note}"))
        if asn:  # a new /24 inside a known ASN is not a new network (VPN egress moves)
            if asn in new:
                changes.append(Change(NETWORK, f"AS{obs.asn} ({obs.network or obs.source_ip})"))
        elif network in new and not self._knows_asns(holder, obs.time):
            changes.append(Change(NETWORK, obs.network))
        if country in new:
            changes.append(Change(COUNTRY, country[2:]))
        if tool in new:
            changes.append(Change(TOOL, tool[2:]))
        return changes

    def _knows_asns(self, holder: str, time: float) -> bool:
        """Whether ``holder``'s recent uses carried ASNs: then an event without one (token
        events never carry one) cannot tell a new network from a known ASN's new /24."""
        recent = self.seen.values(holder, time - self.seen.ttl)
        return any(value.startswith("a:") for value in recent)

    @staticmethod
    def _grade(changes: list[Change], enrollment_seen: bool) -> tuple[Severity, float] | None:
        dimensions = {change.dimension for change in changes}
        if KEY in dimensions:
            others = dimensions - {KEY}
            if others & {NETWORK, COUNTRY}:
                return Severity.HIGH, min(0.6 + 0.1 * len(others), 0.9)
            if others:
                return Severity.LOW, 0.4
            return None if enrollment_seen else (Severity.LOW, 0.3)
        if len(dimensions) >= 3:
            return Severity.MEDIUM, 0.6
        if len(dimensions) == 2 and TOOL in dimensions:
            return Severity.LOW, 0.4
        return None

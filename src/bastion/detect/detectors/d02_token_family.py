"""D2: a token family seen from a second network (or its refresh token reused / presented with
another device key) — the signature of a stolen token and key replayed elsewhere (T1).

A family is one login on one device key. Seeing it from a second /24 while the first is still
active (within ``concurrent`` seconds) is two places at once: high. A move to another ASN after a
quiet gap is medium (a laptop changing networks usually stays within one provider, or logs in
again). A move within the same ASN (VPN egress rotation) is not a finding. The token service's
``token.family_revoked`` (rotated refresh token reused, or presented with another key) is
critical. Inline, the gateway's ``family_moved`` fact (``detect/inline.py``) denies critical
models at once; this detector raises the finding and the risk.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from ..detector import Context, StatefulDetector, Structure
from ..findings import Draft, Severity
from ..observation import Observation
from ..state import LRU, Stats

TECHNIQUES = ("T1550.001", "T1528", "AML.T0091.000")
_FAMILY_USES = frozenset({"request.decided", "token.refreshed"})


class _Seen:
    """Per family: network -> (asn, last use)."""

    def __init__(self, cap: int = 8) -> None:
        self.cap = cap
        self.networks: dict[str, tuple[int, float]] = {}

    def dump(self) -> dict[str, list[float]]:
        return {network: [asn, at] for network, (asn, at) in self.networks.items()}


class _Families:
    def __init__(self, cap: int) -> None:
        self.stats = Stats()
        self.lru: LRU[str, _Seen] = LRU(cap, self.stats)

    def __len__(self) -> int:
        return len(self.lru)

    def dump(self) -> dict[str, dict[str, list[float]]]:
        return {family: seen.dump() for family, seen in self.lru.items()}

    def load(self, data: dict[str, dict[str, list[float]]]) -> None:
        for family, networks in data.items():
            seen = _Seen()
            seen.networks = {n: (int(v[0]), float(v[1])) for n, v in networks.items()}
            self.lru.put(family, seen)


class TokenFamilyMoved(StatefulDetector):
    id: ClassVar[str] = "D2"
    title: ClassVar[str] = "token family seen from a second network or device"
    techniques: ClassVar[tuple[str, ...]] = TECHNIQUES
    window: ClassVar[float] = 3600.0

    def __init__(self, concurrent: float = 600.0, cap: int = 200_000) -> None:
        self.concurrent = concurrent
        self._families = _Families(cap)

    def structures(self) -> Mapping[str, Structure]:
        return {"families": self._families}

    def observe(self, obs: Observation, ctx: Context) -> list[Draft]:
        if obs.name == "token.family_revoked":
            return [self._revoked(obs, ctx)]
        if not obs.family or not obs.network or obs.name not in _FAMILY_USES:
            return []
        seen = self._families.lru.get(obs.family)
        if seen is not None and obs.network in seen.networks:  # the usual case: same place
            seen.networks[obs.network] = (obs.asn, obs.time)
            return []
        if seen is None:
            seen = _Seen()
            self._families.lru.put(obs.family, seen)
        draft = self._moved(obs, seen, ctx)
        seen.networks[obs.network] = (obs.asn, obs.time)
        if len(seen.networks) > seen.cap:
            del seen.networks[min(seen.networks, key=lambda n: seen.networks[n][1])]
        return [draft] if draft is not None else []

    def _moved(self, obs: Observation, seen: _Seen, ctx: Context) -> Draft | None:
        others = {n: v for n, v in seen.networks.items() if n != obs.network}
        if not others or obs.network in seen.networks:
            return None
        network, (asn, last) = max(others.items(), key=lambda item: item[1][1])
        gap = obs.time - last
        if gap <= self.concurrent:
            severity, confidence = Severity.HIGH, 0.9
        elif asn and obs.asn and asn != obs.asn:
            severity, confidence = Severity.MEDIUM, 0.5
        else:
            return None  # a later move within one provider (VPN egress, DHCP): not a finding
        return Draft(
            detection=self.id,
            severity=severity,
            confidence=confidence,
            entity_type="family",
            entity=obs.family,
            explanation=(
                f"token family {obs.family} of {obs.principal} used from {network} and "
                f"{obs.network} within {gap:.0f} s"
            ),
            evidence=(obs.id,),
            techniques=self.techniques,
            principal=obs.principal,
            org=obs.org or ctx.org_of(obs.principal),
        )

    def _revoked(self, obs: Observation, ctx: Context) -> Draft:
        return Draft(
            detection=self.id,
            severity=Severity.CRITICAL,
            confidence=0.95,
            entity_type="family",
            entity=obs.family or obs.principal,
            explanation=(
                f"token family {obs.family} of {obs.principal} revoked: "
                f"{obs.error or 'refresh token reuse'}"
            ),
            evidence=(obs.id,),
            techniques=self.techniques,
            principal=obs.principal,
            org=obs.org or ctx.org_of(obs.principal),
        )
